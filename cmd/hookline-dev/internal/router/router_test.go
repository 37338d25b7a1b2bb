package router

import "testing"

func TestIsDeadletterPath(t *testing.T) {
	t.Parallel()
	cases := map[string]bool{
		"/v1/tenants/acme/dead-letters":             true,
		"/v1/tenants/acme/dead-letters/dl_1":        true,
		"/v1/tenants/acme/dead-letters/dl_1/replay": true,
		"/v1/tenants/acme/replays":                  true,
		"/v1/tenants/acme/replays/rpl_1":            true,
		"/v1/tenants/acme/events":                   false,
		"/v1/tenants/acme":                          false,
		"/v1/tenants":                               false,
		"/v1/tenants/dead-letters":                  false,
		"/v1/rejected-events":                       false,
	}
	for path, want := range cases {
		if got := IsDeadletterPath(path); got != want {
			t.Errorf("IsDeadletterPath(%q) = %v, want %v", path, got, want)
		}
	}
}
