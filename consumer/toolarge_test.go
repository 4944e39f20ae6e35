package consumer

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"unicode/utf8"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

type nopSink struct{}

func (nopSink) Send(context.Context, wire.Request) ([]wire.Rejection, error) { return nil, nil }

// handleHarness runs handle on records of one partition, with a DLQ over an
// in-memory topic and a (not running) batcher whose body cap is Fits'.
type handleHarness struct {
	c   *Consumer
	w   *fakeWriter
	tr  *tracker
	dec *event.Decoder
}

func newHandleHarness(t *testing.T, maxBytes int) *handleHarness {
	w := &fakeWriter{}
	d, m := startDLQ(t, w)
	b, err := batcher.New(batcher.Config{Limits: batcher.Limits{MaxBytes: maxBytes}, Sink: nopSink{}, DeadLetter: d.DeadLetter, Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Brokers: []string{"kafka:9092"}, Topics: []string{"in"}, GroupID: "g",
		Batcher: b, DLQ: d, Fits: b.Fits, Logger: testLog(t), Metrics: m})
	if err != nil {
		t.Fatal(err)
	}
	return &handleHarness{c: c, w: w, tr: newTracker("in", 3, 0), dec: event.NewDecoder("p")}
}

func (h *handleHarness) handle(t *testing.T, m kafka.Message) []batcher.Change {
	t.Helper()
	buf, err := h.c.handle(t.Context(), h.tr, h.dec, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	return buf
}

// TestTooLargeMemberDeadLetteredFromRecord (issue 10 §3): an event whose
// only member is too large for any request body is dead-lettered by the
// consumer as the original record (key, value, headers) with the reason
// too_large and an error naming the uid, bounded; nothing reaches the
// batcher, and the record settles once the letter is written. Before, the
// batcher dead-lettered a re-encoded event as api_rejected.
func TestTooLargeMemberDeadLetteredFromRecord(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := newHandleHarness(t, 128000)
		uid := strings.Repeat("U", 200_000)
		value := event.Encode(event.Event{Action: event.Add, Partner: "p", CohortID: "c", CohortName: "n", UIDs: []string{uid}})
		m := record("k", value, 0)
		if buf := h.handle(t, m); len(buf) != 0 {
			t.Fatalf("%d changes handed on, want none", len(buf))
		}
		synctest.Wait()
		letters := h.w.letters()
		if len(letters) != 1 {
			t.Fatalf("%d letters", len(letters))
		}
		l := letters[0]
		if string(l.Key) != "k" || string(l.Value) != string(value) {
			t.Error("the letter is not the original record")
		}
		if o, _ := headerOf(l, "origin"); o != "upstream" {
			t.Error("the record's headers are not kept")
		}
		if r, _ := headerOf(l, deadletter.HeaderReason); r != string(event.ReasonTooLarge) {
			t.Errorf("reason %q", r)
		}
		e, _ := headerOf(l, deadletter.HeaderError)
		if len(e) > deadletter.MaxHeaderValue || !utf8.ValidString(e) || !strings.Contains(e, `"UUUU`) || !strings.Contains(e, "(200000 bytes)") {
			t.Errorf("error header (%d bytes) %q does not name the uid, bounded", len(e), e)
		}
		if h.tr.watermark() != 1 {
			t.Errorf("watermark %d, want the record settled", h.tr.watermark())
		}
	})
}

// TestTooLargeMemberOfBulkEvent (issue 10 §3, DESIGN.md invariant 1): in a
// bulk event, the members that fit go on and the letter names the ones that
// do not; the record settles only once both its members were acknowledged
// and the letter was written, in either order.
func TestTooLargeMemberOfBulkEvent(t *testing.T) {
	for _, lettersFirst := range []bool{true, false} {
		synctest.Test(t, func(t *testing.T) {
			h := newHandleHarness(t, 1000)
			big1, big2 := strings.Repeat("x", 2000), strings.Repeat("é", 1000)
			value := event.Encode(event.Event{Action: event.Remove, Partner: "p", CohortID: "c", CohortName: "n",
				UIDs: []string{"a", big1, "b", big2}})
			if lettersFirst {
				// The letter cannot be written yet: fill the topic's queue
				// by blocking the writer.
				h.w.mu.Lock()
			}
			buf := h.handle(t, record("k", value, 0))
			if len(buf) != 2 || buf[0].UID != "a" || buf[1].UID != "b" || buf[0].Ack != buf[1].Ack {
				t.Fatalf("changes %+v, want a and b, one record", buf)
			}
			if lettersFirst {
				buf[0].Ack.Done()
				buf[1].Ack.Done()
				if h.tr.watermark() != 0 {
					t.Fatal("settled before its letter was written")
				}
				h.w.mu.Unlock()
				synctest.Wait()
			} else {
				synctest.Wait()
				if len(h.w.letters()) != 1 {
					t.Fatal("no letter")
				}
				buf[0].Ack.Done()
				if h.tr.watermark() != 0 {
					t.Fatal("settled before b was acknowledged")
				}
				buf[1].Ack.Done()
			}
			if h.tr.watermark() != 1 {
				t.Fatalf("watermark %d, want the record settled", h.tr.watermark())
			}
			l := h.w.letters()
			if len(l) != 1 || string(l[0].Value) != string(value) {
				t.Fatalf("%d letters, want the original record", len(l))
			}
			e, _ := headerOf(l[0], deadletter.HeaderError)
			if !strings.Contains(e, "2 of the event's 4 members") || !strings.Contains(e, `"xxx`) || !strings.Contains(e, `"ééé`) ||
				strings.Contains(e, `"a"`) || len(e) > deadletter.MaxHeaderValue {
				t.Errorf("error header %q", e)
			}
		})
	}
}

// TestHandleFitsDefault (issue 20 §3): the body cap comes from Config.Fits,
// else it is wire's default (128000 bytes), whatever the Batcher: the
// consumer no longer probes its Batcher for a Fits method (the app passes
// one built from BATCH_MAX_BYTES).
func TestHandleFitsDefault(t *testing.T) {
	h := wire.Header{Action: event.Add, Partner: "p", CohortID: "c", CohortName: "n"}
	b, err := batcher.New(batcher.Config{Limits: batcher.Limits{MaxBytes: 1000}, Sink: nopSink{}, DeadLetter: func(context.Context, []batcher.Rejected) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	newConsumer := func(fits func(wire.Header, string) bool) *Consumer {
		c, err := New(Config{Brokers: []string{"kafka:9092"}, Topics: []string{"in"}, GroupID: "g",
			Batcher: b, DLQ: &deadletter.DLQ{}, Fits: fits, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	mid := strings.Repeat("x", 5000) // over the batcher's 1000 bytes, under the default cap
	if f := newConsumer(nil).cfg.Fits; !f(h, mid) {
		t.Error("with Fits nil, the Batcher's own cap was used: the Batcher was probed")
	} else if f(h, strings.Repeat("x", 128000)) || !f(h, strings.Repeat("x", 127000)) {
		t.Error("the default cap is not 128000")
	}
	fits := newConsumer(b.Fits).cfg.Fits
	if fits(h, mid) || !fits(h, strings.Repeat("x", 800)) {
		t.Error("Config.Fits is not used")
	}
	fit, big := splitFit(fits, h, []string{"a", "b"})
	if big != nil || len(fit) != 2 {
		t.Error("splitFit")
	}
	uids := []string{"a", "b"}
	if n := testing.AllocsPerRun(100, func() { splitFit(fits, h, uids) }); n != 0 {
		t.Errorf("splitFit allocates %v times when all fit", n)
	}
}

func TestTooLargeDetailBounded(t *testing.T) {
	var big []string
	for range 10 {
		big = append(big, strings.Repeat("\x01", 100_000))
	}
	d := tooLargeDetail(big, 12)
	if !strings.Contains(d, "and 7 more") {
		t.Errorf("%q", d)
	}
	if c := deadletter.Clip(d, deadletter.MaxHeaderValue); len(c) > deadletter.MaxHeaderValue || !utf8.ValidString(c) {
		t.Errorf("%q", c)
	}
}
