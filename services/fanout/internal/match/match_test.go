package match

import (
	"io"
	"log/slog"
	"slices"
	"testing"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

type tenantSource map[string][]*hooklinev1.Endpoint

func (s tenantSource) ForTenant(t string) []*hooklinev1.Endpoint { return s[t] }

func TestEndpoints(t *testing.T) {
	t.Parallel()
	src := tenantSource{"acme": {
		{Id: "all"},
		{Id: "orders", EventTypes: []string{"order.*"}},
		{Id: "deep", EventTypes: []string{"order.>"}},
		{Id: "users", EventTypes: []string{"user.created", "user.deleted"}},
		{Id: "big_eur", EventTypes: []string{"order.>"}, Filter: `data.amount > 100 && data.currency == "EUR"`},
		{Id: "keyed", Filter: `ordering_key == "k1"`},
		{Id: "broken", Filter: `data.amount >`},
		{Id: "disabled", EventTypes: []string{"order.created"}, Disabled: true},
	}, "other": {{Id: "foreign"}}}
	m := New(src, slog.New(slog.NewTextHandler(io.Discard, nil)))
	tests := []struct {
		name string
		ev   *hooklinev1.Event
		want []string
	}{
		{"wildcards", &hooklinev1.Event{TenantId: "acme", Type: "order.created", Data: []byte(`{"amount":5}`)},
			[]string{"all", "orders", "deep", "disabled"}},
		{"deep only", &hooklinev1.Event{TenantId: "acme", Type: "order.item.added", Data: []byte(`{}`)},
			[]string{"all", "deep"}},
		{"filter true", &hooklinev1.Event{TenantId: "acme", Type: "order.paid", Data: []byte(`{"amount":500,"currency":"EUR"}`)},
			[]string{"all", "orders", "deep", "big_eur"}},
		{"ordering key", &hooklinev1.Event{TenantId: "acme", Type: "user.created", Data: []byte(`{}`), OrderingKey: "k1"},
			[]string{"all", "users", "keyed"}},
		{"no prefix match", &hooklinev1.Event{TenantId: "acme", Type: "order", Data: []byte(`{}`)}, []string{"all"}},
		{"only endpoint", &hooklinev1.Event{TenantId: "acme", Type: "hookline.test", OnlyEndpointId: "users"}, []string{"users"}},
		{"only endpoint of another tenant", &hooklinev1.Event{TenantId: "acme", Type: "x", OnlyEndpointId: "foreign"}, nil},
		{"unknown tenant", &hooklinev1.Event{TenantId: "nobody", Type: "x"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got []string
			for _, ep := range m.Endpoints(tc.ev) {
				got = append(got, ep.GetId())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Endpoints = %v, want %v", got, tc.want)
			}
		})
	}
}

// BenchmarkEndpoints matches an event against ten endpoints of its tenant:
// event-type patterns, and one CEL filter.
func BenchmarkEndpoints(b *testing.B) {
	eps := []*hooklinev1.Endpoint{
		{Id: "all"},
		{Id: "orders", EventTypes: []string{"order.*"}},
		{Id: "deep", EventTypes: []string{"order.>"}},
		{Id: "users", EventTypes: []string{"user.created", "user.deleted"}},
		{Id: "big_eur", EventTypes: []string{"order.>"}, Filter: `data.amount > 100 && data.currency == "EUR"`},
	}
	for i := range 5 {
		eps = append(eps, &hooklinev1.Endpoint{Id: "other" + string(rune('a'+i)), EventTypes: []string{"invoice.*", "payment.>"}})
	}
	m := New(tenantSource{"acme": eps}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	ev := &hooklinev1.Event{TenantId: "acme", Type: "order.paid", Data: []byte(`{"amount":500,"currency":"EUR","customer":"c_42"}`)}
	b.ReportAllocs()
	for b.Loop() {
		if got := m.Endpoints(ev); len(got) != 4 {
			b.Fatalf("%d endpoints", len(got))
		}
	}
}
