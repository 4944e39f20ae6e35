package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// Dead-letter record headers.
const (
	HeaderReason          = "cohortsync-reason"           // a bounded event.Reason
	HeaderError           = "cohortsync-error"            // human-readable detail
	HeaderSourceTopic     = "cohortsync-source-topic"     // where the record was read
	HeaderSourcePartition = "cohortsync-source-partition" // decimal
	HeaderSourceOffset    = "cohortsync-source-offset"    // decimal
	HeaderFailedAt        = "cohortsync-failed-at"        // RFC 3339
)

// Writer is the part of *kafka.Writer the dead-letter queue uses.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
	Close() error
}

var _ Writer = (*kafka.Writer)(nil)

// DLQ writes dead letters to the dead-letter topic and settles their
// records only after the write succeeded. Writes are batched by one
// goroutine (Run) and retried with backoff until they succeed or the
// context given to Run ends. Safe for concurrent use.
type DLQ struct {
	w     Writer
	topic string
	log   *slog.Logger
	m     *metrics.Metrics

	queue   chan letter
	mu      sync.Mutex
	pending int
	idle    chan struct{} // closed and replaced when pending drops to 0
}

type letter struct {
	msg    kafka.Message
	reason event.Reason
	acks   []batcher.Ack
	done   chan error // nil for fire-and-forget letters
}

// NewDLQ returns a DLQ writing through w. topic is only used in logs.
func NewDLQ(w Writer, topic string, log *slog.Logger, m *metrics.Metrics) *DLQ {
	if log == nil {
		log = slog.Default()
	}
	if m == nil {
		m = metrics.NewMetrics(nil)
	}
	return &DLQ{w: w, topic: topic, log: log.With("component", "dlq"), m: m,
		queue: make(chan letter, 1024), idle: make(chan struct{})}
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
		ErrorLogger:  kafkaLogger(log, slog.LevelWarn),
	}
}

func (d *DLQ) enqueue(ctx context.Context, l letter) error {
	d.mu.Lock()
	d.pending++
	d.mu.Unlock()
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

// invalid dead-letters a record that failed decoding, keeping its key,
// value and headers, and settles ack once written. It does not wait.
func (d *DLQ) invalid(ctx context.Context, m kafka.Message, err *event.InvalidError, ack batcher.Ack) error {
	msg := kafka.Message{Key: m.Key, Value: m.Value, Headers: append(append([]kafka.Header(nil), m.Headers...),
		sourceHeaders(err.Reason, err.Detail, m.Topic, m.Partition, m.Offset)...)}
	return d.enqueue(ctx, letter{msg: msg, reason: err.Reason, acks: []batcher.Ack{ack}})
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
		if len(r.Acks) > 0 {
			if ra, offset, key, ok := source(r.Acks[0], r.Header, r.UID); ok {
				msg.Key = key
				msg.Headers = sourceHeaders(reason, r.Reason, ra.t.topic, ra.t.partition, offset)
			}
		}
		if msg.Headers == nil {
			msg.Headers = sourceHeaders(reason, r.Reason, "", -1, -1)
		}
		if err := d.enqueue(ctx, letter{msg: msg, reason: reason, acks: r.Acks, done: done}); err != nil {
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

// sourceHeaders are the headers that say why and where a record failed.
func sourceHeaders(reason event.Reason, detail, topic string, partition int, offset int64) []kafka.Header {
	return []kafka.Header{
		{Key: HeaderReason, Value: []byte(reason)},
		{Key: HeaderError, Value: []byte(detail)},
		{Key: HeaderSourceTopic, Value: []byte(topic)},
		{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(partition))},
		{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(offset, 10))},
		{Key: HeaderFailedAt, Value: []byte(time.Now().UTC().Format(time.RFC3339))},
	}
}

// Run writes queued letters until ctx ends. Letters still queued then are
// not settled (their records are read again after a restart).
func (d *DLQ) Run(ctx context.Context) {
	const maxBatch = 256
	batch := make([]letter, 0, maxBatch)
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
		err := d.write(ctx, batch)
		for _, l := range batch {
			if err == nil {
				d.m.EventsDeadLettered.WithLabelValues(string(l.reason)).Inc()
				for _, a := range l.acks {
					a.Done()
				}
			}
			if l.done != nil {
				l.done <- err
			}
		}
		d.settle(len(batch))
		if err != nil {
			return
		}
	}
}

func (d *DLQ) write(ctx context.Context, batch []letter) error {
	msgs := make([]kafka.Message, len(batch))
	for i, l := range batch {
		msgs[i] = l.msg
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 200 * time.Millisecond
	bo.MaxInterval = 10 * time.Second
	bo.MaxElapsedTime = 0 // a dead letter is never dropped
	var lastErr string
	for attempt := 1; ; attempt++ {
		err := d.w.WriteMessages(ctx, msgs...)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err.Error() != lastErr {
			d.log.Error("dead-letter write failed; retrying", "err", err, "topic", d.topic, "records", len(msgs), "attempt", attempt)
			lastErr = err.Error()
		}
		select {
		case <-time.After(bo.NextBackOff()):
		case <-ctx.Done():
			return fmt.Errorf("dlq: write: %w", errors.Join(ctx.Err(), err))
		}
	}
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

// kafkaLogger bridges kafka-go's Printf logger to slog.
func kafkaLogger(log *slog.Logger, level slog.Level) kafka.Logger {
	if log == nil {
		log = slog.Default()
	}
	return kafka.LoggerFunc(func(format string, args ...any) {
		log.Log(context.Background(), level, fmt.Sprintf(format, args...), "component", "kafka-go")
	})
}
