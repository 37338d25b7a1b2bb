package delivery

import (
	"bytes"
	"context"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	hooklinev1 "github.com/hookline/hookline/proto/hooklinev1"
)

func benchDelivery() (*hooklinev1.Endpoint, *hooklinev1.Delivery) {
	ep := &hooklinev1.Endpoint{
		Id: "ep_1", Url: "http://127.0.0.1:9/hook", PropagateTrace: true,
		Secrets: []*hooklinev1.Secret{{Value: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"}},
	}
	d := &hooklinev1.Delivery{
		Id: "dlv_1", TenantId: "acme", EventId: "evt_1", EndpointId: "ep_1", EventType: "order.created",
		AcceptedAt: timestamppb.New(time.Unix(1_700_000_000, 0)),
	}
	d.Data = append(append([]byte(`["`), bytes.Repeat([]byte("a"), 1020)...), `"]`...)
	return ep, d
}

// BenchmarkBody encodes the envelope of a 1 KiB event.
func BenchmarkBody(b *testing.B) {
	_, d := benchDelivery()
	b.ReportAllocs()
	for b.Loop() {
		_ = Body(d)
	}
}

// BenchmarkNewRequest builds the signed request of a 1 KiB event: envelope,
// signature, headers.
func BenchmarkNewRequest(b *testing.B) {
	ep, d := benchDelivery()
	now := time.Now()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewRequest(ctx, ep, d, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeliveryMessage encodes and decodes the Delivery protobuf of a
// 1 KiB event, as fan-out and the dispatcher do per delivery.
func BenchmarkDeliveryMessage(b *testing.B) {
	_, d := benchDelivery()
	b.ReportAllocs()
	for b.Loop() {
		raw, err := proto.Marshal(d)
		if err != nil {
			b.Fatal(err)
		}
		var out hooklinev1.Delivery
		if err := proto.Unmarshal(raw, &out); err != nil {
			b.Fatal(err)
		}
	}
}
