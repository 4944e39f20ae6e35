package consumer

import (
	"context"
	"log/slog"
	"slices"
	"sync"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// fakeWriter is a dead-letter topic in memory; holding mu blocks writes.
// (The dead-letter writer's own tests, with size limits and failures, are
// in internal/deadletter.)
type fakeWriter struct {
	mu      sync.Mutex
	written []kafka.Message
}

func (w *fakeWriter) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	w.mu.Lock()
	w.written = append(w.written, msgs...)
	w.mu.Unlock()
	return nil
}

func (w *fakeWriter) Close() error { return nil }

func (w *fakeWriter) letters() []kafka.Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.written)
}

// startDLQ runs a DLQ over w, locating sources as the worker does, until
// the test ends.
func startDLQ(t *testing.T, w deadletter.Writer) (*deadletter.DLQ, *metrics.Metrics) {
	m := metrics.New(nil)
	d := deadletter.New(w, "dlq", Locate, testLog(t), m)
	done := make(chan struct{})
	go func() { d.Run(t.Context()); close(done) }() // t.Context ends before the cleanups run
	t.Cleanup(func() { <-done })
	return d, m
}

func testLog(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// headerOf is the last value of the header key of m.
func headerOf(m kafka.Message, key string) (string, bool) {
	for i := len(m.Headers) - 1; i >= 0; i-- {
		if m.Headers[i].Key == key {
			return string(m.Headers[i].Value), true
		}
	}
	return "", false
}

// record is a source record at offset off of topic "in", partition 3.
func record(key string, value []byte, off int64) kafka.Message {
	return kafka.Message{Topic: "in", Partition: 3, Offset: off, Key: []byte(key), Value: value,
		Headers: []kafka.Header{{Key: "origin", Value: []byte("upstream")}}}
}

// TestLocateRejectedMember: a member the API rejected is dead-lettered
// keyed like its record and with the record's topic, partition and offset
// (Locate), for each kind of key; an Ack of another kind has no source.
func TestLocateRejectedMember(t *testing.T) {
	h := wire.Header{Action: event.Add, Partner: "p", CohortID: "the-cohort", CohortName: "n"}
	tr := newTracker("in", 3, 40)
	cases := []struct {
		name    string
		key     []byte
		wantKey string
	}{
		{"cohort key", []byte("the-cohort"), "the-cohort"},
		{"uid key", []byte("u1"), "u1"},
		{"other key", []byte("something-else"), "something-else"},
	}
	for i, tc := range cases {
		seq, _ := tr.track(int64(40 + i))
		ack := newRecordAck(tr, seq, tc.key, &event.Event{CohortID: "the-cohort", UIDs: []string{"u1"}}, 1)
		src, ok := Locate(ack, h, "u1")
		if !ok || src.Topic != "in" || src.Partition != 3 || src.Offset != int64(40+i) || string(src.Key) != tc.wantKey {
			t.Errorf("%s: Locate = %+v, %v", tc.name, src, ok)
		}
	}
	if _, ok := Locate(nopAck{}, h, "u1"); ok {
		t.Error("an Ack of another kind has a source")
	}
}
