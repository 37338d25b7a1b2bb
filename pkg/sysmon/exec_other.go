//go:build !unix

package sysmon

import "errors"

// errUnsupported is what Reexec returns where the process cannot replace
// itself.
var errUnsupported = errors.New("replacing the process is not supported on this system")

// replaceProcess cannot replace the process here.
func replaceProcess(string, []string, []string) error {
	return errUnsupported
}
