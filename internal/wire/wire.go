// Package wire owns the Cohort Sync API request body: its exact encoding and
// the byte arithmetic the batcher uses to keep every body under the size cap,
// and the cap's default and one-member fit check (DefaultMaxBodyBytes, Fits).
//
// The encoder and the size functions are two views of one format; a test and
// a fuzz target check that they agree to the byte.
package wire

import (
	"unicode/utf8"

	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// Request is one Cohort Sync API call: one action on one cohort, with its
// members. Members are sent in order; the caller keeps them unique.
type Request struct {
	Header
	UIDs []string
}

// Header is the identity of a request without its members: what must be equal
// for two members to share a request body.
//
// Workspace names the MoEngage workspace the request is for ("" = the
// sink's default workspace). It is not part of the body: the API names the
// workspace by the request's credentials (Basic-auth user and MOE-APPKEY),
// which the sink picks per request from it. EnvelopeSize, BodySize, Fits
// and AppendBody ignore it.
type Header struct {
	Workspace         string
	Action            event.Action
	Partner           string
	CohortID          string
	CohortName        string
	CohortDescription string // omitted from the body when empty
}

// Rejection is a member the API refused on its own: the worker dead-letters it.
type Rejection struct {
	UID    string
	Reason string // human-readable; the API's error type and message
}

const (
	memberOpen  = `{"uid":`
	memberClose = `}`
)

// EnvelopeSize is the length of the body for h with no members:
//
//	{"action":A,"partner":P,"parameters":{"cohort_name":N,"cohort_id":I[,"cohort_description":D],"members":[]}}
func EnvelopeSize(h Header) int {
	n := len(`{"action":`) + QuotedLen(string(h.Action)) +
		len(`,"partner":`) + QuotedLen(h.Partner) +
		len(`,"parameters":{"cohort_name":`) + QuotedLen(h.CohortName) +
		len(`,"cohort_id":`) + QuotedLen(h.CohortID) +
		len(`,"members":[]}}`)
	if h.CohortDescription != "" {
		n += len(`,"cohort_description":`) + QuotedLen(h.CohortDescription)
	}
	return n
}

// MemberSize is the length of one encoded member, {"uid":"..."}, without the
// separating comma.
func MemberSize(uid string) int {
	return len(memberOpen) + QuotedLen(uid) + len(memberClose)
}

// BodySize is the length of a body with the given envelope size and members
// whose MemberSize values add up to memberBytes.
func BodySize(envelope, members, memberBytes int) int {
	if members == 0 {
		return envelope
	}
	return envelope + memberBytes + members - 1
}

// SingleBodyBound is an upper bound of the body size of a request with
// header h and the single member uid, computed from lengths alone (each byte
// quotes to at most 6: \u00XX): a caller can skip the exact size when the
// bound is already within its cap.
func SingleBodyBound(h Header, uid string) int {
	n := len(h.Action) + len(h.Partner) + len(h.CohortID) + len(h.CohortName) + len(h.CohortDescription) + len(uid)
	return len(`{"action":,"partner":,"parameters":{"cohort_name":,"cohort_id":,"cohort_description":,"members":[{"uid":}]}}`) +
		6*2 + 6*n // the quotes of six strings, and every byte escaped
}

// DefaultMaxBodyBytes is the default request body cap (BATCH_MAX_BYTES):
// 128000 bytes is under the API's documented 128 KB whichever way "KB" is
// read. The batcher, the sink and the consumer default to it.
const DefaultMaxBodyBytes = 128000

// Fits reports whether the body of a request with header h and the single
// member uid is at most maxBytes long. A member that does not fit alone can
// never be sent (the consumer dead-letters its record as too_large).
func Fits(h Header, uid string, maxBytes int) bool {
	if SingleBodyBound(h, uid) <= maxBytes {
		return true // the common case, without quoting five strings per change
	}
	return BodySize(EnvelopeSize(h), 1, MemberSize(uid)) <= maxBytes
}

// AppendBody appends the compact JSON body of r to dst.
func AppendBody(dst []byte, r Request) []byte {
	dst = append(dst, `{"action":`...)
	dst = AppendQuoted(dst, string(r.Action))
	dst = append(dst, `,"partner":`...)
	dst = AppendQuoted(dst, r.Partner)
	dst = append(dst, `,"parameters":{"cohort_name":`...)
	dst = AppendQuoted(dst, r.CohortName)
	dst = append(dst, `,"cohort_id":`...)
	dst = AppendQuoted(dst, r.CohortID)
	if r.CohortDescription != "" {
		dst = append(dst, `,"cohort_description":`...)
		dst = AppendQuoted(dst, r.CohortDescription)
	}
	dst = append(dst, `,"members":[`...)
	for i, u := range r.UIDs {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = append(dst, memberOpen...)
		dst = AppendQuoted(dst, u)
		dst = append(dst, memberClose...)
	}
	return append(dst, `]}}`...)
}

// Size returns len(AppendBody(nil, r)) without encoding.
func Size(r Request) int {
	mb := 0
	for _, u := range r.UIDs {
		mb += MemberSize(u)
	}
	return BodySize(EnvelopeSize(r.Header), len(r.UIDs), mb)
}

const hexDigits = "0123456789abcdef"

// AppendQuoted appends s as a JSON string. It escapes '"', '\\', control
// characters, U+2028 and U+2029, and replaces invalid UTF-8 with U+FFFD, as
// encoding/json does (without its HTML escaping).
func AppendQuoted(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// QuotedLen is len(AppendQuoted(nil, s)) without encoding.
func QuotedLen(s string) int {
	n := 2
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c >= 0x20 && c != '"' && c != '\\':
				n++
			case c == '"' || c == '\\' || c == '\n' || c == '\r' || c == '\t':
				n += 2
			default:
				n += 6
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			n += 6
		case r == '\u2028' || r == '\u2029':
			n += 6
		default:
			n += size
		}
		i += size
	}
	return n
}
