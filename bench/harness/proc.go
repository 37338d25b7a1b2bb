package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/<pid>/stat; it
// is 100 on every Linux architecture Go supports.
const clockTicks = 100

// service is one Hookline process.
type service struct {
	name    string // binary name, e.g. hookline-dispatcher
	ops     string // ops address (/readyz)
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	err     error
}

// startService runs binDir/name with env and its output in logDir.
func startService(binDir, logDir, name string, env []string, args ...string) (*service, error) {
	logPath := filepath.Join(logDir, fmt.Sprintf("%s-%d.log", name, time.Now().UnixNano()))
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create log of %s: %w", name, err)
	}
	cmd := exec.Command(filepath.Join(binDir, name), args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s := &service{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		_ = f.Close()
		close(s.done)
	}()
	return s, nil
}

func (s *service) pid() int { return s.cmd.Process.Pid }

func (s *service) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// logTail returns the end of the service's log.
func (s *service) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	if len(b) > 3000 {
		b = b[len(b)-3000:]
	}
	return string(b)
}

// waitReady polls the service's /readyz until it answers 200.
func (s *service) waitReady(ctx context.Context, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		if s.exited() {
			return fmt.Errorf("%s exited before it was ready (%v): %s", s.name, s.err, s.logTail())
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+s.ops+"/readyz", nil)
		if err != nil {
			return fmt.Errorf("readyz request: %w", err)
		}
		resp, err := client.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("readyz answered %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s not ready within %s: %w: %s", s.name, within, last, s.logTail())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM and kills the process if it has not exited within.
func (s *service) stop(within time.Duration) error {
	if s.exited() {
		return nil
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
		var exit *exec.ExitError
		if errors.As(s.err, &exit) {
			return fmt.Errorf("%s exited with %v", s.name, s.err)
		}
		return nil
	case <-time.After(within):
		_ = s.cmd.Process.Kill()
		<-s.done
		return fmt.Errorf("%s did not exit within %s of SIGTERM", s.name, within)
	}
}

// handedOut holds every address freeAddr returned: the kernel may give a
// probe the port of the probe it just closed, before the service it was
// meant for listens on it (a service's HTTP and ops addresses are chosen
// one after the other).
var handedOut sync.Map

// freeAddr returns a 127.0.0.1 address nothing listened on when asked and
// that it did not return before.
func freeAddr() (string, error) {
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return "", fmt.Errorf("find a free port: %w", err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		if _, dup := handedOut.LoadOrStore(addr, true); !dup {
			return addr, nil
		}
	}
	return "", errors.New("find a free port: 100 probes gave only ports handed out before")
}

// cpuSeconds is the user plus system CPU time pid has used.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read stat of %d: %w", pid, err)
	}
	return parseStatCPU(b)
}

// parseStatCPU reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line. The command name (field 2) may hold spaces, so
// fields are counted from its closing parenthesis.
func parseStatCPU(b []byte) (float64, error) {
	self, _, err := parseStatTimes(b)
	return self, err
}

// parseStatTimes reads a /proc/<pid>/stat line's own CPU time (utime +
// stime, fields 14 and 15) and that of its exited, reaped children (cutime
// + cstime, fields 16 and 17), in seconds.
func parseStatTimes(b []byte) (self, children float64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, 0, errors.New("malformed stat line")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 15 {
		return 0, 0, errors.New("short stat line")
	}
	var t [4]uint64
	for k := range t {
		if t[k], err = strconv.ParseUint(f[11+k], 10, 64); err != nil {
			return 0, 0, fmt.Errorf("parse stat times: %w", err)
		}
	}
	return float64(t[0]+t[1]) / clockTicks, float64(t[2]+t[3]) / clockTicks, nil
}

// peakRSS is pid's peak resident set size (VmHWM) in bytes.
func peakRSS(pid int) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("read status of %d: %w", pid, err)
	}
	return parseVmHWM(b)
}

func parseVmHWM(b []byte) (int64, error) {
	for line := range strings.SplitSeq(string(b), "\n") {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse VmHWM %q: %w", rest, err)
		}
		return kb << 10, nil
	}
	return 0, errors.New("no VmHWM line")
}

// resetPeakRSS makes VmHWM start again from the current RSS (Linux 4.0+,
// "5" in clear_refs). It fails harmlessly where that is not allowed; the
// peak is then the process's lifetime peak.
func resetPeakRSS(pid int) {
	_ = os.WriteFile("/proc/"+strconv.Itoa(pid)+"/clear_refs", []byte("5"), 0)
}

// postgresCPU sums the CPU time of every process named postgres on the
// machine (the server and all its backends, including other clients').
func postgresCPU() float64 {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	var sum float64
	for _, e := range entries {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil || !bytes.Contains(b, []byte("(postgres)")) {
			continue
		}
		// A backend that exits takes its time with it, but the postmaster
		// reaps it and so counts it among its children's: with those, the
		// sum only grows.
		if self, children, err := parseStatTimes(b); err == nil {
			sum += self + children
		}
	}
	return sum
}

// idleBusy is the share of the machine's CPU time below which it counts as
// idle between scenarios.
const idleBusy = 0.15

// waitIdle waits until the machine's CPUs were busy less than busy of the
// time over a quarter of a second, or until within has passed.
func waitIdle(ctx context.Context, busy float64, within time.Duration) {
	deadline := time.Now().Add(within)
	prevIdle, prevTotal, err := machineCPU()
	for err == nil && ctx.Err() == nil && time.Now().Before(deadline) {
		time.Sleep(250 * time.Millisecond)
		idle, total, e := machineCPU()
		if e != nil || total <= prevTotal {
			return
		}
		if 1-float64(idle-prevIdle)/float64(total-prevTotal) < busy {
			return
		}
		prevIdle, prevTotal = idle, total
	}
}

// machineCPU reads the idle (idle + iowait) and total time of all CPUs from
// /proc/stat, in clock ticks.
func machineCPU() (idle, total uint64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, fmt.Errorf("read /proc/stat: %w", err)
	}
	return parseMachineCPU(b)
}

func parseMachineCPU(b []byte) (idle, total uint64, err error) {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 6 || f[0] != "cpu" {
		return 0, 0, errors.New("no cpu line in /proc/stat")
	}
	for i, v := range f[1:] {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse /proc/stat: %w", err)
		}
		total += n
		if i == 3 || i == 4 { // idle, iowait
			idle += n
		}
	}
	return idle, total, nil
}
