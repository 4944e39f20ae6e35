package consumer

import (
	"testing"
	"time"
)

// TestHandOffWait: only the mark of the immediately previous generation
// proves a clean hand-over; a mark carrying the rest of a wait is honoured
// up to the bound; anything else waits the bound.
func TestHandOffWait(t *testing.T) {
	const max = 30 * time.Second
	want := cleanMark(5)
	for _, c := range []struct {
		meta string
		wait time.Duration
	}{
		{"clean:5", 0},
		{"clean:5;wait=1500", 1500 * time.Millisecond},
		{"clean:5;wait=0", 0},
		{"clean:5;wait=90000", max}, // more than the bound: not trusted beyond it
		{"clean:5;wait=-1", max},
		{"clean:5;wait=x", max},
		{"clean:51", max}, // another generation
		{"clean:4", max},  // an older generation: its owner in 5 proved nothing
		{"clean:4;wait=10", max},
		{"", max}, // no mark, no offset, or unreadable
		{"clean:5 ", max},
	} {
		if got := handOffWait(c.meta, want, max); got != c.wait {
			t.Errorf("handOffWait(%q, %q) = %s, want %s", c.meta, want, got, c.wait)
		}
	}
}
