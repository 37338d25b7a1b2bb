//go:build long

package e2e

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's utime and stime (100
// on Linux for every architecture Go supports).
const clockTicks = 100

// procCPU reads a process's user + system CPU time from /proc/<pid>/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses and may hold
	// spaces: state is field 3, utime 14, stime 15.
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(fields) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: %q", pid, s)
	}
	u, err1 := strconv.ParseInt(fields[11], 10, 64)
	st, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: %q", pid, s)
	}
	return time.Duration(u+st) * time.Second / clockTicks, nil
}

// machineCPU reads the machine's busy and total CPU time from /proc/stat.
func machineCPU() (busy, total int64, err error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)[1:]
	for i, v := range f {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("parse /proc/stat: %q", line)
		}
		if i >= 8 { // guest time is already counted in user time
			break
		}
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total, nil
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	return strings.Join(f[:3], " ")
}

// TestOrderingScaling measures issue 5's scaling figure on this machine:
// deliveries per second with 1, 2 and 3 dispatcher replicas, for 1,000
// distinct ordering keys and for keyless traffic, with the CPU the
// dispatchers used. Each run queues n deliveries in HOOKLINE_DELIVERIES while
// the dispatchers are stopped (SIGSTOP), then lets them go (SIGCONT) and
// times until the receiver has every one, so the figure is the dispatchers'
// drain rate, not ingest's or fan-out's. The machine is shared: the load
// average is printed beside each row.
func TestOrderingScaling(t *testing.T) {
	const (
		n       = 20000
		keys    = 1000
		tenant  = "scale"
		within  = 5 * time.Minute
		maxReps = 3
	)
	f := newFaultEnv(t, faultOptions{dispatchers: 1, env: map[string]string{"HOOKLINE_LOG_LEVEL": "warn"}})
	f.ingest.must(t, "POST", "/v1/tenants", map[string]any{"id": tenant, "name": "Scaling"}, 201, nil)
	rcv := newSink(t, false)
	f.createEndpoint(t, tenant, rcv.URL, map[string]any{"ordering": "key"})
	settle()

	nc, err := nats.Connect(f.nats.URL(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	streamMsgs := func(name string) (uint64, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, name)
		if err != nil {
			return 0, err
		}
		info, err := s.Info(ctx)
		if err != nil {
			return 0, err
		}
		return info.State.Msgs, nil
	}
	waitStream := func(name string, want uint64, within time.Duration) {
		eventually(t, within, name+" holding "+strconv.FormatUint(want, 10), func() error {
			got, err := streamMsgs(name)
			if err != nil {
				return err
			}
			if got != want {
				return errf("%d messages", got)
			}
			return nil
		})
	}
	dispatchers := func() []*proc {
		var ps []*proc
		for i := range maxReps {
			if p := f.proc(dispatcherName(i)); p != nil {
				ps = append(ps, p)
			}
		}
		return ps
	}
	signalAll := func(sig syscall.Signal) {
		for _, p := range dispatchers() {
			if err := p.cmd.Process.Signal(sig); err != nil {
				t.Fatalf("signal %s: %v", p.name, err)
			}
		}
	}
	cpuOf := func(ps []*proc) time.Duration {
		var sum time.Duration
		for _, p := range ps {
			c, err := procCPU(p.cmd.Process.Pid)
			if err != nil {
				t.Fatal(err)
			}
			sum += c
		}
		return sum
	}
	type row struct {
		reps                  int
		traffic               string
		rate                  float64
		took                  time.Duration
		dispCPU, restCPU      time.Duration
		machineBusy           float64
		loadBefore, loadAfter string
	}
	var rows []row
	batch := 0
	for reps := 1; reps <= maxReps; reps++ {
		if reps > 1 {
			f.start(dispatcherName(reps-1), "hookline-dispatcher", "")
		}
		for _, traffic := range []string{"keyless", "1,000 keys"} {
			batch++
			// Queue n deliveries while the dispatchers are stopped.
			signalAll(syscall.SIGSTOP)
			ids := make([]string, n)
			events := make([]map[string]any, n)
			for i := range n {
				ids[i] = fmt.Sprintf("s%d-%05d", batch, i)
				events[i] = map[string]any{"id": ids[i], "type": "order.updated", "data": map[string]any{"n": i}}
				if traffic != "keyless" {
					events[i]["ordering_key"] = fmt.Sprintf("k-%d", i%keys)
				}
			}
			for off := 0; off < n; off += 500 {
				f.ingest.must(t, "POST", "/v1/tenants/"+tenant+"/events/batch", map[string]any{"events": events[off:min(off+500, n)]}, 202, nil)
			}
			waitStream("HOOKLINE_DELIVERIES", n, within)
			before := rcv.count()
			others := []*proc{f.proc("hookline-ingest"), f.proc("hookline-fanout"), f.proc("hookline-deadletter")}
			ds := dispatchers()
			dc0, oc0 := cpuOf(ds), cpuOf(others)
			selfCPU0, err := procCPU(os.Getpid())
			if err != nil {
				t.Fatal(err)
			}
			busy0, total0, err := machineCPU()
			if err != nil {
				t.Fatal(err)
			}
			load0 := loadavg()
			began := time.Now()
			signalAll(syscall.SIGCONT)
			deadline := began.Add(within)
			for rcv.countOf(ids) < n {
				if time.Now().After(deadline) {
					t.Fatalf("%d dispatchers, %s: %d of %d delivered within %s", reps, traffic, rcv.countOf(ids), n, within)
				}
				time.Sleep(20 * time.Millisecond)
			}
			took := time.Since(began)
			busy1, total1, _ := machineCPU()
			dc1, oc1 := cpuOf(ds), cpuOf(others)
			selfCPU1, _ := procCPU(os.Getpid())
			if dups := rcv.count() - before - n; dups != 0 {
				t.Logf("%d dispatchers, %s: %d duplicate receipts", reps, traffic, dups)
			}
			rows = append(rows, row{
				reps: reps, traffic: traffic, rate: float64(n) / took.Seconds(), took: took,
				dispCPU: dc1 - dc0, restCPU: oc1 - oc0 + selfCPU1 - selfCPU0,
				machineBusy: 100 * float64(busy1-busy0) / float64(max(total1-total0, 1)),
				loadBefore:  load0, loadAfter: loadavg(),
			})
			// Let the pipeline settle (acks, attempt log) before the next run.
			waitStream("HOOKLINE_DELIVERIES", 0, within)
			waitStream("HOOKLINE_ATTEMPTS", 0, within)
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "dispatcher scaling, %d deliveries per run to one endpoint (ordering \"key\"), drained from a full HOOKLINE_DELIVERIES:\n", n)
	fmt.Fprintf(&b, "| dispatchers | traffic | deliveries/s | drain time | dispatcher CPU (s) | dispatcher CPU per delivery | other CPU (s): ingest, fan-out, deadletter, test process (embedded NATS, receiver) | machine busy | load avg before → after |\n")
	fmt.Fprintf(&b, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %d | %s | %.0f | %s | %.2f (%.0f%% of one core) | %.0f µs | %.2f | %.0f%% | %s → %s |\n",
			r.reps, r.traffic, r.rate, r.took.Round(10*time.Millisecond), r.dispCPU.Seconds(), 100*r.dispCPU.Seconds()/r.took.Seconds(),
			float64(r.dispCPU.Microseconds())/n, r.restCPU.Seconds(), r.machineBusy, r.loadBefore, r.loadAfter)
	}
	t.Log("\n" + b.String())
}
