package ids

import (
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestNewSortsByTime(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	var got []string
	for i := range 100 {
		got = append(got, NewAt(Event, base.Add(time.Duration(i)*time.Millisecond)))
	}
	if !sort.StringsAreSorted(got) {
		t.Fatal("ids are not sorted by time")
	}
	for _, id := range got {
		if !strings.HasPrefix(id, Event) || len(id) != len(Event)+26 || !ValidEventID(id) {
			t.Fatalf("bad id %q", id)
		}
	}
	if a, b := New(Event), New(Event); a == b {
		t.Fatal("two ids collided")
	}
}

func TestDeliveryForIsStable(t *testing.T) {
	t.Parallel()
	a := DeliveryFor("acme", "evt_1", "ep_1")
	if a != DeliveryFor("acme", "evt_1", "ep_1") || a == DeliveryFor("acme", "evt_1", "ep_2") || a == DeliveryFor("acme2", "evt_1", "ep_1") {
		t.Fatal("DeliveryFor must be a function of its inputs only")
	}
}

func TestDeliveryForAtIsStableAndSortsByTime(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 11, 22, 10, 0, 0, 123_456_789, time.UTC)
	a := DeliveryForAt("acme", "evt_1", "ep_1", at)
	if a != DeliveryForAt("acme", "evt_1", "ep_1", at) {
		t.Fatal("DeliveryForAt must be a function of its inputs only")
	}
	if !strings.HasPrefix(a, Delivery) || len(a) != len(Delivery)+26 {
		t.Fatalf("bad id %q", a)
	}
	for _, other := range []string{
		DeliveryForAt("acme", "evt_1", "ep_2", at),
		DeliveryForAt("acme2", "evt_1", "ep_1", at),
		DeliveryForAt("acme", "evt_2", "ep_1", at),
		DeliveryForAt("acme", "evt_1", "ep_1", at.Add(time.Millisecond)),
	} {
		if other == a {
			t.Fatalf("two inputs gave the same id %q", a)
		}
	}
	// The time part is that of NewAt: ids sort by acceptance time whatever
	// their event and endpoint.
	if got, want := a[len(Delivery):len(Delivery)+10], NewAt(Delivery, at)[len(Delivery):len(Delivery)+10]; got != want {
		t.Fatalf("time part %q, want %q", got, want)
	}
	var got []string
	for i := range 100 {
		got = append(got, DeliveryForAt("acme", NewAt(Event, at), "ep_"+strconv.Itoa(100-i), at.Add(time.Duration(i)*time.Millisecond)))
	}
	if !sort.StringsAreSorted(got) {
		t.Fatal("ids are not sorted by acceptance time")
	}
}

func TestValidEventID(t *testing.T) {
	t.Parallel()
	for _, ok := range []string{"a", "evt_1", "A-b_9", strings.Repeat("x", 64)} {
		if !ValidEventID(ok) {
			t.Errorf("ValidEventID(%q) = false", ok)
		}
	}
	for _, bad := range []string{"", strings.Repeat("x", 65), "a.b", "a b", "ü"} {
		if ValidEventID(bad) {
			t.Errorf("ValidEventID(%q) = true", bad)
		}
	}
}
