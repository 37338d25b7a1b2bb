//go:build unix

package sysmon

import "syscall"

// replaceProcess replaces the process; it returns only on failure.
func replaceProcess(path string, args, env []string) error {
	return syscall.Exec(path, args, env)
}
