package config

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
)

// redacted is what every rendering of a non-empty Secret prints.
const redacted = "[REDACTED]"

// Secret holds a credential. Every way of printing it — String, GoString,
// Format (all verbs, so %v, %+v, %#v, %s, %q, %x … of a struct holding one),
// MarshalJSON, MarshalText and LogValue — renders "[REDACTED]", or "" when
// the secret is empty, so that an operator can tell "set" from "unset"
// without seeing the value. Only Reveal returns the value; call it at the
// one place that needs the credential (building the request or the SASL
// mechanism).
//
// The zero Secret is empty. Secrets are immutable values, safe for
// concurrent use, and comparable with ==.
type Secret struct{ v string }

// NewSecret wraps s in a Secret.
func NewSecret(s string) Secret { return Secret{s} }

// Reveal returns the secret value. It is the only way to get it back.
func (s Secret) Reveal() string { return s.v }

func (s Secret) redacted() string {
	if s.v == "" {
		return ""
	}
	return redacted
}

// String implements fmt.Stringer: "[REDACTED]", or "" when s is empty.
func (s Secret) String() string { return s.redacted() }

// GoString implements fmt.GoStringer: "[REDACTED]", or "" when s is empty.
func (s Secret) GoString() string { return s.redacted() }

// Format implements fmt.Formatter. It writes "[REDACTED]" (or nothing when
// s is empty) for every verb and flag, so no verb can reach the value.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, s.redacted()) }

// MarshalJSON implements json.Marshaler: the JSON string "[REDACTED]", or ""
// when s is empty.
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(strconv.Quote(s.redacted())), nil }

// MarshalText implements encoding.TextMarshaler: "[REDACTED]", or "" when s
// is empty.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.redacted()), nil }

// LogValue implements slog.LogValuer: the string "[REDACTED]", or "" when s
// is empty.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.redacted()) }
