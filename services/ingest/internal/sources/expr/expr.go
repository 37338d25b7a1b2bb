// Package expr compiles and evaluates a source's CEL expressions: the
// mappings that compute an inbound event's type, ordering key or id, and the
// filter that drops noise. Expressions are compiled once, when the source is
// created or changed, and evaluated per request.
//
// An expression sees two variables:
//
//	body     dyn                  the request body, parsed as JSON
//	headers  map(string, string)  request headers: lower-case name → first value
//
// for example `headers["x-github-event"] + "." + body.action`. JSON numbers
// are doubles, as in endpoint filters (pkg/filter). The CEL string
// extensions and optional values (`body.?action.orValue("")`) are available.
package expr

import (
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/ext"

	"github.com/hookline/hookline/pkg/filter"
)

// MaxLength is the longest expression accepted, in bytes.
const MaxLength = 4096

// CostLimit bounds the work of one evaluation (CEL cost units).
const CostLimit = 100_000

// ErrInvalid is wrapped by every error [Compile] returns.
var ErrInvalid = errors.New("invalid expression")

var env = func() *cel.Env {
	e, err := cel.NewEnv(
		cel.Variable("body", cel.DynType),
		cel.Variable("headers", cel.MapType(cel.StringType, cel.StringType)),
		cel.CrossTypeNumericComparisons(true),
		cel.DefaultUTCTimeZone(true),
		cel.OptionalTypes(),
		ext.Strings(),
		cel.ParserExpressionSizeLimit(MaxLength),
	)
	if err != nil {
		panic(fmt.Sprintf("expr: build CEL environment: %v", err))
	}
	return e
}()

// Result is the type an expression must produce.
type Result int

// Results.
const (
	// String: a string (numbers are accepted and formatted).
	String Result = iota
	// Bool: a filter's verdict.
	Bool
)

// Program is a compiled expression, safe for concurrent use.
type Program struct {
	src string
	prg cel.Program
}

// Compile parses and type-checks src for a result of kind want. The error,
// wrapping [ErrInvalid], is one line fit for an API client.
func Compile(src string, want Result) (*Program, error) {
	if strings.TrimSpace(src) == "" {
		return nil, fmt.Errorf("%w: expression is empty", ErrInvalid)
	}
	if len(src) > MaxLength {
		return nil, fmt.Errorf("%w: expression is %d bytes long, at most %d allowed", ErrInvalid, len(src), MaxLength)
	}
	ast, iss := env.Compile(src)
	if err := iss.Err(); err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, filter.IssueText(err))
	}
	out := ast.OutputType()
	ok := out.IsExactType(cel.DynType)
	switch want {
	case Bool:
		ok = ok || out.IsExactType(cel.BoolType)
	default:
		ok = ok || out.IsExactType(cel.StringType) || out.IsExactType(cel.IntType) ||
			out.IsExactType(cel.UintType) || out.IsExactType(cel.DoubleType)
	}
	if !ok {
		what := "a string"
		if want == Bool {
			what = "a bool"
		}
		return nil, fmt.Errorf("%w: expression must be %s, not %s", ErrInvalid, what, out)
	}
	prg, err := env.Program(ast, cel.CostLimit(CostLimit))
	if err != nil {
		return nil, fmt.Errorf("%w: %s", ErrInvalid, filter.IssueText(err))
	}
	return &Program{src: src, prg: prg}, nil
}

// String returns the source of p.
func (p *Program) String() string { return p.src }

// Vars are one request's variables.
type Vars struct {
	m map[string]any
}

// NewVars builds the variables of a request: body is its parsed JSON (nil
// when it has none), h its headers.
func NewVars(body any, h http.Header) Vars {
	headers := make(map[string]string, len(h))
	for k, v := range h {
		if len(v) > 0 {
			headers[strings.ToLower(k)] = v[0]
		}
	}
	return Vars{m: map[string]any{"body": body, "headers": headers}}
}

// EvalString evaluates p to a string. Integral numbers are formatted without
// a fraction, so `body.repository.id` yields "1296269".
func (p *Program) EvalString(v Vars) (string, error) {
	out, _, err := p.prg.Eval(v.m)
	if err != nil {
		return "", fmt.Errorf("evaluate %q: %w", p.src, err)
	}
	switch x := out.Value().(type) {
	case string:
		return x, nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1<<53 {
			return strconv.FormatInt(int64(x), 10), nil
		}
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	default:
		return "", fmt.Errorf("evaluate %q: result is %s, not a string", p.src, out.Type().TypeName())
	}
}

// EvalBool evaluates p to a bool.
func (p *Program) EvalBool(v Vars) (bool, error) {
	out, _, err := p.prg.Eval(v.m)
	if err != nil {
		return false, fmt.Errorf("evaluate %q: %w", p.src, err)
	}
	b, ok := out.Value().(bool)
	if !ok {
		return false, fmt.Errorf("evaluate %q: result is %s, not a bool", p.src, out.Type().TypeName())
	}
	return b, nil
}
