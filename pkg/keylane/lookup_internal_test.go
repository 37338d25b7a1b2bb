package keylane

import (
	"testing"

	"github.com/nats-io/nats.go"
)

func TestParseHead(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, answer string
		seq          uint64
		found, err   bool
	}{
		{"message", `{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"a.b","seq":42,"hdrs":"eyJzZXEiOjF9","data":"InNlcSI6OTki","time":"2026-11-22T10:00:00Z"}}`, 42, true, false},
		{"spaced", `{"type": "x", "message": {"subject": "a.b", "seq": 7, "data": "AA=="}}`, 7, true, false},
		{"not found", `{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","error":{"code":404,"err_code":10037,"description":"no message found"}}`, 0, false, false},
		{"other error", `{"type":"x","error":{"code":503,"err_code":10008,"description":"jetstream unavailable"}}`, 0, false, true},
		{"garbage", `not json`, 0, false, true},
		{"no message", `{"type":"x"}`, 0, false, true},
	} {
		seq, found, err := parseHead("s", &nats.Msg{Data: []byte(tc.answer)})
		if seq != tc.seq || found != tc.found || (err != nil) != tc.err {
			t.Errorf("%s: %d, %v, %v; want %d, %v, error %v", tc.name, seq, found, err, tc.seq, tc.found, tc.err)
		}
	}
}
