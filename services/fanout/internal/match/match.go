// Package match decides which endpoints receive an event: the endpoint's
// event_types patterns, then its CEL filter, or, for a test event, exactly the
// endpoint it names.
package match

import (
	"log/slog"
	"sync"

	"github.com/hookline/hookline/pkg/eventtype"
	"github.com/hookline/hookline/pkg/filter"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// Source lists a tenant's endpoints and finds one by id. [endpoints.Cache]
// implements it; ForTenant's slice must not be modified.
type Source interface {
	ForTenant(tenant string) []*hooklinev1.Endpoint
}

// Matcher matches events against endpoints, compiling each endpoint's filter
// once per endpoint version.
type Matcher struct {
	src Source
	log *slog.Logger

	mu       sync.Mutex
	programs map[string]compiled // by endpoint id
}

type compiled struct {
	version uint64
	expr    string
	prog    *filter.Program // nil when the filter did not compile
}

// New returns a Matcher over src.
func New(src Source, log *slog.Logger) *Matcher {
	return &Matcher{src: src, log: log, programs: map[string]compiled{}}
}

// Endpoints returns the endpoints ev is to be delivered to, disabled ones
// included (they get a dead letter instead of a delivery).
func (m *Matcher) Endpoints(ev *hooklinev1.Event) []*hooklinev1.Endpoint {
	all := m.src.ForTenant(ev.GetTenantId())
	if only := ev.GetOnlyEndpointId(); only != "" {
		for _, ep := range all {
			if ep.GetId() == only && !ep.GetDeleted() {
				return []*hooklinev1.Endpoint{ep}
			}
		}
		return nil
	}
	var out []*hooklinev1.Endpoint
	for _, ep := range all {
		if ep.GetDeleted() || !eventtype.MatchAny(ep.GetEventTypes(), ev.GetType()) {
			continue
		}
		if ep.GetFilter() != "" && !m.filterMatch(ep, ev) {
			continue
		}
		out = append(out, ep)
	}
	return out
}

func (m *Matcher) filterMatch(ep *hooklinev1.Endpoint, ev *hooklinev1.Event) bool {
	prog := m.program(ep)
	if prog == nil {
		return false
	}
	return prog.Match(ev.GetType(), ev.GetData(), ev.GetOrderingKey())
}

func (m *Matcher) program(ep *hooklinev1.Endpoint) *filter.Program {
	m.mu.Lock()
	defer m.mu.Unlock()
	if c, ok := m.programs[ep.GetId()]; ok && c.version == ep.GetVersion() && c.expr == ep.GetFilter() {
		return c.prog
	}
	prog, err := filter.Compile(ep.GetFilter())
	if err != nil {
		// Ingest rejects filters that do not compile; one here came from
		// an older or newer Hookline. It matches nothing.
		m.log.Error("endpoint filter does not compile, endpoint matches nothing",
			"endpoint_id", ep.GetId(), "tenant_id", ep.GetTenantId(), "err", err)
		prog = nil
	}
	m.programs[ep.GetId()] = compiled{version: ep.GetVersion(), expr: ep.GetFilter(), prog: prog}
	return prog
}
