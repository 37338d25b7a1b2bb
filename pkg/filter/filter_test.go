package filter_test

import (
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/hookline/hookline/pkg/filter"
)

func TestCompileErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		expr    string
		wantMsg string // substring of the error
	}{
		{"empty", "", "empty"},
		{"blank", "  \n\t", "empty"},
		{"syntax", "data.amount >", "Syntax error"},
		{"unbalanced", "(type == \"a\"", "Syntax error"},
		{"undeclared variable", "event.type == \"a\"", "undeclared reference to 'event'"},
		{"unknown function", "frobnicate(type)", "undeclared reference to 'frobnicate'"},
		{"string result", "type", "must be a bool"},
		{"int result", "1 + 2", "must be a bool"},
		{"dyn result", "data.flag", "must be a bool"},
		{"type mismatch", "type > 5", "no matching overload"},
		{"ordering_key is a string", "ordering_key + 1 == 2", "no matching overload"},
		{"too long", "type == \"" + strings.Repeat("a", filter.MaxLength) + "\"", "at most 4096"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := filter.Compile(tc.expr)
			if err == nil {
				t.Fatalf("Compile(%q) = %v, want an error", tc.expr, p)
			}
			if !errors.Is(err, filter.ErrInvalid) {
				t.Errorf("error %v does not wrap ErrInvalid", err)
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.wantMsg) {
				t.Errorf("error %q does not contain %q", msg, tc.wantMsg)
			}
			if strings.Contains(msg, "\n") || strings.Contains(msg, "<input>") {
				t.Errorf("error %q is not one clean line", msg)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	t.Parallel()
	const amountEUR = `data.amount > 100 && data.currency == "EUR"`
	tests := []struct {
		name string
		expr string
		typ  string
		data string
		key  string
		want bool
	}{
		{"contract example true", amountEUR, "order.created", `{"amount":150,"currency":"EUR"}`, "", true},
		{"contract example too small", amountEUR, "order.created", `{"amount":50,"currency":"EUR"}`, "", false},
		{"contract example other currency", amountEUR, "order.created", `{"amount":150,"currency":"USD"}`, "", false},
		{"missing fields", amountEUR, "order.created", `{}`, "", false},
		{"wrong field type", amountEUR, "order.created", `{"amount":"lots","currency":"EUR"}`, "", false},
		{"data is an array", amountEUR, "order.created", `[1,2]`, "", false},
		{"data is null", amountEUR, "order.created", `null`, "", false},
		{"data empty", amountEUR, "order.created", ``, "", false},
		{"data not JSON", amountEUR, "order.created", `{nope`, "", false},
		{"type only, data not JSON", `type == "order.created"`, "order.created", `{nope`, "", true},
		{"type prefix", `type.startsWith("order.")`, "order.created", `{}`, "", true},
		{"type prefix no", `type.startsWith("order.")`, "invoice.paid", `{}`, "", false},
		{"ordering key", `ordering_key == "customer-42"`, "a", `{}`, "customer-42", true},
		{"ordering key empty", `ordering_key == ""`, "a", `{}`, "", true},
		{"int literal equals JSON number", `data.amount == 150`, "a", `{"amount":150}`, "", true},
		{"double literal", `data.amount >= 149.5`, "a", `{"amount":150}`, "", true},
		{"double arithmetic", `data.amount * 1.1 > 160.0`, "a", `{"amount":150}`, "", true},
		{"int arithmetic on double is an error", `data.amount + 1 > 0`, "a", `{"amount":150}`, "", false},
		{"has() present", `has(data.customer) && data.customer.tier == "gold"`, "a", `{"customer":{"tier":"gold"}}`, "", true},
		{"has() absent", `has(data.customer) && data.customer.tier == "gold"`, "a", `{"amount":1}`, "", false},
		{"nested missing", `data.customer.tier == "gold"`, "a", `{"customer":{}}`, "", false},
		{"negation of error is still false", `!(data.missing == 1)`, "a", `{}`, "", false},
		{"or short-circuits an error", `data.missing == 1 || type == "a"`, "a", `{}`, "", true},
		{"in list", `data.currency in ["EUR", "GBP"]`, "a", `{"currency":"GBP"}`, "", true},
		{"list exists", `data.items.exists(i, i.sku == "X1")`, "a", `{"items":[{"sku":"X0"},{"sku":"X1"}]}`, "", true},
		{"list size", `size(data.items) == 2`, "a", `{"items":[1,2]}`, "", true},
		{"bool field", `data.paid == true`, "a", `{"paid":true}`, "", true},
		{"null field", `data.note == null`, "a", `{"note":null}`, "", true},
		{"string extension", `data.name.lowerAscii() == "zoë"`, "a", `{"name":"ZOë"}`, "", true},
		{"optional field", `data.?amount.orValue(0.0) > 100.0`, "a", `{}`, "", false},
		{"optional field present", `data.?amount.orValue(0.0) > 100.0`, "a", `{"amount":101}`, "", true},
		{"big integer keeps double precision", `data.id == 2432232314`, "a", `{"id":2432232314}`, "", true},
		{"matches regex", `type.matches("^order\\.(created|updated)$")`, "order.updated", `{}`, "", true},
		{"literal true", `true`, "a", `{}`, "", true},
		{"division by zero", `1 / int(data.n) == 1`, "a", `{"n":0}`, "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := filter.Compile(tc.expr)
			if err != nil {
				t.Fatalf("Compile(%q): %v", tc.expr, err)
			}
			if p.String() != tc.expr {
				t.Errorf("String() = %q, want %q", p.String(), tc.expr)
			}
			if got := p.Match(tc.typ, []byte(tc.data), tc.key); got != tc.want {
				t.Fatalf("Match(%q, %s, %q) = %v, want %v", tc.typ, tc.data, tc.key, got, tc.want)
			}
			if got := p.MatchEvent(filter.NewEvent(tc.typ, []byte(tc.data), tc.key)); got != tc.want {
				t.Fatalf("MatchEvent = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCostLimit(t *testing.T) {
	t.Parallel()
	// Quadratic work over a 1000-element list: far beyond the cost limit.
	p, err := filter.Compile(`data.items.all(i, data.items.all(j, i + j >= 0.0))`)
	if err != nil {
		t.Fatal(err)
	}
	items := "[" + strings.Repeat("1,", 999) + "1]"
	if p.Match("a", []byte(`{"items":`+items+`}`), "") {
		t.Fatal("Match over the cost limit = true, want false")
	}
	if !p.Match("a", []byte(`{"items":[1,2,3]}`), "") {
		t.Fatal("Match within the cost limit = false, want true")
	}
}

func TestConcurrentMatch(t *testing.T) {
	t.Parallel()
	p, err := filter.Compile(`data.amount > 100 && data.currency == "EUR"`)
	if err != nil {
		t.Fatal(err)
	}
	yes := filter.NewEvent("order.created", []byte(`{"amount":150,"currency":"EUR"}`), "k")
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for g := range 8 {
		wg.Go(func() {
			for i := range 200 {
				want := (g+i)%2 == 0
				var got bool
				if want {
					got = p.MatchEvent(yes)
				} else {
					got = p.Match("order.created", []byte(`{"amount":50,"currency":"EUR"}`), "k")
				}
				if got != want {
					errs <- "concurrent Match gave a wrong answer"
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Fatal(e)
	}
}

func FuzzCompile(f *testing.F) {
	for _, s := range []string{
		`data.amount > 100 && data.currency == "EUR"`,
		`type.startsWith("order.") || ordering_key == ""`,
		`data.items.exists(i, i.sku == "X1")`,
		`has(data.a.b) ? data.a.b == 1 : false`,
		`data.?x.orValue(0.0) > 1.0`,
		`"\u00e9" + '\x00' == b"\xff"`,
		`[1, 2, 3].map(x, x * 2)[0] == 2`,
		`((((((((((type))))))))))`,
		``,
	} {
		f.Add(s, []byte(`{"amount":150,"currency":"EUR","items":[{"sku":"X1"}]}`))
	}
	f.Fuzz(func(t *testing.T, expr string, data []byte) {
		p, err := filter.Compile(expr)
		if err != nil {
			if !errors.Is(err, filter.ErrInvalid) {
				t.Fatalf("Compile(%q) error %v does not wrap ErrInvalid", expr, err)
			}
			return
		}
		// Whatever compiles evaluates without panicking on any data.
		_ = p.Match("order.created", data, "k")
	})
}

func BenchmarkMatch(b *testing.B) {
	p, err := filter.Compile(`data.amount > 100 && data.currency == "EUR"`)
	if err != nil {
		b.Fatal(err)
	}
	data := []byte(`{"amount":150,"currency":"EUR","customer":{"id":"c_42","tier":"gold"},"items":[{"sku":"X1","qty":2}]}`)
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !p.Match("order.created", data, "customer-42") {
				b.Fatal("no match")
			}
		}
	})
	b.Run("decoded", func(b *testing.B) {
		e := filter.NewEvent("order.created", data, "customer-42")
		b.ReportAllocs()
		for b.Loop() {
			if !p.MatchEvent(e) {
				b.Fatal("no match")
			}
		}
	})
}

func BenchmarkCompile(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := filter.Compile(`data.amount > 100 && data.currency == "EUR"`); err != nil {
			b.Fatal(err)
		}
	}
}
