package main

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

// TestEveryCommandHasExamples walks the command tree: every command of
// hookctl shows examples in its --help. (cobra's own completion and help
// commands bring their own text; sources is another engineer's group.)
func TestEveryCommandHasExamples(t *testing.T) {
	t.Parallel()
	root := newRootCmd(func(string) string { return "" }, io.Discard, io.Discard)
	var walk func(c *cobra.Command)
	n := 0
	walk = func(c *cobra.Command) {
		for _, sub := range c.Commands() {
			if name := sub.Name(); name == "completion" || name == "help" || (c == root && name == "sources") {
				continue
			}
			n++
			if strings.TrimSpace(sub.Example) == "" {
				t.Errorf("%q has no examples", sub.CommandPath())
			}
			walk(sub)
		}
	}
	walk(root)
	if n < 25 {
		t.Errorf("only %d commands walked", n)
	}
	var out bytes.Buffer
	code := execute(t.Context(), []string{"replay", "--help"}, func(string) string { return "" }, &out, io.Discard)
	if code != 0 || !strings.Contains(out.String(), "Examples:") || !strings.Contains(out.String(), "--dry-run") {
		t.Errorf("replay --help = %d\n%s", code, out.String())
	}
	out.Reset()
	code = execute(t.Context(), []string{"--help"}, func(string) string { return "" }, &out, io.Discard)
	if code != 0 || !strings.Contains(out.String(), "source <(hookctl completion bash)") {
		t.Errorf("--help does not document completion:\n%s", out.String())
	}
	out.Reset()
	code = execute(t.Context(), []string{"completion", "bash"}, func(string) string { return "" }, &out, io.Discard)
	if code != 0 || !strings.Contains(out.String(), "__start_hookctl") {
		t.Errorf("completion bash = %d, %d bytes", code, out.Len())
	}
}

// TestProgressViews: a terminal gets a live bar, anything else a line per
// change.
func TestProgressViews(t *testing.T) {
	t.Parallel()
	steps := []replayProgress{
		{ID: "rpl_1", State: "running", Matched: 4, Replayed: 1},
		{ID: "rpl_1", State: "running", Matched: 4, Replayed: 1},
		{ID: "rpl_1", State: "running", Matched: 4, Replayed: 3, Succeeded: 1},
	}
	last := replayProgress{ID: "rpl_1", State: "done", Matched: 4, Replayed: 4, Succeeded: 3, Failed: 1}

	var lines bytes.Buffer
	v := newProgressView(&lines, false)
	for _, s := range steps {
		v.update(s)
	}
	v.finish(last)
	want := "replay rpl_1 running: 1/4 replayed, 0 succeeded, 0 failed\n" +
		"replay rpl_1 running: 3/4 replayed, 1 succeeded, 0 failed\n" +
		"replay rpl_1 done: 4/4 replayed, 3 succeeded, 1 failed\n"
	if lines.String() != want {
		t.Errorf("lines = %q, want %q", lines.String(), want)
	}

	var bar bytes.Buffer
	v = newProgressView(&bar, true)
	for _, s := range steps {
		v.update(s)
	}
	v.finish(last)
	out := bar.String()
	for _, s := range []string{"\r", "4/4", "100%", "3 succeeded, 1 failed", "replay rpl_1 done"} {
		if !strings.Contains(out, s) {
			t.Errorf("bar output lacks %q: %q", s, out)
		}
	}
}

func TestReplaysCommands(t *testing.T) {
	t.Parallel()
	replay := `{"id":"rpl_1","state":"running","matched":2,"replayed":1,"succeeded":0,"failed":0,"filter":{},"rate_per_second":50,"created_by":"key_1","created_at":"2026-01-01T00:00:00Z","finished_at":null}`
	_, srv := newFake(t, map[string][]response{
		"GET /v1/tenants/acme/replays":          {{200, `{"data":[` + replay + `],"next_cursor":null}`}},
		"GET /v1/tenants/acme/replays/rpl_1":    {{200, replay}},
		"DELETE /v1/tenants/acme/replays/rpl_1": {{200, strings.Replace(replay, `"running"`, `"cancelled"`, 1)}},
	})
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"replays", "list"}, []string{"CREATED BY", "key_1", "rpl_1", "running"}},
		{[]string{"replays", "show", "rpl_1"}, []string{"CREATED BY", "key_1", "MATCHED"}},
		{[]string{"replays", "cancel", "rpl_1"}, []string{"cancelled"}},
	} {
		code, out, errOut := runCLI(t, srv.URL, tc.args...)
		if code != 0 {
			t.Fatalf("%v: exit %d %s", tc.args, code, errOut)
		}
		for _, s := range tc.want {
			if !strings.Contains(out, s) {
				t.Errorf("%v: stdout lacks %q:\n%s", tc.args, s, out)
			}
		}
	}
}
