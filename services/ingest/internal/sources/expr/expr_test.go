package expr

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
)

func vars(t *testing.T, body string, kv ...string) Vars {
	t.Helper()
	var b any
	if body != "" {
		if err := json.Unmarshal([]byte(body), &b); err != nil {
			t.Fatal(err)
		}
	}
	h := http.Header{}
	for i := 0; i < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return NewVars(b, h)
}

func TestEvalString(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, src, body string
		headers         []string
		want            string
		wantErr         bool
	}{
		{"github type", `headers["x-github-event"] + "." + body.action`, `{"action":"opened"}`, []string{"X-GitHub-Event", "pull_request"}, "pull_request.opened", false},
		{"optional", `has(body.action) ? headers["x-github-event"] + "." + body.action : headers["x-github-event"]`, `{"ref":"x"}`, []string{"X-GitHub-Event", "push"}, "push", false},
		{"number", `body.repository.id`, `{"repository":{"id":1296269}}`, nil, "1296269", false},
		{"fraction", `body.x`, `{"x":1.5}`, nil, "1.5", false},
		{"missing field", `body.type`, `{}`, nil, "", true},
		{"not a string", `body.list`, `{"list":[1]}`, nil, "", true},
		{"lowerAscii", `body.type.lowerAscii()`, `{"type":"Invoice.Paid"}`, nil, "invoice.paid", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := Compile(tc.src, String)
			if err != nil {
				t.Fatal(err)
			}
			got, err := p.EvalString(vars(t, tc.body, tc.headers...))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("got %q, %v; want %q (error %v)", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestEvalBool(t *testing.T) {
	t.Parallel()
	p, err := Compile(`body.action == "opened" && headers["x-github-event"] == "pull_request"`, Bool)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := p.EvalBool(vars(t, `{"action":"opened"}`, "X-Github-Event", "pull_request")); !ok || err != nil {
		t.Fatalf("%v %v", ok, err)
	}
	if ok, err := p.EvalBool(vars(t, `{"action":"closed"}`, "X-Github-Event", "pull_request")); ok || err != nil {
		t.Fatalf("%v %v", ok, err)
	}
	if _, err := p.EvalBool(vars(t, `{}`)); err == nil {
		t.Fatal("missing field evaluated")
	}
}

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		src  string
		want Result
	}{
		{"", String},
		{"body.", String},
		{`headers["a"] == "b"`, String},
		{`headers["a"]`, Bool},
		{`nope + 1`, String},
	} {
		if _, err := Compile(tc.src, tc.want); !errors.Is(err, ErrInvalid) {
			t.Errorf("Compile(%q) = %v, want ErrInvalid", tc.src, err)
		}
	}
}
