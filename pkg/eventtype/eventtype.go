// Package eventtype validates event types and matches them against endpoint
// subscriptions. Patterns follow NATS subject wildcards: "order.*" matches
// exactly one more dot-separated token, "order.>" one or more; neither
// matches "order" itself.
package eventtype

import (
	"regexp"
	"strings"
)

var typeRE = regexp.MustCompile(`^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$`)

// MaxLen bounds an event type's length.
const MaxLen = 200

// Valid reports whether t is a valid event type (CONTRACT 2.3).
func Valid(t string) bool { return len(t) <= MaxLen && typeRE.MatchString(t) }

// ValidPattern reports whether p is a valid subscription pattern: tokens of
// an event type, "*" for any one token, and ">" only as the last token.
func ValidPattern(p string) bool {
	if p == "" || len(p) > MaxLen {
		return false
	}
	tokens := strings.Split(p, ".")
	for i, tok := range tokens {
		switch {
		case tok == "*":
		case tok == ">":
			if i != len(tokens)-1 {
				return false
			}
		case !typeRE.MatchString(tok):
			return false
		}
	}
	return true
}

// Match reports whether eventType matches pattern p.
func Match(p, eventType string) bool {
	for {
		ptok, prest, pmore := strings.Cut(p, ".")
		ttok, trest, tmore := strings.Cut(eventType, ".")
		switch ptok {
		case ">":
			return ttok != ""
		case "*":
		default:
			if ptok != ttok {
				return false
			}
		}
		if !pmore || !tmore {
			return pmore == tmore
		}
		p, eventType = prest, trest
	}
}

// MatchAny reports whether eventType matches any pattern; no patterns match
// every type.
func MatchAny(patterns []string, eventType string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, p := range patterns {
		if Match(p, eventType) {
			return true
		}
	}
	return false
}
