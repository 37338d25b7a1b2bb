package delivery

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"time"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// NewRequest builds the signed POST of delivery d to ep, signed at now, as
// an http.Request (tests only: the Sender writes the request out itself). When
// the endpoint propagates traces, the traceparent of ctx's span is sent;
// baggage never is.
func NewRequest(ctx context.Context, ep *hooklinev1.Endpoint, d *hooklinev1.Delivery, now time.Time) (*http.Request, error) {
	return prepare(ep).request(ctx, d, now)
}

// request builds the signed POST of d, signed at now, as an http.Request:
// the form [NewRequest] returns. The Sender writes [prepared.wire] instead;
// tests read the wire form back and compare it with this one.
func (p *prepared) request(ctx context.Context, d *hooklinev1.Delivery, now time.Time) (*http.Request, error) {
	if p.err != nil {
		return nil, p.err
	}
	body := appendBody(make([]byte, 0, len(d.GetData())+len(d.GetEventType())+64), d)
	a, err := p.sign(ctx, make([]byte, 0, 24+48*len(p.keys)+56), d, body, now)
	if err != nil {
		return nil, err
	}
	all := string(a.vals) // one allocation for the three values
	tsEnd, sigEnd := a.tsEnd, a.sigEnd

	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "", bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	u := *p.url
	req.URL = &u
	req.Host = u.Host
	h := make(http.Header, len(p.static)+4)
	for k, v := range p.static {
		h[k] = v
	}
	strs := make([]string, 4)
	strs[0], strs[1], strs[2] = d.GetEventId(), all[:tsEnd], all[tsEnd:sigEnd]
	h[canonicalID] = strs[0:1:1]
	h[canonicalTimestamp] = strs[1:2:2]
	h[canonicalSignature] = strs[2:3:3]
	if sigEnd < len(all) {
		strs[3] = all[sigEnd:]
		h[canonicalTrace] = strs[3:4:4]
	}
	req.Header = h
	return req, nil
}
