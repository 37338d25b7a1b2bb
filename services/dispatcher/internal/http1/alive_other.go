//go:build !unix

package http1

import "net"

// alive cannot peek on this platform: an idle connection is assumed usable.
func alive(net.Conn) bool { return true }
