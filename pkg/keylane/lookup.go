package keylane

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// headTimeout bounds one head lookup.
const headTimeout = 5 * time.Second

// errCodeMessageNotFound is JetStream's error code for "no message found".
const errCodeMessageNotFound = 10037

// Lookup is the [HeadFunc] of stream, answering what [StreamHead] answers
// but reading only the sequence of the answer: Stream.GetMsg decodes the
// whole message (JSON, then base64 of its headers and payload) on every
// keyed delivery. When the stream allows direct gets (a single replica, see
// pkg/bus) it asks DIRECT.GET, which the server answers with the raw message
// and its sequence in a header, without the JetStream API's JSON and worker
// queue; otherwise STREAM.MSG.GET, from the stream's leader. Both ask for
// the first message of the subject from sequence 1 (next_by_subj).
func Lookup(ctx context.Context, js jetstream.JetStream, stream string) (HeadFunc, error) {
	st, err := js.Stream(ctx, stream)
	if err != nil {
		return nil, fmt.Errorf("open stream %s: %w", stream, err)
	}
	direct := st.CachedInfo().Config.AllowDirect
	opts := js.Options()
	prefix := opts.APIPrefix
	switch {
	case opts.Domain != "":
		prefix = "$JS." + opts.Domain + ".API."
	case prefix == "":
		prefix = jetstream.DefaultAPIPrefix
	}
	if prefix[len(prefix)-1] != '.' {
		prefix += "."
	}
	subject, parse := prefix+"STREAM.MSG.GET."+stream, parseHead
	if direct {
		subject, parse = prefix+"DIRECT.GET."+stream, parseDirectHead
	}
	nc := js.Conn()
	return func(ctx context.Context, subj string) (uint64, bool, error) {
		ctx, cancel := context.WithTimeout(ctx, headTimeout)
		defer cancel()
		req, err := json.Marshal(struct {
			Seq        uint64 `json:"seq"`
			NextBySubj string `json:"next_by_subj"`
		}{1, subj})
		if err != nil {
			return 0, false, fmt.Errorf("get head of %s: %w", subj, err)
		}
		msg, err := nc.RequestWithContext(ctx, subject, req)
		if err != nil {
			return 0, false, fmt.Errorf("get head of %s: %w", subj, err)
		}
		return parse(subj, msg)
	}, nil
}

// parseDirectHead reads the sequence out of a DIRECT.GET answer: the
// message with a Nats-Sequence header, or a "404" status without one.
func parseDirectHead(subj string, msg *nats.Msg) (uint64, bool, error) {
	if status := msg.Header.Get("Status"); status != "" && len(msg.Data) == 0 {
		if status == "404" {
			return 0, false, nil
		}
		return 0, false, fmt.Errorf("get head of %s: status %s %s", subj, status, msg.Header.Get("Description"))
	}
	seq := msg.Header.Get(jetstream.SequenceHeader)
	if seq == "" {
		return 0, false, fmt.Errorf("get head of %s: answer without %s", subj, jetstream.SequenceHeader)
	}
	n, err := strconv.ParseUint(seq, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("get head of %s: %s %q: %w", subj, jetstream.SequenceHeader, seq, err)
	}
	return n, true, nil
}

// parseHead reads the sequence out of a STREAM.MSG.GET answer.
func parseHead(subj string, msg *nats.Msg) (uint64, bool, error) {
	if len(msg.Data) == 0 {
		// A status message (no responders, say), not an API answer.
		return 0, false, fmt.Errorf("get head of %s: empty answer (status %q)", subj, msg.Header.Get("Status"))
	}
	if seq, ok := quickSeq(msg.Data); ok {
		return seq, true, nil
	}
	return decodeHead(subj, msg.Data)
}

// quickSeq finds the message's sequence in a STREAM.MSG.GET answer without
// scanning the rest: {"type":...,"message":{"subject":...,"seq":N,...}}.
// Before "seq" come only the type and the subject, neither of which can hold
// a quote, and the base64 header and data come after it. Anything else (an
// error answer, another layout) is left to the JSON decoder.
func quickSeq(data []byte) (uint64, bool) {
	i := bytes.Index(data, []byte(`"seq":`))
	if i < 0 || bytes.Contains(data[:i], []byte(`"error"`)) || !bytes.Contains(data[:i], []byte(`"message":{`)) {
		return 0, false
	}
	rest := data[i+len(`"seq":`):]
	end := 0
	for end < len(rest) && rest[end] >= '0' && rest[end] <= '9' {
		end++
	}
	if end == 0 || end == len(rest) || (rest[end] != ',' && rest[end] != '}') {
		return 0, false
	}
	seq, err := strconv.ParseUint(string(rest[:end]), 10, 64)
	if err != nil {
		return 0, false
	}
	return seq, true
}

// decodeHead decodes a STREAM.MSG.GET answer as JSON; fields other than
// these are skipped, not decoded.
func decodeHead(subj string, data []byte) (uint64, bool, error) {
	var resp struct {
		Error *struct {
			Code        int    `json:"code"`
			ErrCode     int    `json:"err_code"`
			Description string `json:"description"`
		} `json:"error"`
		Message *struct {
			Seq uint64 `json:"seq"`
		} `json:"message"`
	}
	if err := json.Unmarshal(data, &resp); err != nil {
		return 0, false, fmt.Errorf("get head of %s: decode answer: %w", subj, err)
	}
	switch {
	case resp.Error != nil && resp.Error.ErrCode == errCodeMessageNotFound:
		return 0, false, nil
	case resp.Error != nil:
		return 0, false, fmt.Errorf("get head of %s: %s (code %d, error code %d)", subj, resp.Error.Description, resp.Error.Code, resp.Error.ErrCode)
	case resp.Message == nil:
		return 0, false, fmt.Errorf("get head of %s: answer without message", subj)
	}
	return resp.Message.Seq, true, nil
}
