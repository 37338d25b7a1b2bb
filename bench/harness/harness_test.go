package harness

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// buildServices builds the four service binaries into a temporary
// directory, or uses HOOKLINE_BENCH_BIN when it is set.
func buildServices(t *testing.T) string {
	t.Helper()
	if dir := os.Getenv("HOOKLINE_BENCH_BIN"); dir != "" {
		return dir
	}
	dir := t.TempDir()
	for _, name := range services {
		svc := strings.TrimPrefix(name, "hookline-")
		pkg := "github.com/hookline/hookline/services/" + svc + "/cmd/" + name
		cmd := exec.CommandContext(t.Context(), "go", "build", "-o", filepath.Join(dir, name), pkg)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %s: %v\n%s", pkg, err, out)
		}
	}
	return dir
}

// TestRunTiny runs the whole harness at a tiny scale: two scenarios of 200
// events each, against the real services, NATS and PostgreSQL.
func TestRunTiny(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the whole pipeline")
	}
	bin := buildServices(t)
	out, stagesDir := t.TempDir(), t.TempDir()
	rep, err := Run(t.Context(), Options{
		BinDir:          bin,
		DatabaseURL:     os.Getenv("TEST_DATABASE_URL"),
		Scenarios:       []string{"batch", "fixed-200"},
		Events:          200,
		CeilingDuration: 300 * time.Millisecond,
		OutDir:          out,
		StagesDir:       stagesDir,
		Commit:          "test",
		Progress:        testWriter{t},
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if len(rep.Results) != 2 {
		t.Fatalf("got %d results, want 2", len(rep.Results))
	}
	for _, r := range rep.Results {
		if r.Accepted != 200 || r.Expected != 200 || r.Delivered != 200 {
			t.Errorf("%s: accepted %d, expected %d, delivered %d; want 200 each (send errors %d: %s)",
				r.Name, r.Accepted, r.Expected, r.Delivered, r.SendErrors, r.SendErrorSample)
		}
		if r.EventsPerSec <= 0 || r.DeliveriesPerSec != r.EventsPerSec {
			t.Errorf("%s: events/s %v, deliveries/s %v", r.Name, r.EventsPerSec, r.DeliveriesPerSec)
		}
		if r.P50 <= 0 || r.P50 > r.P99 || r.P99 > r.Max {
			t.Errorf("%s: latency p50 %s p99 %s max %s not ordered", r.Name, r.P50, r.P99, r.Max)
		}
		var cpu float64
		for _, name := range services {
			cpu += r.CPUPer1k[name]
			if r.PeakRSS[name] <= 0 {
				t.Errorf("%s: no peak RSS for %s", r.Name, name)
			}
		}
		if cpu <= 0 {
			t.Errorf("%s: the services used no CPU: %v", r.Name, r.CPUPer1k)
		}
	}
	// fixed-200 splits its latency by stage; batch (max rate) does not.
	for _, r := range rep.Results {
		st := r.Stages
		switch r.Name {
		case "fixed-200":
			if st.N != 200 {
				t.Errorf("fixed-200: %d deliveries split by stage, want 200", st.N)
			}
			// The stages run one after another from the send to the
			// arrival, so none of their medians can pass the end-to-end
			// 99th percentile, and the first two take time.
			for name, p := range map[string]StagePct{"accept": st.Accept, "fanout": st.Fanout, "dispatch": st.Dispatch, "deliver": st.Deliver} {
				if p.P50 > p.P99 || p.P50 > r.P99 {
					t.Errorf("fixed-200: stage %s p50 %s p99 %s (end to end p99 %s)", name, p.P50, p.P99, r.P99)
				}
			}
			if st.Accept.P50 <= 0 || st.Fanout.P50 <= 0 {
				t.Errorf("fixed-200: stages %+v", st)
			}
		default:
			if st.N != 0 {
				t.Errorf("%s: split by stage (%d), want only fixed-rate scenarios", r.Name, st.N)
			}
		}
	}
	// The moments of each of fixed-200's deliveries (run 2), one line each
	// after the header, in send order; nothing for batch.
	files, err := filepath.Glob(filepath.Join(stagesDir, "*"))
	if err != nil || len(files) != 1 || filepath.Base(files[0]) != "fixed-200-run2.csv" {
		t.Errorf("-stages wrote %q (%v), want fixed-200-run2.csv alone", files, err)
	} else if b, err := os.ReadFile(files[0]); err != nil {
		t.Error(err)
	} else {
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(lines) != 201 || !strings.HasPrefix(lines[0], "seq,sent_us,") {
			t.Errorf("fixed-200-run2.csv: %d lines, header %q; want 201 and the header", len(lines), lines[0])
		}
		prev := int64(0)
		for _, l := range lines[1:] {
			f := strings.Split(l, ",")
			if len(f) != 7 || slices.Contains(f[:3], "") || slices.Contains(f[4:], "") {
				t.Errorf("fixed-200-run2.csv: line %q", l)
				break
			}
			sent, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil || sent < prev {
				t.Errorf("fixed-200-run2.csv: line %q not in send order", l)
				break
			}
			prev = sent
		}
	}
	if !strings.Contains(rep.Text, "latency by stage") {
		t.Errorf("report lacks the stages:\n%s", rep.Text)
	}
	if rep.Ceilings.HTTP <= 0 || rep.Ceilings.JSPublish <= 0 || rep.Ceilings.JSConsume <= 0 {
		t.Errorf("ceilings not measured: %+v", rep.Ceilings)
	}
	for _, want := range []string{"batch", "fixed-200", "events/s", "p99", "synchronous_commit=", "ceilings:"} {
		if !strings.Contains(rep.Text, want) {
			t.Errorf("report lacks %q:\n%s", want, rep.Text)
		}
	}
	latest, err := os.ReadFile(filepath.Join(out, "latest.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(latest), rep.Text) || len(rep.Files) != 2 {
		t.Errorf("latest.md does not hold the report (files %v)", rep.Files)
	}
	t.Logf("\n%s", rep.Text)
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func TestEventData(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name            string
		run, seq, sent  int64
		wantRun, wantSq int64
	}{
		{"small", 1, 0, 1, 1, 0},
		{"large", 1_000_007, 123_456_789, time.Now().UnixNano(), 1_000_007, 123_456_789},
		{"negative run", -1, 5, 7, -1, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := appendEventData(nil, tc.run, tc.seq, tc.sent)
			if len(b) != EventDataBytes {
				t.Fatalf("data is %d bytes, want %d", len(b), EventDataBytes)
			}
			// A delivery wraps the data in the envelope, possibly re-encoded
			// with spaces (as jsonb prints it).
			spaced := strings.ReplaceAll(string(b), `":`, `": `)
			for _, body := range []string{`{"type":"x","data":` + string(b) + `}`, `{"data": ` + spaced + `}`} {
				run, ok1 := findInt([]byte(body), `"bench_run"`)
				seq, ok2 := findInt([]byte(body), `"bench_seq"`)
				sent, ok3 := findInt([]byte(body), `"bench_sent"`)
				if !ok1 || !ok2 || !ok3 || run != tc.wantRun || seq != tc.wantSq || sent != tc.sent {
					t.Fatalf("parsed run %d seq %d sent %d from %.80s", run, seq, sent, body)
				}
			}
		})
	}
	if _, ok := findInt([]byte(`{"other":1}`), `"bench_seq"`); ok {
		t.Fatal("findInt found a missing key")
	}
}

func TestParseProc(t *testing.T) {
	t.Parallel()
	stat := []byte("1234 (hookline dispatch) S 1 1234 1234 0 -1 4194560 5000 0 0 0 250 75 0 0 20 0 12 0 100 1000000 2000 18446744073709551615\n")
	cpu, err := parseStatCPU(stat)
	if err != nil || cpu != 3.25 {
		t.Fatalf("parseStatCPU = %v, %v; want 3.25 s", cpu, err)
	}
	if _, err := parseStatCPU([]byte("garbage")); err == nil {
		t.Fatal("parseStatCPU accepted garbage")
	}
	idle, total, err := parseMachineCPU([]byte("cpu  100 5 50 800 45 0 0 0 0 0\ncpu0 50 2 25 400 20 0 0 0 0 0\n"))
	if err != nil || idle != 845 || total != 1000 {
		t.Fatalf("parseMachineCPU = %d, %d, %v; want 845 of 1000", idle, total, err)
	}
	// The postmaster: 1 s of its own, 12.5 s of reaped backends.
	postmaster := []byte("800 (postgres) S 1 800 800 0 -1 4194560 5000 0 0 0 60 40 1000 250 20 0 1 0 100 1000000 2000 18446744073709551615\n")
	self, children, err := parseStatTimes(postmaster)
	if err != nil || self != 1 || children != 12.5 {
		t.Fatalf("parseStatTimes = %v, %v, %v; want 1 s and 12.5 s", self, children, err)
	}
	status := []byte("Name:\thookline-ingest\nVmPeak:\t  900000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   30000 kB\n")
	hwm, err := parseVmHWM(status)
	if err != nil || hwm != 40<<20 {
		t.Fatalf("parseVmHWM = %d, %v; want 40 MiB", hwm, err)
	}
	if _, err := parseVmHWM([]byte("Name:\tx\n")); err == nil {
		t.Fatal("parseVmHWM found no line but no error")
	}
	// This process's own figures are readable.
	if c, err := cpuSeconds(os.Getpid()); err != nil || c < 0 {
		t.Fatalf("cpuSeconds(self) = %v, %v", c, err)
	}
	if r, err := peakRSS(os.Getpid()); err != nil || r <= 0 {
		t.Fatalf("peakRSS(self) = %v, %v", r, err)
	}
}

func TestFormatting(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		got, want string
	}{
		{thousands(0), "0"},
		{thousands(999.6), "1,000"},
		{thousands(1234567), "1,234,567"},
		{fmtDur(0), "-"},
		{fmtDur(1234 * time.Microsecond), "1.23ms"},
		{fmtDur(25 * time.Millisecond), "25ms"},
		{fmtDur(1500 * time.Millisecond), "1.50s"},
		{pct(1, 4), "25.0%"},
		{pct(1, 0), "-"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
	lat := []time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}
	if p := percentile(lat, 0.5); p != 5 {
		t.Errorf("p50 = %d, want 5", p)
	}
	if p := percentile(lat, 0.99); p != 10 {
		t.Errorf("p99 = %d, want 10", p)
	}
	got := table([][]string{{"a", "bb"}, {"ccc", "d"}})
	if want := "a    bb\nccc   d\n"; got != want {
		t.Errorf("table = %q, want %q", got, want)
	}
}

func TestMedian(t *testing.T) {
	t.Parallel()
	rs := []Result{
		{EventsPerSec: 100, P99: 3, Delivered: 10, Expected: 10, CPUPer1k: map[string]float64{"x": 1}, Quiet: true},
		{EventsPerSec: 300, P99: 1, Delivered: 10, Expected: 10, CPUPer1k: map[string]float64{"x": 3}, Quiet: true},
		{EventsPerSec: 200, P99: 2, Delivered: 9, Expected: 10, CPUPer1k: map[string]float64{"x": 2}, Quiet: false},
	}
	m := median(rs)
	if m.EventsPerSec != 200 || m.P99 != 2 || m.CPUPer1k["x"] != 2 || m.EventsMin != 100 || m.EventsMax != 300 ||
		m.Delivered != 29 || m.Expected != 30 || m.Quiet || m.Rounds != 3 {
		t.Fatalf("median = %+v", m)
	}
}

func TestSelectScenarios(t *testing.T) {
	t.Parallel()
	all, err := selectScenarios(nil)
	if err != nil || len(all) != len(Scenarios()) {
		t.Fatalf("all scenarios: %d, %v", len(all), err)
	}
	two, err := selectScenarios([]string{"nats", "batch"})
	if err != nil || len(two) != 2 || two[0].Name != "batch" {
		t.Fatalf("selected %+v, %v", two, err)
	}
	if _, err := selectScenarios([]string{"nope"}); err == nil {
		t.Fatal("an unknown scenario was accepted")
	}
}

// TestPairedRatio: a ratio between scenarios is the median of the ratios
// within each round, not the ratio of the two medians, and falls back to
// the medians without runs of both in every round.
func TestPairedRatio(t *testing.T) {
	run := func(name string, v float64) Result {
		return Result{Scenario: Scenario{Name: name}, EventsPerSec: v}
	}
	events := func(r Result) float64 { return r.EventsPerSec }
	rep := &Report{Runs: map[string][]Result{
		// The host was fast in round 1 for batch only: the medians would
		// say 50% (100 against 200), each round says 95% twice.
		"batch": {run("batch", 300), run("batch", 100), run("batch", 200)},
		"keys":  {run("keys", 100), run("keys", 95), run("keys", 190)},
		"short": {run("short", 50)},
	}}
	rep.Results = []Result{median(rep.Runs["batch"]), median(rep.Runs["keys"]), median(rep.Runs["short"])}
	p, ok := pairedRatio(rep, "keys", "batch", events)
	if !ok || p.median != 0.95 || p.lo != 100.0/300 || p.hi != 0.95 || p.rounds != 3 {
		t.Errorf("paired ratio %+v (ok %v), want median 0.95, range 0.33–0.95 over 3 rounds", p, ok)
	}
	if got := p.String(); got != "95.0% (rounds 33.3–95.0%)" {
		t.Errorf("shown as %q", got)
	}
	p, ok = pairedRatio(rep, "short", "batch", events)
	if !ok || p.median != 0.25 || p.rounds != 1 {
		t.Errorf("ratio without a run per round %+v (ok %v), want the medians' 0.25", p, ok)
	}
	if _, ok := pairedRatio(rep, "missing", "batch", events); ok {
		t.Error("a ratio for a scenario that did not run")
	}
}

// TestFloorCPU: the floor is the cheaper of the two exchanges measured, and
// the net/http one when the other was not.
func TestFloorCPU(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		c    Ceilings
		want float64
	}{
		{Ceilings{HTTPCPU: 40e-6, ExchangeCPU: 25e-6}, 25e-6},
		{Ceilings{HTTPCPU: 40e-6, ExchangeCPU: 50e-6}, 40e-6},
		{Ceilings{HTTPCPU: 40e-6}, 40e-6},
		{Ceilings{ExchangeCPU: 25e-6}, 25e-6},
		{Ceilings{}, 0},
	} {
		if got := tc.c.FloorCPU(); got != tc.want {
			t.Errorf("%+v: floor %g, want %g", tc.c, got, tc.want)
		}
	}
}

func TestSplitStages(t *testing.T) {
	t.Parallel()
	at := func(ms float64) time.Time {
		return time.Unix(1000, 0).Add(time.Duration(ms * float64(time.Millisecond)))
	}
	var rs []stageRow
	for i := range 100 {
		// Every stage takes i ms, but the fan-out's 4 × i: each stage's
		// percentiles are its own.
		f := float64(i)
		rs = append(rs, stageRow{sent: at(0), accepted: at(f), fanned: at(5 * f), started: at(6 * f), arrived: at(7 * f)})
	}
	s := splitStages(rs)
	ms := func(f float64) time.Duration { return time.Duration(f * float64(time.Millisecond)) }
	want := Stages{N: 100,
		Accept:   StagePct{P50: ms(49), P99: ms(98)},
		Fanout:   StagePct{P50: ms(4 * 49), P99: ms(4 * 98)},
		Dispatch: StagePct{P50: ms(49), P99: ms(98)},
		Deliver:  StagePct{P50: ms(49), P99: ms(98)},
	}
	if s != want {
		t.Errorf("splitStages = %+v, want %+v", s, want)
	}
	if s := splitStages(nil); s != (Stages{}) {
		t.Errorf("splitStages(nil) = %+v", s)
	}

	// Rounds that split nothing (max rate) do not count in the median.
	one := func(d time.Duration) Stages {
		p := StagePct{P50: d, P99: 2 * d}
		return Stages{N: 10, Accept: p, Fanout: p, Dispatch: p, Deliver: p}
	}
	m := medianStages([]Result{{Stages: one(3)}, {}, {Stages: one(1)}, {Stages: one(2)}})
	if m != (Stages{N: 30, Accept: StagePct{2, 4}, Fanout: StagePct{2, 4}, Dispatch: StagePct{2, 4}, Deliver: StagePct{2, 4}}) {
		t.Errorf("medianStages = %+v", m)
	}
	if got := stageLine(one(time.Millisecond)); got != "accepted 1.00ms / 2.00ms, fanned out +1.00ms / +2.00ms, attempt started +1.00ms / +2.00ms, arrived +1.00ms / +2.00ms" {
		// The first stage has no "+": it starts at the send.
		t.Errorf("stageLine = %q", got)
	}
}

func TestWriteStages(t *testing.T) {
	t.Parallel()
	at := func(us int64) time.Time { return time.UnixMicro(us) }
	rs := []stageRow{
		{seq: 2, sent: at(2000), accepted: at(2100), fanned: at(2500), started: at(2600), arrived: at(2700)},
		{seq: 1, sent: at(1000), accepted: at(1100), committed: at(1300), fanned: at(1500), started: at(1600), arrived: at(1700)},
	}
	path := filepath.Join(t.TempDir(), "fixed-200-run1.csv")
	if err := writeStages(path, rs); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	want := "seq,sent_us,accepted_us,committed_us,fanned_out_us,attempt_started_us,arrived_us\n" +
		"1,1000,1100,1300,1500,1600,1700\n" +
		"2,2000,2100,,2500,2600,2700\n"
	if string(b) != want {
		t.Errorf("file:\n%s\nwant:\n%s", b, want)
	}
	if rs[0].seq != 2 {
		t.Error("writeStages reordered its argument")
	}
	if err := writeStages(filepath.Join(t.TempDir(), "missing", "x.csv"), rs); err == nil {
		t.Error("writeStages into a missing directory: no error")
	}
}
