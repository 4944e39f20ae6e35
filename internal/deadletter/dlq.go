package deadletter

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/kafkaconn"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// failingAfter is how long dead-letter writes may fail with errors the
// broker calls temporary before Failing reports true.
const failingAfter = time.Minute

// Writer is the part of *kafka.Writer the dead-letter queue uses.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
	Close() error
}

var _ Writer = (*kafka.Writer)(nil)

// DLQ writes dead letters to the dead-letter topic and settles their
// records only after the write succeeded. Writes are batched by one
// goroutine (Run) and retried with backoff until they succeed or the
// context given to Run ends: a letter is never dropped. Safe for
// concurrent use.
//
// A letter the topic cannot take (larger than MaxLetterBytes, or refused by
// the broker as too large: MessageSizeTooLarge) is written without the
// record's value and headers: its key (when at most 16 KiB), the source
// topic, partition and offset, the reason too_large, HeaderOriginalSize and
// HeaderOriginalReason. Any other error that the broker calls permanent
// (kafka.Error.Temporary is false: an authorization failure, an invalid
// topic, ...) is retried too, as an operator can fix it, but it makes
// Failing report true (so does a temporary error that lasts over a minute),
// is logged at error level and counted in
// cohortsync_dead_letter_failures_total{reason}.
type DLQ struct {
	// MaxLetterBytes is the largest letter written as it is; 0 means
	// DefaultMaxLetterBytes. Set it before Run.
	MaxLetterBytes int

	w      Writer
	topic  string
	locate Locator
	log    *slog.Logger
	m      *metrics.Metrics

	queue   chan *letter
	mu      sync.Mutex
	pending int
	idle    chan struct{} // closed and replaced when pending drops to 0

	failing atomic.Bool
	// observed is the largest letter size the broker is known to take
	// (one less than the smallest it refused as too large); 0 = unknown.
	// Only Run's goroutine uses it.
	observed int
}

type letter struct {
	msg    kafka.Message
	reason event.Reason // of msg: too_large once stripped
	detail string       // the error of the original letter (bounded)
	acks   []batcher.Ack
	done   chan error // nil for fire-and-forget letters

	stripped bool // msg is the letter without the record's value
}

// New returns a DLQ writing through w. topic is only used in logs. locate
// finds the source record of a member the API rejected (DeadLetter); nil
// means none is known.
func New(w Writer, topic string, locate Locator, log *slog.Logger, m *metrics.Metrics) *DLQ {
	if log == nil {
		log = slog.Default()
	}
	if m == nil {
		m = metrics.New(nil)
	}
	return &DLQ{w: w, topic: topic, locate: locate, log: log.With("component", "dlq"), m: m,
		queue: make(chan *letter, 1024), idle: make(chan struct{})}
}

// NewWriter returns the kafka-go writer for the dead-letter topic. Records
// are partitioned by key hash (so a replay keeps per-key order) and
// acknowledged by all in-sync replicas.
func NewWriter(brokers []string, topic string, transport kafka.RoundTripper, log *slog.Logger) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
		MaxAttempts:  1, // DLQ.Run retries with its own backoff
		Transport:    transport,
		ErrorLogger:  kafkaconn.Logger(log, slog.LevelWarn),
	}
}

// Failing reports whether dead letters cannot be written: the last write
// failed with an error the broker calls permanent, or writes have failed for
// over a minute. Records waiting for their letters are not committed
// meanwhile; the readiness of the worker should drop.
func (d *DLQ) Failing() bool { return d.failing.Load() }

func (d *DLQ) enqueue(ctx context.Context, l *letter) error {
	d.mu.Lock()
	d.pending++
	d.mu.Unlock()
	select {
	case d.queue <- l:
		return nil
	default:
	}
	// A full queue waits on the dead-letter writes (the brokers): not a
	// wedge of the calling loop.
	hb := metrics.LoopFrom(ctx)
	hb.Idle()
	defer hb.Busy()
	select {
	case d.queue <- l:
		return nil
	case <-ctx.Done():
		d.settle(1)
		return ctx.Err()
	}
}

func (d *DLQ) settle(n int) {
	d.mu.Lock()
	d.pending -= n
	if d.pending == 0 {
		close(d.idle)
		d.idle = make(chan struct{})
	}
	d.mu.Unlock()
}

// Invalid dead-letters a record that failed decoding, keeping its key,
// value and headers, and settles ack once written. It does not wait (but
// for room in the queue).
func (d *DLQ) Invalid(ctx context.Context, m kafka.Message, err *event.InvalidError, ack batcher.Ack) error {
	msg := kafka.Message{Key: m.Key, Value: m.Value, Headers: append(append([]kafka.Header(nil), m.Headers...),
		sourceHeaders(err.Reason, err.Detail, m.Topic, m.Partition, m.Offset)...)}
	return d.enqueue(ctx, &letter{msg: msg, reason: err.Reason, detail: err.Detail, acks: []batcher.Ack{ack}})
}

// DeadLetter is the batcher's DeadLetterFunc: it writes one record per
// rejected member (a single-member event in the input format, keyed like
// the source record) and waits until they are written and settled.
func (d *DLQ) DeadLetter(ctx context.Context, rejected []batcher.Rejected) error {
	done := make(chan error, len(rejected))
	for _, r := range rejected {
		ev := event.Event{Action: r.Header.Action, Partner: r.Header.Partner, CohortID: r.Header.CohortID,
			CohortName: r.Header.CohortName, CohortDescription: r.Header.CohortDescription, UIDs: []string{r.UID}}
		reason := event.ReasonAPIRejected
		msg := kafka.Message{Value: event.Encode(ev)}
		if len(r.Acks) > 0 && d.locate != nil {
			if src, ok := d.locate(r.Acks[0], r.Header, r.UID); ok {
				msg.Key = src.Key
				msg.Headers = sourceHeaders(reason, r.Reason, src.Topic, src.Partition, src.Offset)
			}
		}
		if msg.Headers == nil {
			msg.Headers = sourceHeaders(reason, r.Reason, "", -1, -1)
		}
		if err := d.enqueue(ctx, &letter{msg: msg, reason: reason, detail: r.Reason, acks: r.Acks, done: done}); err != nil {
			return err
		}
	}
	for range rejected {
		select {
		case err := <-done:
			if err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// Run writes queued letters until ctx ends. Letters still queued then are
// not settled (their records are read again after a restart).
func (d *DLQ) Run(ctx context.Context) {
	const maxBatch = 256
	batch := make([]*letter, 0, maxBatch)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			return
		case l := <-d.queue:
			batch = append(batch, l)
		}
	fill:
		for len(batch) < maxBatch {
			select {
			case l := <-d.queue:
				batch = append(batch, l)
			default:
				break fill
			}
		}
		if err := d.write(ctx, batch); err != nil {
			return
		}
	}
}

// finish settles l once: written (err nil) or abandoned because ctx ended.
func (d *DLQ) finish(l *letter, err error) {
	if err == nil {
		d.m.EventsDeadLettered.WithLabelValues(string(l.reason)).Inc()
		for _, a := range l.acks {
			a.Done()
		}
	}
	if l.done != nil {
		l.done <- err
	}
	d.settle(1)
}

// Wait blocks until every queued letter is written or ctx ends.
func (d *DLQ) Wait(ctx context.Context) error {
	for {
		d.mu.Lock()
		n, idle := d.pending, d.idle
		d.mu.Unlock()
		if n == 0 {
			return nil
		}
		select {
		case <-idle:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Close closes the writer.
func (d *DLQ) Close() error { return d.w.Close() }
