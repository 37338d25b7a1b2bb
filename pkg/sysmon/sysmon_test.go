package sysmon

import (
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestSet(t *testing.T) {
	for godebug, want := range map[string]bool{
		"":                          false,
		"schedtrace=0":              true,
		"http2debug=1,schedtrace=5": true,
		" schedtrace=1":             false, // the runtime does not trim: not its setting
		"scheddetail=1":             false,
		"schedtracex=1":             false,
		"schedtrace":                false, // not a setting: the runtime ignores it
		"madvdontneed=1,":           false,
	} {
		if got := set(godebug); got != want {
			t.Errorf("set(%q) = %v, want %v", godebug, got, want)
		}
	}
}

func TestWithSetting(t *testing.T) {
	for _, tc := range []struct {
		in, want []string
	}{
		{[]string{"PATH=/bin"}, []string{"PATH=/bin", "GODEBUG=" + Setting}},
		{[]string{"GODEBUG=", "A=1"}, []string{"GODEBUG=" + Setting, "A=1"}},
		{[]string{"A=1", "GODEBUG=http2debug=1"}, []string{"A=1", "GODEBUG=" + Setting + ",http2debug=1"}},
		// Only the first GODEBUG changes; os.Environ has one of each.
		{[]string{"GODEBUG=a=1", "GODEBUG=b=1"}, []string{"GODEBUG=" + Setting + ",a=1", "GODEBUG=b=1"}},
		{[]string{"XGODEBUG=a=1"}, []string{"XGODEBUG=a=1", "GODEBUG=" + Setting}},
	} {
		in := slices.Clone(tc.in)
		if got := withSetting(tc.in); !slices.Equal(got, tc.want) {
			t.Errorf("withSetting(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if !slices.Equal(in, tc.in) {
			t.Errorf("withSetting changed its argument: %q, was %q", tc.in, in)
		}
	}
}

// helperEnv makes the test binary act as a service's main: Reexec, then
// print GODEBUG, the process id and the arguments, one per line.
const helperEnv = "HOOKLINE_SYSMON_TEST_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		if err := Reexec(); err != nil {
			os.Stdout.WriteString("error: " + err.Error() + "\n")
		}
		os.Stdout.WriteString(os.Getenv("GODEBUG") + "\n" + strconv.Itoa(os.Getpid()) + "\n" + strings.Join(os.Args[1:], " ") + "\n")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestReexec runs the test binary as a service's main would run: it must
// come back as the same process, with the same arguments, the setting in
// GODEBUG and the rest of GODEBUG kept; and it must not restart where GODEBUG
// names schedtrace already.
func TestReexec(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no exec on windows")
	}
	run := func(godebug string) string {
		t.Helper()
		cmd := exec.Command(os.Args[0], "-test.run=^$", "extra")
		cmd.Env = append(os.Environ(), helperEnv+"=1", "GODEBUG="+godebug)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("helper with GODEBUG=%q: %v", godebug, err)
		}
		lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
		if len(lines) != 3 {
			t.Fatalf("helper with GODEBUG=%q printed %q, want 3 lines", godebug, out)
		}
		if lines[2] != "-test.run=^$ extra" {
			t.Errorf("helper with GODEBUG=%q: arguments %q after restart", godebug, lines[2])
		}
		if lines[1] != strconv.Itoa(cmd.Process.Pid) {
			t.Errorf("helper with GODEBUG=%q: pid %s, want %d (the same process)", godebug, lines[1], cmd.Process.Pid)
		}
		return lines[0]
	}
	if got := run(""); got != Setting {
		t.Errorf("GODEBUG after restart = %q, want %q", got, Setting)
	}
	if got := run("http2debug=1"); got != Setting+",http2debug=1" {
		t.Errorf("GODEBUG after restart = %q, want %q", got, Setting+",http2debug=1")
	}
	for _, own := range []string{"schedtrace=0", "http2debug=1,schedtrace=1000"} {
		if got := run(own); got != own {
			t.Errorf("GODEBUG=%q became %q: an operator's schedtrace must stay", own, got)
		}
	}
}
