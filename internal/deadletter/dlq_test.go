package deadletter

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// fakeWriter is a dead-letter topic in memory. Like a broker at a
// max.message.bytes, it refuses a write in which any letter is larger than
// maxBytes (0: no limit) with MessageSizeTooLarge for every letter of the
// write (they would be one record batch). fail, when set, may fail a write
// with an error of its own first.
type fakeWriter struct {
	mu       sync.Mutex
	maxBytes int
	fail     func(call int) error
	calls    int
	written  []kafka.Message
}

func (w *fakeWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls++
	if w.fail != nil {
		if err := w.fail(w.calls); err != nil {
			return err
		}
	}
	for _, m := range msgs {
		if w.maxBytes > 0 && messageBytes(m) > w.maxBytes {
			errs := make(kafka.WriteErrors, len(msgs))
			for i := range errs {
				errs[i] = kafka.MessageSizeTooLarge
			}
			return errs
		}
	}
	w.written = append(w.written, msgs...)
	return nil
}

func (w *fakeWriter) Close() error { return nil }

func (w *fakeWriter) letters() []kafka.Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]kafka.Message(nil), w.written...)
}

func (w *fakeWriter) callCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.calls
}

// messageBytes is the size of m as a broker counts it, roughly.
func messageBytes(m kafka.Message) int {
	n := len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += len(h.Key) + len(h.Value)
	}
	return n
}

// countAck counts Done calls.
type countAck struct {
	mu sync.Mutex
	n  int
}

func (a *countAck) Done() {
	a.mu.Lock()
	a.n++
	a.mu.Unlock()
}

func (a *countAck) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.n
}

func headerOf(m kafka.Message, key string) (string, bool) {
	for i := len(m.Headers) - 1; i >= 0; i-- {
		if m.Headers[i].Key == key {
			return string(m.Headers[i].Value), true
		}
	}
	return "", false
}

// startDLQ runs a DLQ over w until the test ends; configure, when set,
// runs before.
func startDLQ(t *testing.T, w Writer, configure ...func(*DLQ)) (*DLQ, *metrics.Metrics) {
	m := metrics.New(nil)
	d := New(w, "dlq", nil, testLog(t), m)
	for _, f := range configure {
		f(d)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return d, m
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// record is a source record at offset off of topic "in", partition 3.
func record(key string, value []byte, off int64) kafka.Message {
	return kafka.Message{Topic: "in", Partition: 3, Offset: off, Key: []byte(key), Value: value,
		Headers: []kafka.Header{{Key: "origin", Value: []byte("upstream")}}}
}

func invalidOf(t *testing.T, value []byte) *event.InvalidError {
	t.Helper()
	_, err := event.Decode(value, "p")
	var inv *event.InvalidError
	if !errors.As(err, &inv) {
		t.Fatalf("Decode: %v, want an *InvalidError", err)
	}
	return inv
}

// TestDeadLetterHeadersBounded (issue 10 §4): an event with a ~900 KB
// invalid action is dead-lettered with its value and a bounded error header,
// so that the letter fits a dead-letter topic at Kafka's default
// max.message.bytes (1 MiB): before, the header quoted the whole action and
// the letter (1.8 MB) was refused, and retried, forever.
func TestDeadLetterHeadersBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &fakeWriter{maxBytes: 1 << 20}
		d, _ := startDLQ(t, w)
		value := []byte(`{"action":"` + strings.Repeat("x", 900_000) + `","cohort_id":"c","cohort_name":"n","uid":"u"}`)
		ack := &countAck{}
		if err := d.Invalid(t.Context(), record("k", value, 7), invalidOf(t, value), ack); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		letters := w.letters()
		if len(letters) != 1 || ack.count() != 1 {
			t.Fatalf("%d letters written, ack done %d times; want the letter written and settled", len(letters), ack.count())
		}
		l := letters[0]
		if string(l.Value) != string(value) || string(l.Key) != "k" {
			t.Fatal("the letter is not the original record")
		}
		for _, h := range l.Headers {
			if len(h.Value) > MaxHeaderValue || !utf8.Valid(h.Value) {
				t.Errorf("header %s: %d bytes, valid UTF-8 %v", h.Key, len(h.Value), utf8.Valid(h.Value))
			}
		}
		if e, _ := headerOf(l, HeaderError); !strings.Contains(e, "(900000 bytes)") {
			t.Errorf("error header %q does not give the length of the value it cuts", e)
		}
	})
}

func TestClip(t *testing.T) {
	long := strings.Repeat("é", 1000)
	for _, tc := range []struct {
		in   string
		want string
	}{
		{"short", "short"},
		{"a\xffb", "a?b"},
		{strings.Repeat("x", 512), strings.Repeat("x", 512)},
	} {
		if got := Clip(tc.in, 512); got != tc.want {
			t.Errorf("Clip(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	got := Clip(long, 512)
	if len(got) > 512 || !utf8.ValidString(got) || !strings.HasSuffix(got, "… (2000 bytes)") || !strings.HasPrefix(got, "éé") {
		t.Errorf("clip of 2000 bytes = %d bytes %q", len(got), got)
	}
	got = Clip(strings.Repeat("\xff", 2000), 512)
	if len(got) > 512 || !utf8.ValidString(got) {
		t.Errorf("clip of invalid UTF-8 = %d bytes %q", len(got), got)
	}
}

// TestDeadLetterWithoutValue (issue 10 §4): a record larger than the
// dead-letter topic takes is written without its value: the key, where it
// was read, the reason too_large, the original size and reason. Whether the
// DLQ knows the limit up front (MaxLetterBytes) or learns it from the
// broker's MessageSizeTooLarge, the letter is written, never retried
// forever, and later letters as large are stripped without a try.
func TestDeadLetterWithoutValue(t *testing.T) {
	for _, tc := range []struct {
		name      string
		maxLetter int // DLQ.MaxLetterBytes
		broker    int // the topic's limit
		size      int // of the record's value
		tries     int // writes of the first letter
	}{
		{name: "over MaxLetterBytes", maxLetter: 0, broker: 1 << 20, size: 2 << 20, tries: 1},
		{name: "refused by the broker", maxLetter: 10 << 20, broker: 100 << 10, size: 200 << 10, tries: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				w := &fakeWriter{maxBytes: tc.broker}
				d, m := startDLQ(t, w, func(d *DLQ) { d.MaxLetterBytes = tc.maxLetter })
				value := []byte(`{"action":"add","uid":"` + strings.Repeat("x", tc.size) + `"`) // malformed
				inv := invalidOf(t, value)
				ack := &countAck{}
				if err := d.Invalid(t.Context(), record("the-key", value, 41), inv, ack); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if n := w.callCount(); n != tc.tries {
					t.Errorf("%d writes, want %d", n, tc.tries)
				}
				letters := w.letters()
				if len(letters) != 1 || ack.count() != 1 {
					t.Fatalf("%d letters written, ack done %d times; want 1 and 1", len(letters), ack.count())
				}
				l := letters[0]
				if l.Value != nil || string(l.Key) != "the-key" {
					t.Errorf("letter key %q, %d bytes of value; want the key and no value", l.Key, len(l.Value))
				}
				for k, v := range map[string]string{
					HeaderReason:          string(event.ReasonTooLarge),
					HeaderOriginalReason:  string(event.ReasonMalformed),
					HeaderOriginalSize:    strconv.Itoa(len(value)),
					HeaderSourceTopic:     "in",
					HeaderSourcePartition: "3",
					HeaderSourceOffset:    "41",
				} {
					if got, _ := headerOf(l, k); got != v {
						t.Errorf("header %s = %q, want %q", k, got, v)
					}
				}
				if _, ok := headerOf(l, "origin"); ok {
					t.Error("the record's own headers are kept")
				}
				if e, _ := headerOf(l, HeaderError); !strings.Contains(e, "without the record's value") || len(e) > MaxHeaderValue {
					t.Errorf("error header %q", e)
				}
				if got := testutil.ToFloat64(m.EventsDeadLettered.WithLabelValues(string(event.ReasonTooLarge))); got != 1 {
					t.Errorf("dead_lettered_total{too_large} = %v", got)
				}
				if d.Failing() {
					t.Error("Failing after the letter was written")
				}

				// A second letter as large: stripped without a refusal.
				calls := w.callCount()
				if err := d.Invalid(t.Context(), record("the-ke2", value, 42), inv, &countAck{}); err != nil { // as large
					t.Fatal(err)
				}
				synctest.Wait()
				if n := w.callCount() - calls; n != 1 || len(w.letters()) != 2 || w.letters()[1].Value != nil {
					t.Errorf("the second large letter took %d writes", n)
				}
			})
		})
	}
}

// TestDeadLetterBatchRefusedAsTooLarge: letters written together are one
// record batch to the broker, refused as a whole when one of them is too
// large; each is then written on its own, and only the large one loses its
// value.
func TestDeadLetterBatchRefusedAsTooLarge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &fakeWriter{maxBytes: 100 << 10}
		m := metrics.New(nil)
		d := New(w, "dlq", nil, testLog(t), m)
		d.MaxLetterBytes = 10 << 20
		small := []byte(`{"action":"add"`)
		large := []byte(`{"action":"add","x":"` + strings.Repeat("x", 200<<10) + `"`)
		acks := []*countAck{{}, {}, {}}
		for i, v := range [][]byte{small, large, small} {
			if err := d.Invalid(t.Context(), record(strconv.Itoa(i), v, int64(i)), invalidOf(t, v), acks[i]); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(t.Context())
		defer cancel()
		go d.Run(ctx) // the three letters are queued: one batch
		if err := d.Wait(t.Context()); err != nil {
			t.Fatal(err)
		}
		letters := w.letters()
		if len(letters) != 3 {
			t.Fatalf("%d letters", len(letters))
		}
		for _, l := range letters {
			want := small
			if string(l.Key) == "1" {
				want = nil
			}
			if string(l.Value) != string(want) {
				t.Errorf("letter %s: %d bytes of value, want %d", l.Key, len(l.Value), len(want))
			}
		}
		for i, a := range acks {
			if a.count() != 1 {
				t.Errorf("record %d settled %d times", i, a.count())
			}
		}
		if got := testutil.ToFloat64(m.DeadLetterFailures.WithLabelValues(failTooLarge)); got != 1 {
			t.Errorf("dead_letter_failures_total{too_large} = %v, want 1", got)
		}
	})
}

// TestDeadLetterPermanentError (issue 10 §4): an error the broker calls
// permanent is retried (a letter is never dropped), but not silently: the
// DLQ reports Failing (readiness drops) and counts it, until a write
// succeeds. A temporary error makes it Failing only once it lasted over a
// minute.
func TestDeadLetterPermanentError(t *testing.T) {
	for _, tc := range []struct {
		err        error
		reason     string
		failingNow bool
	}{
		{kafka.TopicAuthorizationFailed, failPermanent, true},
		{kafka.NotEnoughReplicas, failTransient, false},
		{errors.New("dial tcp: connection refused"), failTransient, false},
	} {
		t.Run(tc.err.Error(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var down sync.Mutex
				broken := true
				w := &fakeWriter{fail: func(int) error {
					down.Lock()
					defer down.Unlock()
					if broken {
						return tc.err
					}
					return nil
				}}
				d, m := startDLQ(t, w)
				ack := &countAck{}
				v := []byte(`{`)
				if err := d.Invalid(t.Context(), record("k", v, 1), invalidOf(t, v), ack); err != nil {
					t.Fatal(err)
				}
				time.Sleep(5 * time.Second)
				synctest.Wait()
				if d.Failing() != tc.failingNow {
					t.Errorf("Failing() = %v after 5 s", d.Failing())
				}
				if got := testutil.ToFloat64(m.DeadLetterFailures.WithLabelValues(tc.reason)); got < 2 {
					t.Errorf("dead_letter_failures_total{%s} = %v, want the failed attempts", tc.reason, got)
				}
				if got := testutil.ToFloat64(m.DeadLetterFailing); got != map[bool]float64{false: 0, true: 1}[tc.failingNow] {
					t.Errorf("dead_letter_failing = %v", got)
				}
				time.Sleep(2 * time.Minute)
				synctest.Wait()
				if !d.Failing() || ack.count() != 0 {
					t.Errorf("after 2 min: Failing() = %v, settled %d", d.Failing(), ack.count())
				}

				down.Lock()
				broken = false
				down.Unlock()
				time.Sleep(15 * time.Second) // the longest backoff interval
				synctest.Wait()
				if d.Failing() || ack.count() != 1 || len(w.letters()) != 1 {
					t.Errorf("after recovery: Failing() = %v, settled %d, %d letters", d.Failing(), ack.count(), len(w.letters()))
				}
			})
		})
	}
}

// The batcher's dead letters (api_rejected) bound the API's reason too.
func TestDeadLetterAPIReasonBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &fakeWriter{}
		d, _ := startDLQ(t, w)
		ack := &countAck{}
		err := d.DeadLetter(t.Context(), []batcher.Rejected{{UID: "u", Reason: "400 bad: " + strings.Repeat("why ", 10000), Acks: []batcher.Ack{ack}}})
		if err != nil {
			t.Fatal(err)
		}
		l := w.letters()
		if len(l) != 1 || ack.count() != 1 {
			t.Fatalf("%d letters", len(l))
		}
		if e, _ := headerOf(l[0], HeaderError); len(e) > MaxHeaderValue || !strings.HasPrefix(e, "400 bad: why") {
			t.Errorf("error header of %d bytes: %.80q", len(e), e)
		}
	})
}

// A member the API rejected is keyed like its record and names where it
// was read, as the Locator says; without one its source is unknown.
func TestDeadLetterLocatesSource(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		w := &fakeWriter{}
		ack := &countAck{}
		var gotUID string
		d, _ := startDLQ(t, w, func(d *DLQ) {
			d.locate = func(a batcher.Ack, h wire.Header, uid string) (Source, bool) {
				gotUID = uid
				return Source{Topic: "in", Partition: 3, Offset: 41, Key: []byte(h.CohortID)}, a == ack
			}
		})
		rejected := []batcher.Rejected{{Header: wire.Header{CohortID: "c"}, UID: "u", Reason: "400", Acks: []batcher.Ack{ack}},
			{UID: "v", Reason: "400", Acks: []batcher.Ack{&countAck{}}}}
		if err := d.DeadLetter(t.Context(), rejected); err != nil {
			t.Fatal(err)
		}
		l := w.letters()
		if len(l) != 2 || gotUID != "v" {
			t.Fatalf("%d letters, last located uid %q", len(l), gotUID)
		}
		want := [][3]string{{"in", "3", "41"}, {"", "-1", "-1"}}
		for i, m := range l {
			topic, _ := headerOf(m, HeaderSourceTopic)
			p, _ := headerOf(m, HeaderSourcePartition)
			off, _ := headerOf(m, HeaderSourceOffset)
			if [3]string{topic, p, off} != want[i] {
				t.Errorf("letter %d: source %s/%s/%s, want %v", i, topic, p, off, want[i])
			}
		}
		if string(l[0].Key) != "c" || l[1].Key != nil {
			t.Errorf("keys %q, %q", l[0].Key, l[1].Key)
		}
	})
}
