package metrics

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// observabilityDir holds the Grafana dashboard and the Prometheus alert
// rules that query these metrics.
const observabilityDir = "../../deploy/observability"

var metricName = regexp.MustCompile(`hookline_[a-z_]+`)

// exported lists the names of every series New registers, histogram series
// included.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	m := New("hookline-test")
	m.SetReadiness(func() bool { return true })
	m.HeadChecks(func() (uint64, uint64) { return 0, 0 })
	// Vectors export nothing until a child exists: create one of each.
	m.EventsAccepted.WithLabelValues("http")
	m.EventsRejected.WithLabelValues("http", "invalid")
	m.EventsDuplicate.WithLabelValues("http")
	m.Attempts.WithLabelValues("succeeded")
	m.AttemptDuration.WithLabelValues("succeeded")
	m.EndpointsDisabled.WithLabelValues("gone")
	m.DeadLettersCreated.WithLabelValues("exhausted")
	m.ReplayItems.WithLabelValues("sent")
	m.ConsumerPending.WithLabelValues("S", "c")
	m.ConsumerAckPending.WithLabelValues("S", "c")
	m.ConsumerRedelivered.WithLabelValues("S", "c")
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, f := range families {
		n := f.GetName()
		names[n] = true
		if f.GetType().String() == "HISTOGRAM" {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				names[n+suffix] = true
			}
		}
	}
	return names
}

// checkNames fails t for every problem of exprs: a hookline_* name no
// service exports, unbalanced brackets, no hookline_* metric at all.
func checkNames(t *testing.T, file string, exprs []string, names map[string]bool) {
	t.Helper()
	for _, p := range problems(exprs, names) {
		t.Errorf("%s: %s", file, p)
	}
}

func problems(exprs []string, names map[string]bool) []string {
	if len(exprs) == 0 {
		return []string{"no queries found"}
	}
	var out []string
	used := 0
	for _, e := range exprs {
		if strings.Count(e, "(") != strings.Count(e, ")") || strings.Count(e, "{") != strings.Count(e, "}") || strings.Count(e, "[") != strings.Count(e, "]") {
			out = append(out, fmt.Sprintf("unbalanced brackets in %q", e))
		}
		for _, n := range metricName.FindAllString(e, -1) {
			used++
			if !names[n] {
				out = append(out, fmt.Sprintf("queries %s, which pkg/metrics does not define", n))
			}
		}
	}
	if used == 0 {
		out = append(out, "queries no hookline_* metric")
	}
	return out
}

func TestDashboardQueriesExportedMetrics(t *testing.T) {
	t.Parallel()
	file := filepath.Join(observabilityDir, "grafana-dashboard.json")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Title  string `json:"title"`
		UID    string `json:"uid"`
		Panels []struct {
			Title   string `json:"title"`
			Type    string `json:"type"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
			GridPos *struct{ X, Y, W, H int } `json:"gridPos"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s does not parse: %v", file, err)
	}
	if dash.Title == "" || dash.UID == "" || len(dash.Panels) == 0 {
		t.Fatalf("%s: title %q, uid %q, %d panels", file, dash.Title, dash.UID, len(dash.Panels))
	}
	var exprs []string
	for _, p := range dash.Panels {
		if p.Title == "" || p.Type == "" || p.GridPos == nil || len(p.Targets) == 0 {
			t.Errorf("%s: panel %q lacks a title, type, position or query", file, p.Title)
		}
		for _, tg := range p.Targets {
			exprs = append(exprs, tg.Expr)
		}
	}
	checkNames(t, file, exprs, exported(t))
}

func TestAlertRulesQueryExportedMetrics(t *testing.T) {
	t.Parallel()
	file := filepath.Join(observabilityDir, "alerts.yaml")
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var rules struct {
		Groups []struct {
			Name  string `yaml:"name"`
			Rules []struct {
				Alert       string            `yaml:"alert"`
				Expr        string            `yaml:"expr"`
				For         string            `yaml:"for"`
				Labels      map[string]string `yaml:"labels"`
				Annotations map[string]string `yaml:"annotations"`
			} `yaml:"rules"`
		} `yaml:"groups"`
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&rules); err != nil {
		t.Fatalf("%s does not parse as Prometheus rule groups: %v", file, err)
	}
	var exprs, alerts []string
	seen := map[string]bool{}
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			if r.Alert == "" || strings.TrimSpace(r.Expr) == "" || r.Labels["severity"] == "" || r.Annotations["summary"] == "" {
				t.Errorf("%s: rule %q needs alert, expr, labels.severity and annotations.summary", file, r.Alert)
			}
			if seen[r.Alert] {
				t.Errorf("%s: alert %s defined twice", file, r.Alert)
			}
			seen[r.Alert] = true
			exprs = append(exprs, r.Expr)
			alerts = append(alerts, r.Alert)
		}
	}
	sort.Strings(alerts)
	for _, want := range []string{"HooklineBacklogGrowing", "HooklineDeliverySuccessRateLow", "HooklineDeadLettersRising", "HooklineBreakerStorm", "HooklineServiceDown", "HooklineNotReady"} {
		if !seen[want] {
			t.Errorf("%s lacks alert %s (has %v)", file, want, alerts)
		}
	}
	checkNames(t, file, exprs, exported(t))
}

func TestCheckNamesCatchesUnknownMetric(t *testing.T) {
	t.Parallel()
	names := exported(t)
	if p := problems([]string{`rate(hookline_no_such_metric_total[5m])`}, names); len(p) != 1 {
		t.Fatalf("problems of an unknown metric = %q", p)
	}
	if p := problems([]string{`sum(rate(hookline_delivery_latency_seconds_bucket[5m])`}, names); len(p) != 1 {
		t.Fatalf("problems of unbalanced brackets = %q", p)
	}
	if p := problems([]string{`up == 0`}, names); len(p) != 1 {
		t.Fatalf("problems of a query without hookline metrics = %q", p)
	}
	if !names["hookline_delivery_latency_seconds_bucket"] || !names["hookline_ready"] || names["hookline_delivery_latency_seconds_total"] {
		t.Fatal("histogram suffixes or gauge funcs are not listed as expected")
	}
}

// TestHeadChecks: the two results of hookline_ordering_head_checks_total
// report what the counting function returns at each scrape.
func TestHeadChecks(t *testing.T) {
	m := New("hookline-test")
	lookups, known := uint64(3), uint64(40)
	m.HeadChecks(func() (uint64, uint64) { return lookups, known })
	lookups, known = 5, 41
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range families {
		if f.GetName() != "hookline_ordering_head_checks_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			for _, l := range s.GetLabel() {
				if l.GetName() == "result" {
					got[l.GetValue()] = s.GetCounter().GetValue()
				}
			}
		}
	}
	if got["lookup"] != 5 || got["known"] != 41 || len(got) != 2 {
		t.Errorf("head checks %v, want lookup 5 and known 41", got)
	}
}
