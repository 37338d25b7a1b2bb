package events

import (
	"encoding/json"

	"github.com/hookline/hookline/pkg/httpapi"
	"reflect"
	"strings"
	"testing"
)

var decodeSeeds = []string{
	`{"type":"order.created","data":{"a":1}}`,
	` { "type" : "order.created" , "data" : [1, "x", {"y": null}] , "id" : "e1" , "ordering_key" : "k" } `,
	`{"type":"order.created","data":{"a":1},"id":"x","ordering_key":"k"}`,
	`{"type":"a","data":"\u0000"}`,
	`{"type":"a","data":"a\"b\\"}`,
	`{"type":"a\u0062","data":1}`,
	`{"type":"a","data":1,"id":""}`,
	`{"type":"a","data":1,"id":null,"ordering_key":null}`,
	`{"type":"a","data":1,"id":"x","id":null}`,
	`{"type":"a","data":1,"data":2}`,
	`{"Type":"a","data":1}`,
	`{"type":"a","data":1,"extra":true}`,
	`{"type":1,"data":1}`,
	`{"type":"\xff","data":1,"ordering_key":"\xfe"}`,
	`{"type":null,"data":null}`,
	`{}`, `{"type":"a","data":{}`, `null`, `[]`, `"x"`, ``, " ", "\xff\xfe",
	`{"type":"a","data":1} {}`,
	`{"events":[{"type":"a","data":1},{"type":"b","data":[]}]}`,
	`{"events":[]}`, `{"events":null}`, `{"events":[1,"x",null,{}]}`, `{"events":[],"events":[{}]}`,
	`{"events":[{"type":"a","data":1}],"x":1}`, `{"Events":[]}`,
}

// FuzzFastEvent holds the fast event decoder to encoding/json: whatever
// it accepts, the strict decoder decodes the same way.
func FuzzFastEvent(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !validJSON(body) {
			return
		}
		fast, ok := fastEvent(body)
		if !ok {
			return
		}
		strict, err := strictEvent(body)
		if err != nil {
			t.Fatalf("fast decoder accepted %q, strict refused: %v", body, err)
		}
		if string(fast.Data) != string(strict.Data) {
			t.Fatalf("%q: data %q, strict %q", body, fast.Data, strict.Data)
		}
		fast.Data, strict.Data = nil, nil
		if !reflect.DeepEqual(fast, strict) {
			t.Fatalf("%q: fast %+v, strict %+v", body, fast, strict)
		}
	})
}

// FuzzFastBatch holds the fast batch splitter to encoding/json.
func FuzzFastBatch(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if !validJSON(body) {
			return
		}
		fast, ok := fastBatch(body)
		if !ok {
			return
		}
		var strict struct {
			Events []rawJSON `json:"events"`
		}
		if err := strictJSON(body, &strict); err != nil {
			t.Fatalf("fast splitter accepted %q, strict refused: %v", body, err)
		}
		if len(fast) != len(strict.Events) || strict.Events == nil {
			t.Fatalf("%q: %d events, strict %d", body, len(fast), len(strict.Events))
		}
		for i := range fast {
			if string(fast[i]) != string(strict.Events[i]) {
				t.Fatalf("%q: event %d %q, strict %q", body, i, fast[i], strict.Events[i])
			}
		}
	})
}

func TestFastDecodersTakeTheCommonCase(t *testing.T) {
	t.Parallel()
	body := `{"type":"order.created","data":{"amount":42},"id":"evt_1","ordering_key":"customer-42"}`
	if _, ok := fastEvent([]byte(body)); !ok {
		t.Error("fast event decoder declined a plain event")
	}
	batch := `{"events":[` + strings.Repeat(body+",", 9) + body + `]}`
	if raw, ok := fastBatch([]byte(batch)); !ok || len(raw) != 10 {
		t.Errorf("fast batch splitter: %d events, %v", len(raw), ok)
	}
}

type rawJSON = json.RawMessage

func strictJSON(body []byte, v any) error { return httpapi.DecodeJSON(body, v) }
