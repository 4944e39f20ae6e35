package workspace

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Workspace is one workspace of the registry: its ID (the Basic-auth user
// and MOE-APPKEY), data center and budget, and its Data API key, which only
// Key reveals. Printing a Workspace (fmt, slog) never shows the key.
type Workspace struct {
	// ID is the workspace ID, the file name's stem (ValidID).
	ID string
	// DC is the data center: <ID>.dc, else Options.DefaultDC.
	DC string
	// RateLimitRPM is the budget in requests per minute: <ID>.rate_limit_rpm,
	// else Options.DefaultRPM.
	RateLimitRPM float64
	key          string
}

// Key returns the workspace's Data API key.
func (w Workspace) Key() string { return w.key }

// String describes w without its key.
func (w Workspace) String() string {
	return fmt.Sprintf("workspace %s (dc %q, %v rpm, key [REDACTED])", w.ID, w.DC, w.RateLimitRPM)
}

// GoString is String: %#v must not show the key either.
func (w Workspace) GoString() string { return w.String() }

// Format prints String for every verb, so that no verb (%d, %x, %+v)
// reaches the unexported key field.
func (w Workspace) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, w.String()) }

// LogValue logs the workspace without its key.
func (w Workspace) LogValue() slog.Value {
	return slog.GroupValue(slog.String("id", w.ID), slog.String("dc", w.DC), slog.Float64("rate_limit_rpm", w.RateLimitRPM))
}

// What says what changed about one workspace; several bits may be set
// (a key rotated together with its data center, say). Added and Removed
// are never set with another bit.
type What uint8

// The kinds of change.
const (
	Added What = 1 << iota
	Removed
	KeyRotated
	DCChanged
	LimitsChanged
)

// String names the bits set in w, joined by "+", e.g. "key_rotated+dc_changed".
func (w What) String() string {
	names := []string{"added", "removed", "key_rotated", "dc_changed", "limits_changed"}
	var parts []string
	for i, n := range names {
		if w&(1<<i) != 0 {
			parts = append(parts, n)
		}
	}
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, "+")
}

// Change is what changed about one workspace in one generation.
type Change struct {
	ID   string
	What What
}

// Update is one new generation of the registry and what changed since the
// previous one, in ID order.
type Update struct {
	Generation uint64
	Changes    []Change
}

// Problem is a file of the directory (or the directory itself) that the
// registry cannot use. Err's text names the file and the reason, never a
// key. A problem with a workspace's file keeps that workspace's last good
// value (or keeps a new workspace out until it is fixed); it never touches
// another workspace.
type Problem struct {
	// File is the file's name in the directory; "" for the directory.
	File string
	// ID is the workspace the file belongs to; "" when the name is not a
	// workspace's file.
	ID  string
	Err error
}

// The three kinds of file, by suffix.
const (
	suffixKey = ".key"
	suffixDC  = ".dc"
	suffixRPM = ".rate_limit_rpm"
)

// maxIDLen bounds a workspace ID. MoEngage workspace IDs (app IDs) are about
// 24 upper-case letters and digits, with "_DEBUG" for test workspaces.
const maxIDLen = 128

// maxFile bounds what is read of one file: a key, a data center or a number.
const maxFile = 64 << 10

// ValidID reports whether id is a valid workspace ID: 1 to 128 ASCII
// letters, digits, '_' or '-', starting with a letter or a digit. This
// accepts every MoEngage workspace ID (upper-case letters and digits, a
// "_DEBUG" suffix for test workspaces), keeps IDs file-name safe, and rules
// out what Basic auth or a header value cannot carry (a colon, white space,
// control characters).
func ValidID(id string) bool {
	if id == "" || len(id) > maxIDLen || !alnum(id[0]) {
		return false
	}
	for i := 1; i < len(id); i++ {
		if c := id[i]; !alnum(c) && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func alnum(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
}

// kind is what a file of the directory is to the registry.
type kind uint8

const (
	kindOther kind = iota // not a workspace's file (a problem)
	kindKey
	kindDC
	kindRPM
)

// classify splits a file name into a workspace ID and a kind; err is set
// for a name that is not a workspace's file or whose ID is invalid.
func classify(name string) (id string, k kind, err error) {
	for _, s := range []struct {
		suffix string
		k      kind
	}{{suffixKey, kindKey}, {suffixDC, kindDC}, {suffixRPM, kindRPM}} {
		if stem, ok := strings.CutSuffix(name, s.suffix); ok {
			if !ValidID(stem) {
				return "", kindOther, fmt.Errorf("%q is not a valid workspace ID (1 to %d letters, digits, '_' or '-', starting with a letter or digit); ignored", stem, maxIDLen)
			}
			return stem, s.k, nil
		}
	}
	return "", kindOther, errors.New("not a workspace file (<workspace_id>.key, .dc or .rate_limit_rpm); ignored")
}

// parseKey checks a key file's content, with the rules of the *_FILE
// secrets: trailing newlines removed, empty or control characters refused.
// Its errors never hold the content.
func parseKey(content string) (string, error) {
	v := strings.TrimRight(content, "\r\n")
	switch {
	case v == "":
		return "", errors.New("empty (half-written?)")
	case strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f }):
		return "", errors.New("contains control characters (half-written or not a key?)")
	}
	return v, nil
}

// parseDC checks a data center file's content with valid (Options.ValidDC).
func parseDC(content string, valid func(string) error) (string, error) {
	v := strings.TrimSpace(content)
	if v == "" {
		return "", errors.New("empty (half-written?)")
	}
	if err := valid(v); err != nil {
		return "", err
	}
	return v, nil
}

// parseRPM checks a budget file's content: a finite number > 0.
func parseRPM(content string) (float64, error) {
	v := strings.TrimSpace(content)
	if v == "" {
		return 0, errors.New("empty (half-written?)")
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || f <= 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("%s is not a finite number of requests per minute > 0", shortValue(v))
	}
	return f, nil
}

// OneOf returns a data center validator accepting exactly dcs (the worker
// passes config.DataCenters, MOENGAGE_DC's list).
func OneOf(dcs []string) func(string) error {
	dcs = slices.Clone(dcs)
	return func(dc string) error {
		if slices.Contains(dcs, dc) {
			return nil
		}
		return fmt.Errorf("%s is not one of %s", shortValue(dc), strings.Join(dcs, ", "))
	}
}

// shortValue quotes v for an error when it is short and plain, else says
// only its length: a key pasted into the wrong file must not reach a log.
func shortValue(v string) string {
	if len(v) <= 12 && !strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r >= 0x7f }) {
		return strconv.Quote(v)
	}
	return fmt.Sprintf("a value of %d bytes", len(v))
}
