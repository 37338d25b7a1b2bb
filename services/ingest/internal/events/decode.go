package events

import (
	"encoding/json"
	"unicode/utf8"
)

// The request decoders here take the common case (well-formed JSON, the
// field names spelled exactly, strings without escapes) in two passes over
// the body: json.Valid, then a walk that only finds where values start and
// end. Anything else returns ok=false, and the caller decodes strictly with
// httpapi.DecodeJSON, which gives the same result for what the fast path
// accepts and names the fault for what it does not. encoding/json alone
// scanned each byte of event data four times (the batch's array, its raw
// elements, each event, its raw data).

// fastEvent decodes an event request body known to be valid JSON. ok is
// false when the strict decoder must decide.
func fastEvent(body []byte) (in Input, ok bool) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return Input{}, false
	}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == '}' {
		return in, true
	}
	for i < len(body) {
		if body[i] != '"' {
			return Input{}, false
		}
		end := skipString(body, i)
		if end < 0 {
			return Input{}, false
		}
		name := body[i+1 : end-1]
		i = skipSpace(body, end)
		if i >= len(body) || body[i] != ':' {
			return Input{}, false
		}
		start := skipSpace(body, i+1)
		end = skipValue(body, start)
		if end < 0 {
			return Input{}, false
		}
		value := body[start:end]
		switch string(name) {
		case "type":
			s, _, ok := plainString(value)
			if !ok {
				return Input{}, false
			}
			in.Type = s
		case "data":
			in.Data, in.jsonChecked = value, true
		case "id":
			s, null, ok := plainString(value)
			if !ok || (!null && s == "") {
				return Input{}, false // the strict decoder names the empty id
			}
			in.ID = s
		case "ordering_key":
			s, _, ok := plainString(value)
			if !ok {
				return Input{}, false
			}
			in.OrderingKey = s
		default:
			// An unknown field, or a known one spelled otherwise
			// (encoding/json matches names case-insensitively).
			return Input{}, false
		}
		i = skipSpace(body, end)
		if i >= len(body) {
			return Input{}, false
		}
		switch body[i] {
		case ',':
			i = skipSpace(body, i+1)
		case '}':
			if skipSpace(body, i+1) != len(body) {
				return Input{}, false
			}
			return in, true
		default:
			return Input{}, false
		}
	}
	return Input{}, false
}

// fastBatch splits a batch request body known to be valid JSON,
// {"events":[...]}, into its raw events. ok is false when the strict
// decoder must decide.
func fastBatch(body []byte) (events [][]byte, ok bool) {
	i := skipSpace(body, 0)
	if i >= len(body) || body[i] != '{' {
		return nil, false
	}
	i = skipSpace(body, i+1)
	if i >= len(body) || body[i] != '"' {
		return nil, false
	}
	end := skipString(body, i)
	if end < 0 || string(body[i+1:end-1]) != "events" {
		return nil, false
	}
	i = skipSpace(body, end)
	if i >= len(body) || body[i] != ':' {
		return nil, false
	}
	i = skipSpace(body, i+1)
	if i >= len(body) || body[i] != '[' {
		return nil, false
	}
	events = [][]byte{}
	i = skipSpace(body, i+1)
	if i < len(body) && body[i] == ']' {
		i++
	} else {
		for {
			end := skipValue(body, i)
			if end < 0 {
				return nil, false
			}
			events = append(events, body[i:end])
			i = skipSpace(body, end)
			if i >= len(body) {
				return nil, false
			}
			if body[i] == ']' {
				i++
				break
			}
			if body[i] != ',' {
				return nil, false
			}
			i = skipSpace(body, i+1)
		}
	}
	i = skipSpace(body, i)
	if i >= len(body) || body[i] != '}' || skipSpace(body, i+1) != len(body) {
		return nil, false // another field, or a repeated one
	}
	return events, true
}

// plainString returns a JSON string value without escapes, or reports
// null. ok is false for anything else, including invalid UTF-8 (which
// encoding/json would replace).
func plainString(v []byte) (s string, null, ok bool) {
	if string(v) == "null" {
		return "", true, true
	}
	if len(v) < 2 || v[0] != '"' {
		return "", false, false
	}
	inner := v[1 : len(v)-1]
	for _, c := range inner {
		if c == '\\' || c == '"' {
			return "", false, false
		}
	}
	if !utf8.Valid(inner) {
		return "", false, false
	}
	return string(inner), false, true
}

func skipSpace(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\r', '\n':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the index just past the string starting at b[i] in
// valid JSON, or -1 when it does not end.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index just past the value starting at b[i] in
// valid JSON, or -1 when there is none.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for ; i < len(b); i++ {
			switch b[i] {
			case '"':
				end := skipString(b, i)
				if end < 0 {
					return -1
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
		}
		return -1
	case ',', ':', '}', ']':
		return -1
	}
	for ; i < len(b); i++ {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\r', '\n':
			return i
		}
	}
	return i
}

// validJSON is json.Valid; the fast decoders require it.
func validJSON(b []byte) bool { return json.Valid(b) }
