package delivery

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"

	"github.com/hookline/hookline/pkg/apitime"
	"github.com/hookline/hookline/pkg/signature"
	"github.com/hookline/hookline/pkg/version"
	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

// Header names of the request (CONTRACT 3.1).
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
	headerTrace     = "traceparent"
)

// Body is the request body, byte for byte:
// {"type":...,"timestamp":...,"data":...} with data as accepted.
func Body(d *hooklinev1.Delivery) []byte {
	typ, _ := json.Marshal(d.GetEventType()) // a string always marshals
	ts := apitime.Format(d.GetAcceptedAt().AsTime())
	data := d.GetData()
	if len(data) == 0 {
		data = []byte("null")
	}
	var b bytes.Buffer
	b.Grow(len(typ) + len(ts) + len(data) + 40)
	b.WriteString(`{"type":`)
	b.Write(typ)
	b.WriteString(`,"timestamp":"`)
	b.WriteString(ts)
	b.WriteString(`","data":`)
	b.Write(data)
	b.WriteByte('}')
	return b.Bytes()
}

// ActiveSecrets returns the endpoint's secrets that have not expired at now,
// in the endpoint's order (newest first).
func ActiveSecrets(ep *hooklinev1.Endpoint, now time.Time) []string {
	out := make([]string, 0, len(ep.GetSecrets()))
	for _, s := range ep.GetSecrets() {
		if s.GetExpiresAt() != nil && !s.GetExpiresAt().AsTime().After(now) {
			continue
		}
		out = append(out, s.GetValue())
	}
	return out
}

// reserved headers an endpoint's own headers may not override.
func reserved(name string) bool {
	n := strings.ToLower(name)
	return strings.HasPrefix(n, "webhook-") || n == "content-type" || n == "user-agent" ||
		n == "content-length" || n == "host" || n == headerTrace || n == "tracestate"
}

// NewRequest builds the signed POST of delivery d to ep, signed at now. When
// the endpoint propagates traces, the traceparent of ctx's span is sent;
// baggage never is.
func NewRequest(ctx context.Context, ep *hooklinev1.Endpoint, d *hooklinev1.Delivery, now time.Time) (*http.Request, error) {
	body := Body(d)
	sig, err := signature.SignAll(ActiveSecrets(ep, now), d.GetEventId(), now, body)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, ep.GetUrl(), bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	h := req.Header
	// Canonical keys: the transport checks "User-Agent" before adding its
	// own. Header names are case-insensitive on the wire.
	h.Set("Content-Type", "application/json")
	h.Set("User-Agent", version.UserAgent())
	h.Set(HeaderID, d.GetEventId())
	h.Set(HeaderTimestamp, strconv.FormatInt(now.Unix(), 10))
	h.Set(HeaderSignature, sig)
	if ep.GetPropagateTrace() {
		carrier := propagation.MapCarrier{}
		propagation.TraceContext{}.Inject(ctx, carrier)
		if tp := carrier.Get(headerTrace); tp != "" {
			h[headerTrace] = []string{tp}
		}
	}
	for k, v := range ep.GetHeaders() {
		if !reserved(k) {
			h.Set(k, v)
		}
	}
	return req, nil
}
