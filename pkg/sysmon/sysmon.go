// Package sysmon keeps the Go runtime's system monitor thread from polling
// every 20 µs each time a service wakes from idle.
//
// The runtime's sysmon thread sleeps in steps that start at 20 µs and double
// only after 50 of them without work (1 ms). When every P is idle it sleeps
// until the next timer instead, and when a goroutine then enters or leaves a
// system call it wakes sysmon and resets the step to 20 µs: a service that
// idles between requests, as every Hookline service does below full load,
// starts over at 20 µs on almost every request. Each step is a context
// switch (golang/go#18236 "runtime: sysmon tick is hardcoded", open). On the
// bench machine at 200 events/s that was 45% of ingest's context switches
// and runtime.sysmon 19% of its CPU (perf, kernel included); 13% at 2,000/s.
//
// The runtime has no setting for the step, but it never lets sysmon sleep
// until the next timer while GODEBUG's schedtrace is set (it has to wake to
// print the trace). With schedtrace at its largest value (2³¹−1 ms, 24.8
// days), sysmon keeps to its own back-off (up to 10 ms between steps: about
// 100 wake-ups and 2 ms of CPU per second in an idle process, where it would
// otherwise sleep) and no system call resets it. In 4 alternating pairs of
// bench runs at -scale 2 (10 s at 2,000 events/s, 20 s at 200/s) the p99 at
// 2,000/s went from 46–126 ms to 22–40 ms and the services' CPU per event
// at 200/s fell 14–43%.
//
// What else the setting does: the scheduler's one-line summary (starting
// "SCHED", on stderr) prints every 24.8 days of a process's life, and once
// at its start where the machine has been up longer than that; and a fatal
// error prints the scheduler's state before the goroutines' stacks.
//
// The runtime reads schedtrace only at start-up, so [Reexec] replaces the
// process with itself, the setting added to GODEBUG; the services call it
// through service.Reexec once their configuration is known to be valid (so
// that a bad one still fails with one line). An operator's own schedtrace in
// GODEBUG wins, and schedtrace=0 turns it off.
package sysmon

import (
	"fmt"
	"os"
	"strings"
)

// key is the name of the runtime setting.
const key = "schedtrace"

// Setting is the GODEBUG entry that [Reexec] adds: key at its largest value.
const Setting = key + "=2147483647"

// set reports whether godebug, a value of GODEBUG, names schedtrace as the
// runtime reads it (comma-separated name=value, nothing trimmed).
func set(godebug string) bool {
	for field := range strings.SplitSeq(godebug, ",") {
		name, _, ok := strings.Cut(field, "=")
		if ok && name == key {
			return true
		}
	}
	return false
}

// withSetting returns environ with Setting added to GODEBUG (placed first,
// so that a later entry of the same name would win; [Reexec] adds it only
// where there is none).
func withSetting(environ []string) []string {
	out := make([]string, 0, len(environ)+1)
	found := false
	for _, kv := range environ {
		if v, ok := strings.CutPrefix(kv, "GODEBUG="); ok && !found {
			found = true
			kv = "GODEBUG=" + Setting
			if v != "" {
				kv += "," + v
			}
		}
		out = append(out, kv)
	}
	if !found {
		out = append(out, "GODEBUG="+Setting)
	}
	return out
}

// Reexec replaces the process with the same executable, arguments and
// environment, Setting added to GODEBUG, unless GODEBUG already names
// schedtrace (so the new process does not do it again). Call it first thing
// in main. It returns only if it did nothing (nil) or could not replace the
// process (the error says why; the service then runs with the runtime's
// default, slower under moderate load but otherwise the same).
func Reexec() error {
	if set(os.Getenv("GODEBUG")) {
		return nil
	}
	exe, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find the executable to restart with GODEBUG=%s: %w", Setting, err)
	}
	if err := replaceProcess(exe, os.Args, withSetting(os.Environ())); err != nil {
		return fmt.Errorf("restart %s with GODEBUG=%s: %w", exe, Setting, err)
	}
	return nil
}
