// Package filter compiles and evaluates endpoint filters (CONTRACT 2.2): CEL
// expressions over an event that must be true for the event to be delivered.
//
// An expression sees three variables:
//
//	type          string  the event type, e.g. "order.created"
//	data          dyn     the event's JSON data
//	ordering_key  string  the event's ordering key ("" when it has none)
//
// data follows CEL's JSON mapping (google.protobuf.Value): objects are maps
// with string keys, arrays are lists, and every JSON number is a double, so
// `data.amount > 100` and `data.amount == 150` work (numeric comparisons
// across int and double are enabled), while arithmetic mixing the two needs a
// double literal: `data.amount * 1.1 > 200.0`, or `data.n + 1.0`.
//
// [Compile] type-checks at create time and requires a bool result. At
// delivery time any evaluation error — a missing field, a wrong type, the
// cost limit — makes [Program.Match] false: a filter that cannot say yes
// says no. Besides the standard library, the CEL string extensions
// (lowerAscii, split, ...) and optional values (`data.?x.orValue(0.0)`) are
// available.
package filter

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/ext"
)

// MaxLength is the longest expression [Compile] accepts, in bytes.
const MaxLength = 4096

// CostLimit bounds the work of one evaluation (CEL cost units, roughly one
// per operation or list element visited); beyond it [Program.Match] is false.
const CostLimit = 100_000

// ErrInvalid is wrapped by every error [Compile] returns.
var ErrInvalid = errors.New("invalid filter")

// env is immutable once built and safe for concurrent use.
var env = func() *cel.Env {
	e, err := cel.NewEnv(
		cel.Variable("type", cel.StringType),
		cel.Variable("data", cel.DynType),
		cel.Variable("ordering_key", cel.StringType),
		cel.CrossTypeNumericComparisons(true),
		cel.DefaultUTCTimeZone(true),
		cel.OptionalTypes(),
		ext.Strings(),
		cel.ParserExpressionSizeLimit(MaxLength),
	)
	if err != nil {
		panic(fmt.Sprintf("filter: build CEL environment: %v", err))
	}
	return e
}()

// Program is a compiled filter. It is safe for concurrent use.
type Program struct {
	expr string
	prg  cel.Program
}

// Compile parses and type-checks expr. The error, which wraps [ErrInvalid],
// is one human-readable line ("1:13: Syntax error: ...") fit for an API
// client.
func Compile(expr string) (*Program, error) {
	if strings.TrimSpace(expr) == "" {
		return nil, fmt.Errorf("%w: expression is empty", ErrInvalid)
	}
	if len(expr) > MaxLength {
		return nil, fmt.Errorf("%w: expression is %d bytes long, at most %d allowed", ErrInvalid, len(expr), MaxLength)
	}
	ast, iss := env.Compile(expr)
	if err := iss.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, IssueText(err))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, fmt.Errorf("%w: expression must be a bool, not %s (compare it, e.g. data.flag == true)", ErrInvalid, ast.OutputType())
	}
	prg, err := env.Program(ast, cel.CostLimit(CostLimit))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, IssueText(err))
	}
	return &Program{expr: expr, prg: prg}, nil
}

// IssueText is the first line of a CEL error's issue list, without its
// "ERROR: <input>:" prefix: what a 422 shows of a bad expression.
func IssueText(err error) string {
	msg := err.Error()
	msg, _, _ = strings.Cut(msg, "\n")
	msg = strings.TrimPrefix(msg, "ERROR: ")
	msg = strings.TrimSuffix(msg, " (in container '')")
	return strings.TrimPrefix(msg, "<input>:")
}

// String returns the expression p was compiled from.
func (p *Program) String() string { return p.expr }

// Event is an event's variables, decoded once so that several programs can
// match it without decoding its data again.
type Event struct {
	vars map[string]any
}

// NewEvent decodes data, the event's JSON data; data that is empty or not
// JSON becomes null, so expressions over `type` and `ordering_key` still work
// and those over data are false.
func NewEvent(eventType string, data []byte, orderingKey string) *Event {
	var v any
	if len(data) > 0 {
		if err := json.Unmarshal(data, &v); err != nil {
			v = nil
		}
	}
	return &Event{vars: map[string]any{"type": eventType, "data": v, "ordering_key": orderingKey}}
}

// Match reports whether the event passes the filter: false when the
// expression is false or cannot be evaluated.
func (p *Program) Match(eventType string, data []byte, orderingKey string) bool {
	return p.MatchEvent(NewEvent(eventType, data, orderingKey))
}

// MatchEvent is [Program.Match] for an event already decoded by [NewEvent].
func (p *Program) MatchEvent(e *Event) bool {
	out, _, err := p.prg.Eval(e.vars)
	if err != nil {
		return false
	}
	b, ok := out.Value().(bool)
	return ok && b
}
