package harness

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// format renders the report as aligned text.
func format(rep *Report) string {
	var b strings.Builder
	fmt.Fprintf(&b, "Hookline end-to-end benchmark, %s\n", rep.Started.Format("2006-01-02 15:04 MST"))
	fmt.Fprintf(&b, "commit:     %s\n", orUnknown(rep.Commit))
	fmt.Fprintf(&b, "machine:    %s\n", rep.Machine)
	fmt.Fprintf(&b, "load:       %s (load average at the start; other work on the machine lowers every figure)\n", rep.Load)
	for i, d := range rep.Durability {
		label := "durability:"
		if i > 0 {
			label = "           "
		}
		fmt.Fprintf(&b, "%s %s\n", label, d)
	}
	c := rep.Ceilings
	fmt.Fprintf(&b, "ceilings:   load generator → receiver %s req/s; JetStream 1 KiB publish %s msg/s, consume+ack %s msg/s\n",
		thousands(c.HTTP), thousands(c.JSPublish), thousands(c.JSConsume))
	if f := c.FloorCPU(); f > 0 {
		fmt.Fprintf(&b, "floor:      transport alone costs %s CPU per delivery at fan-out 1 (its HTTP exchange as the dispatcher makes it; JetStream messages travel grouped, 1 KiB publish %s,\n"+
			"            consume+ack %s each), so no design with this topology passes %s deliveries/s on %d cores, before any validation, PostgreSQL or signing\n",
			micros(f), micros(c.JSPublishCPU), micros(c.JSConsumeCPU),
			thousands(float64(runtime.NumCPU())/f), runtime.NumCPU())
	}
	b.WriteString("events:     1 KiB of data each; latency is from send (the scheduled time at a fixed rate) to arrival at the receiver\n")

	rounds := 1
	if len(rep.Results) > 0 {
		rounds = rep.Results[0].Rounds
	}
	if rounds > 1 {
		fmt.Fprintf(&b, "rounds:     %d, interleaved; every figure is the median of the rounds, \"range\" the events/s min–max\n", rounds)
	}
	b.WriteString("\n")
	head := []string{"scenario", "events/s", "deliv/s", "%http", "p50", "p90", "p99", "max", "delivered",
		"cpu:ing", "cpu:fan", "cpu:dsp", "cpu:dl", "cpu:bench", "cpu:pg", "rss:ing", "rss:fan", "rss:dsp", "rss:dl"}
	if rounds > 1 {
		head = slices.Insert(head, 2, "range")
	}
	rows := [][]string{head}
	for _, r := range rep.Results {
		row := []string{r.Name, thousands(r.EventsPerSec), thousands(r.DeliveriesPerSec), pct(r.DeliveriesPerSec, c.HTTP),
			fmtDur(r.P50), fmtDur(r.P90), fmtDur(r.P99), fmtDur(r.Max), delivered(r)}
		if rounds > 1 {
			row = slices.Insert(row, 2, thousands(r.EventsMin)+"–"+thousands(r.EventsMax))
		}
		for _, k := range []string{binIngest, binFanout, binDispatcher, binDeadletter, "bench", "postgres"} {
			row = append(row, strconv.FormatFloat(r.CPUPer1k[k], 'f', 3, 64))
		}
		for _, k := range []string{binIngest, binFanout, binDispatcher, binDeadletter} {
			row = append(row, strconv.FormatInt(r.PeakRSS[k]>>20, 10))
		}
		rows = append(rows, row)
	}
	b.WriteString(table(rows))
	b.WriteString("\n")
	b.WriteString("events/s, deliv/s: end to end, from the first send to the last 2xx arrival; %http: deliveries/s as a share of the\n")
	b.WriteString("load generator → receiver ceiling. cpu:*: CPU seconds per 1,000 deliveries (until every stream is empty again) of\n")
	b.WriteString("ingest, fanout, dispatcher (all replicas), deadletter, this process (embedded NATS, load generator, receiver) and\n")
	b.WriteString("every postgres process on the machine. rss:*: peak RSS in MiB during the scenario (largest replica).\n")

	var notes []string
	for _, r := range rep.Results {
		notes = append(notes, fmt.Sprintf("%-11s %s", r.Name, r.Desc))
	}
	b.WriteString("\nscenarios:\n")
	for _, n := range notes {
		b.WriteString("  " + n + "\n")
	}
	if t := targets(rep); len(t) > 0 {
		b.WriteString("\ntargets (issue 9):\n")
		b.WriteString(indent(align(t, true), "  "))
	}
	var split [][]string
	for _, r := range rep.Results {
		if r.Stages.N > 0 {
			split = append(split, []string{r.Name, stageLine(r.Stages)})
		}
	}
	if len(split) > 0 {
		b.WriteString("\nlatency by stage, p50 / p99 of each stage on its own (they do not add up to the end-to-end figures):\n")
		for _, row := range split {
			fmt.Fprintf(&b, "  %-11s %s\n", row[0], row[1])
		}
		b.WriteString("  accepted: scheduled send → accepted_at (load generator queue, HTTP, ingest); fanned out: → fan-out's deliveries-row\n")
		b.WriteString("  statement (ingest's insert and commit, its publish, JetStream, fan-out); attempt started: → the successful attempt's\n")
		b.WriteString("  start (JetStream, the dispatcher); arrived: → arrival at the receiver\n")
	}
	var warn []string
	for _, r := range rep.Results {
		if r.SendErrors > 0 {
			warn = append(warn, fmt.Sprintf("%s: %d send errors (first: %s)", r.Name, r.SendErrors, r.SendErrorSample))
		}
		if r.Delivered < r.Expected {
			warn = append(warn, fmt.Sprintf("%s: only %d of %d deliveries arrived", r.Name, r.Delivered, r.Expected))
		}
		if r.Duplicates > 0 {
			warn = append(warn, fmt.Sprintf("%s: %d duplicate deliveries (at-least-once)", r.Name, r.Duplicates))
		}
		if !r.Quiet {
			warn = append(warn, fmt.Sprintf("%s: streams not empty 30s after the last delivery; CPU covers that time only", r.Name))
		}
		if r.Failing > 0 {
			warn = append(warn, fmt.Sprintf("%s: the failing endpoint answered %d requests with 500", r.Name, r.FailingRequests))
		}
	}
	if len(warn) > 0 {
		b.WriteString("\nnotes:\n")
		for _, w := range warn {
			b.WriteString("  " + w + "\n")
		}
	}
	return b.String()
}

// targets compares the results with issue 9's targets.
func targets(rep *Report) [][]string {
	by := map[string]Result{}
	for _, r := range rep.Results {
		by[r.Name] = r
	}
	rows := [][]string{{"target", "measured", ""}}
	check := func(ok bool) string {
		if ok {
			return "met"
		}
		return "MISSED"
	}
	if r, ok := by["batch"]; ok {
		rows = append(rows, []string{"max rate, fan-out 1: >= 10,000 events/s", thousands(r.EventsPerSec) + " events/s", check(r.EventsPerSec >= 10_000)})
		if f := rep.Ceilings.FloorCPU(); f > 0 {
			floor := float64(runtime.NumCPU()) / f
			rows = append(rows, []string{"max rate, fan-out 1, share of the transport floor", pct(r.EventsPerSec, floor) + " of " + thousands(floor) + " events/s", ""})
		}
	}
	if r, ok := by["nats"]; ok && rep.Ceilings.JSPublish > 0 {
		rows = append(rows, []string{"max rate over NATS (share of JetStream publish ceiling)", thousands(r.EventsPerSec) + " events/s = " + pct(r.EventsPerSec, rep.Ceilings.JSPublish), ""})
	}
	if r, ok := by["fanout-10"]; ok {
		rows = append(rows, []string{"fan-out 10: >= 8,000 deliveries/s", thousands(r.DeliveriesPerSec) + " deliveries/s", check(r.DeliveriesPerSec >= 8_000)})
	}
	if r, ok := by["fixed-200"]; ok {
		rows = append(rows, []string{"fixed 200/s: p50 <= 5 ms, p99 <= 25 ms", "p50 " + fmtDur(r.P50) + ", p99 " + fmtDur(r.P99),
			check(r.P50 <= 5*time.Millisecond && r.P99 <= 25*time.Millisecond && r.Delivered == r.Expected)})
	}
	if r, ok := by["fixed-2000"]; ok {
		rows = append(rows, []string{"fixed 2,000/s: p99 <= 50 ms", "p99 " + fmtDur(r.P99), check(r.P99 <= 50*time.Millisecond && r.Delivered == r.Expected)})
	}
	events := func(r Result) float64 { return r.EventsPerSec }
	deliveries := func(r Result) float64 { return r.DeliveriesPerSec }
	if p, ok := pairedRatio(rep, "keys-1000", "batch", events); ok {
		rows = append(rows, []string{"1,000 ordering keys: >= 80% of keyless (batch)", p.String(), check(p.median >= 0.8)})
	}
	if p, ok := pairedRatio(rep, "failing-1", "batch", deliveries); ok {
		rows = append(rows, []string{"1 endpoint failing: healthy keep >= 90% (vs batch)", p.String(), check(p.median >= 0.9)})
	}
	if p, ok := pairedRatio(rep, "replicas-3", "batch", events); ok {
		rows = append(rows, []string{"3 dispatcher replicas (vs 1, batch)", p.String(), ""})
	}
	if len(rows) == 1 {
		return nil
	}
	return rows
}

// ratio is a scenario's throughput as a share of another's.
type ratio struct {
	median, lo, hi float64
	rounds         int
}

// String is the median, with the range of the rounds when there are
// several.
func (r ratio) String() string {
	s := fmt.Sprintf("%.1f%%", 100*r.median)
	if r.rounds > 1 {
		s += fmt.Sprintf(" (rounds %.1f–%.1f%%)", 100*r.lo, 100*r.hi)
	}
	return s
}

// pairedRatio is get of scenario name as a share of get of scenario base:
// the median of the ratios within each round, each run against the base
// run of its own round, so that the host's drift between rounds cancels
// (the ratio of two medians could pair a fast round of one with a slow
// round of the other). Without runs of both in every round it is the ratio
// of the medians.
func pairedRatio(rep *Report, name, base string, get func(Result) float64) (ratio, bool) {
	rs, bs := rep.Runs[name], rep.Runs[base]
	if len(rs) == 0 || len(rs) != len(bs) {
		rs, bs = nil, nil
		for _, r := range rep.Results {
			switch r.Name {
			case name:
				rs = []Result{r}
			case base:
				bs = []Result{r}
			}
		}
		if len(rs) == 0 || len(bs) == 0 {
			return ratio{}, false
		}
	}
	fs := make([]float64, len(rs))
	for i := range rs {
		if get(bs[i]) <= 0 {
			return ratio{}, false
		}
		fs[i] = get(rs[i]) / get(bs[i])
	}
	m := medianOf(fs) // sorts fs
	return ratio{median: m, lo: fs[0], hi: fs[len(fs)-1], rounds: len(fs)}, true
}

// write saves the report as <date>.md and latest.md in dir.
func write(dir string, rep *Report) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	md := "# Hookline benchmark, " + rep.Started.Format("2006-01-02 15:04 MST") + "\n\n" +
		"Produced by `make bench` (bench/cmd/hookline-bench).\n\n```text\n" + rep.Text + "```\n"
	var files []string
	for _, name := range []string{rep.Started.Format("2006-01-02T150405Z") + ".md", "latest.md"} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(md), 0o644); err != nil {
			return files, fmt.Errorf("write %s: %w", path, err)
		}
		files = append(files, path)
	}
	return files, nil
}

// table aligns rows: the first column to the left, the others to the right.
func table(rows [][]string) string { return align(rows, false) }

// align aligns rows in columns, all to the left if left, otherwise the
// first to the left and the others to the right.
func align(rows [][]string, left bool) string {
	var width []int
	for _, r := range rows {
		for i, c := range r {
			if i >= len(width) {
				width = append(width, 0)
			}
			width[i] = max(width[i], utf8.RuneCountInString(c))
		}
	}
	var b strings.Builder
	for _, r := range rows {
		var line strings.Builder
		for i, c := range r {
			gap := strings.Repeat(" ", width[i]-utf8.RuneCountInString(c))
			switch {
			case i == 0:
				line.WriteString(c + gap)
			case left:
				line.WriteString("  " + c + gap)
			default:
				line.WriteString("  " + gap + c)
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " ") + "\n")
	}
	return b.String()
}

func indent(s, prefix string) string {
	lines := strings.SplitAfter(s, "\n")
	var b strings.Builder
	for _, l := range lines {
		if l != "" {
			b.WriteString(prefix + l)
		}
	}
	return b.String()
}

func delivered(r Result) string {
	if r.Expected == 0 {
		return "0"
	}
	if r.Delivered == r.Expected {
		return thousands(float64(r.Delivered))
	}
	return thousands(float64(r.Delivered)) + "/" + thousands(float64(r.Expected))
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

// thousands formats v rounded to a whole number with comma separators.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(v+0.5), 10)
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	return b.String()
}

func pct(v, of float64) string {
	if of <= 0 {
		return "-"
	}
	return strconv.FormatFloat(100*v/of, 'f', 1, 64) + "%"
}

// fmtDur formats a latency with about three significant digits.
func fmtDur(d time.Duration) string {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case d <= 0:
		return "-"
	case ms < 10:
		return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
	case ms < 1000:
		return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
	default:
		return strconv.FormatFloat(ms/1000, 'f', 2, 64) + "s"
	}
}

// micros formats seconds as microseconds.
func micros(s float64) string { return fmt.Sprintf("%.0f µs", s*1e6) }
