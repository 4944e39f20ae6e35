package parking

import (
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"
)

// MaxMetadata is the broker's default offset.metadata.max.bytes. Reserve is
// left for the hand-off mark (`clean:<generation>;wait=<ms>`) that shares the
// same commit metadata (DESIGN.md Non-obvious 11).
const (
	MaxMetadata = 4096
	Reserve     = 128
)

// ErrFull says that one more workspace would not fit in the commit metadata.
var ErrFull = errors.New("parking: commit metadata full")

// maxOffsetDigits bounds one offset's length, so that an entry admitted
// once still fits when its offset grows.
const maxOffsetDigits = 19

// Commit is a parking partition's committed state: Offset is the committed
// offset (min of Mark and every Held), Mark the main cursor's watermark m,
// Held the first unsent offset o_V of every listed workspace, Gen the
// highest writer generation the main cursor read, HeldGen the same for
// each resume cursor (the records before o_V), Hold the longest
// unknown-outcome hold of the owner's replica (its own requests, and a
// hand-over wait not yet over), measured before the commit was sent.
type Commit struct {
	Offset  int64
	Mark    int64
	Gen     int64
	Held    map[string]int64
	HeldGen map[string]int64
	Hold    time.Duration
}

// Settled reports whether the parking record of workspace w at offset p is
// settled in this commit: below o_w when w is listed, below m otherwise.
func (c Commit) Settled(w string, p int64) bool {
	if o, ok := c.Held[w]; ok {
		return p < o
	}
	return p < c.Mark
}

func esc(w string) string { return url.QueryEscape(w) }

// entryBound is the longest an entry for w can become.
func entryBound(w string) int { return len(esc(w)) + 2 + 2*maxOffsetDigits }

// Encode returns the metadata tokens of c:
// "m=<m>;g=<gen>[;hold=<ms>][;h=<w>:<o>:<gen>,...]" (workspaces sorted,
// query-escaped, the hold rounded up to the millisecond). Offset is not
// encoded: it is the commit's offset.
func (c Commit) Encode() string {
	var b strings.Builder
	fmt.Fprintf(&b, "m=%d;g=%d", c.Mark, c.Gen)
	if c.Hold > 0 {
		b.WriteString(";hold=")
		b.WriteString(strconv.FormatInt(ceilMillis(c.Hold), 10))
	}
	if len(c.Held) == 0 {
		return b.String()
	}
	b.WriteString(";h=")
	for i, w := range sortedKeys(c.Held) {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%s:%d:%d", esc(w), c.Held[w], c.HeldGen[w])
	}
	return b.String()
}

// ParseCommit reads a parking partition's commit: offset is the committed
// offset, meta its metadata (tokens other than m= and h= are ignored). A
// commit without m= (none yet, or written before parking existed) has
// Mark = offset and nothing held: everything below the offset is settled.
func ParseCommit(offset int64, meta string) (Commit, error) {
	c := Commit{Offset: offset, Mark: offset, Held: map[string]int64{}, HeldGen: map[string]int64{}}
	for _, tok := range strings.Split(meta, ";") {
		switch {
		case strings.HasPrefix(tok, "m="):
			m, err := strconv.ParseInt(tok[2:], 10, 64)
			if err != nil {
				return Commit{}, fmt.Errorf("parking: mark %q: %w", tok, err)
			}
			c.Mark = m
		case strings.HasPrefix(tok, "g="):
			g, err := strconv.ParseInt(tok[2:], 10, 64)
			if err != nil {
				return Commit{}, fmt.Errorf("parking: generation %q: %w", tok, err)
			}
			c.Gen = g
		case strings.HasPrefix(tok, "hold="):
			ms, err := strconv.ParseInt(tok[5:], 10, 64)
			if err != nil || ms < 0 {
				return Commit{}, fmt.Errorf("parking: hold %q", tok)
			}
			c.Hold = time.Duration(ms) * time.Millisecond
		case strings.HasPrefix(tok, "h=") && len(tok) > 2:
			if err := parseHeld(tok[2:], c); err != nil {
				return Commit{}, err
			}
		}
	}
	for _, o := range c.Held {
		if o < c.Offset || o > c.Mark {
			return Commit{}, fmt.Errorf("parking: held offset %d outside [%d, %d]", o, c.Offset, c.Mark)
		}
	}
	return c, nil
}

func ceilMillis(d time.Duration) int64 {
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

func parseHeld(s string, into Commit) error {
	for _, e := range strings.Split(s, ",") {
		f := strings.Split(e, ":")
		if len(f) != 3 {
			return fmt.Errorf("parking: held entry %q", e)
		}
		w, err := url.QueryUnescape(f[0])
		if err != nil {
			return fmt.Errorf("parking: held workspace %q: %w", e, err)
		}
		o, err1 := strconv.ParseInt(f[1], 10, 64)
		g, err2 := strconv.ParseInt(f[2], 10, 64)
		if err1 != nil || err2 != nil {
			return fmt.Errorf("parking: held entry %q", e)
		}
		into.Held[w], into.HeldGen[w] = o, g
	}
	return nil
}

// encodeSet returns "d=<w>,<w>" (sorted, escaped), or "" for no workspace.
func encodeSet(ws map[string][]int64) string {
	if len(ws) == 0 {
		return ""
	}
	keys := sortedKeys(ws)
	for i, w := range keys {
		keys[i] = esc(w)
	}
	return "d=" + strings.Join(keys, ",")
}

// ParseDetoured reads the detoured workspaces from a source partition's
// commit metadata (the d= token; others are ignored).
func ParseDetoured(meta string) ([]string, error) {
	var out []string
	for _, tok := range strings.Split(meta, ";") {
		if !strings.HasPrefix(tok, "d=") || len(tok) == 2 {
			continue
		}
		for _, e := range strings.Split(tok[2:], ",") {
			w, err := url.QueryUnescape(e)
			if err != nil {
				return nil, fmt.Errorf("parking: detoured workspace %q: %w", e, err)
			}
			out = append(out, w)
		}
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
