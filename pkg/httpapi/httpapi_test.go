package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

type body struct {
	Name  string   `json:"name"`
	Count int      `json:"count"`
	Tags  []string `json:"tags"`
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		in     string
		status int
		field  string
	}{
		{"ok", `{"name":"a","count":1}`, 0, ""},
		{"empty", ``, 400, ""},
		{"malformed", `{"name":`, 400, ""},
		{"not an object", `[1,2]`, 400, ""},
		{"unknown field", `{"nam":"a"}`, 422, "nam"},
		{"wrong type", `{"count":"x"}`, 422, "count"},
		{"trailing data", `{"name":"a"} {}`, 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var b body
			err := DecodeJSON([]byte(tc.in), &b)
			if tc.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var p *Problem
			if !errors.As(err, &p) || p.Status != tc.status {
				t.Fatalf("err = %v, want status %d", err, tc.status)
			}
			if tc.field != "" && (len(p.Errors) != 1 || p.Errors[0].Field != tc.field) {
				t.Fatalf("errors = %+v, want field %q", p.Errors, tc.field)
			}
		})
	}
}

func TestHandleWritesProblems(t *testing.T) {
	t.Parallel()
	h := Handle(nil, func(http.ResponseWriter, *http.Request) error {
		return Invalid(FieldError{Field: "url", Message: "required"})
	})
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/", nil))
	if rec.Code != 422 || rec.Header().Get("Content-Type") != "application/problem+json" {
		t.Fatalf("got %d %s", rec.Code, rec.Header().Get("Content-Type"))
	}
	var p Problem
	if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil || p.Errors[0].Field != "url" || p.Type == "" || p.Title == "" {
		t.Fatalf("body %s", rec.Body)
	}
}

func TestCursorRoundTrip(t *testing.T) {
	t.Parallel()
	items := []int{1, 2, 3}
	page, next := NextPage(items, 2, func(i int) Cursor { return Cursor{ID: string(rune('a' + i))} })
	if len(page) != 2 || next == nil {
		t.Fatalf("page %v next %v", page, next)
	}
	r := httptest.NewRequest(http.MethodGet, "/?limit=9999&cursor="+*next, nil)
	p, err := ParseList(r)
	if err != nil || p.Limit != MaxLimit || p.Cursor == nil || p.Cursor.ID != "c" {
		t.Fatalf("ParseList = %+v, %v", p, err)
	}
	if _, err := ParseList(httptest.NewRequest(http.MethodGet, "/?cursor=garbage", nil)); err == nil {
		t.Fatal("a bad cursor must be refused")
	}
	_, last := NextPage(items, 3, func(int) Cursor { return Cursor{} })
	if last != nil {
		t.Fatal("the last page has no next cursor")
	}
}
