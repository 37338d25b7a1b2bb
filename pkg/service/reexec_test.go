package service

import (
	"os"
	"os/exec"
	"runtime"
	"testing"

	"github.com/hookline/hookline/pkg/config"
	"github.com/hookline/hookline/pkg/sysmon"
)

// reexecHelper makes the test binary act as a service's main: Reexec, then
// print GODEBUG.
const reexecHelper = "HOOKLINE_SERVICE_TEST_REEXEC"

func TestMain(m *testing.M) {
	if os.Getenv(reexecHelper) == "1" {
		Reexec("svc", config.Need{NATS: true, Database: true}, os.Getenv, os.Stdout)
		_, _ = os.Stdout.WriteString("GODEBUG=" + os.Getenv("GODEBUG") + "\n")
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestReexec: a service with a valid configuration comes back with the
// runtime setting; one with a bad configuration runs on unchanged, so that
// Main reports the bad setting alone.
func TestReexec(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no exec on windows")
	}
	t.Parallel()
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"valid", []string{config.EnvNATSURL + "=nats://127.0.0.1:1", config.EnvDatabaseURL + "=postgres://u@h/db"}, "GODEBUG=" + sysmon.Setting + "\n"},
		{"bad setting", []string{config.EnvDatabaseURL + "=postgres://u@h/db"}, "GODEBUG=\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cmd := exec.Command(os.Args[0], "-test.run=^$")
			cmd.Env = append([]string{reexecHelper + "=1", "GODEBUG=", "PATH=" + os.Getenv("PATH")}, tc.env...)
			out, err := cmd.Output() // stdout: the setting may print on stderr
			if err != nil {
				t.Fatalf("helper: %v", err)
			}
			if got := string(out); got != tc.want {
				t.Fatalf("helper printed %q, want %q", got, tc.want)
			}
		})
	}
}
