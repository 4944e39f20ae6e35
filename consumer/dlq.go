package consumer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/cenkalti/backoff/v4"
	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/metrics"
)

// Dead-letter record headers. Every value the worker writes is bounded
// (MaxHeaderValue); the record's own headers are kept as they are.
const (
	HeaderReason          = "cohortsync-reason"           // a bounded event.Reason
	HeaderError           = "cohortsync-error"            // human-readable detail
	HeaderSourceTopic     = "cohortsync-source-topic"     // where the record was read
	HeaderSourcePartition = "cohortsync-source-partition" // decimal
	HeaderSourceOffset    = "cohortsync-source-offset"    // decimal
	HeaderFailedAt        = "cohortsync-failed-at"        // RFC 3339
	// HeaderOriginalSize is set on a letter written without the record's
	// value (and headers) because it was too large for the dead-letter
	// topic: the size of the value, in bytes (decimal).
	HeaderOriginalSize = "cohortsync-original-size"
	// HeaderOriginalReason is set on such a letter too: the reason the
	// record was dead-lettered for (its HeaderReason is too_large).
	HeaderOriginalReason = "cohortsync-original-reason"
)

// MaxHeaderValue is the most bytes of a header value the worker writes on a
// dead letter: longer error texts are cut (at a character boundary, with an
// ellipsis and the full length) so that a letter is never much larger than
// its record.
const MaxHeaderValue = 512

// DefaultMaxLetterBytes is the largest dead letter (key, value and headers)
// the DLQ tries to write as it is: under kafka-go's default batch limit
// (1 MiB) and Kafka's default max.message.bytes (1 MiB + 12). A larger
// letter is written without its value (see DLQ). Set DLQ.MaxLetterBytes
// for a dead-letter topic configured with a lower max.message.bytes; the
// DLQ also lowers its limit when the broker refuses a letter as too large.
const DefaultMaxLetterBytes = 1000000

// maxKeptKey is the largest key a letter written without its value keeps.
const maxKeptKey = 16 << 10

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

	w     Writer
	topic string
	log   *slog.Logger
	m     *metrics.Metrics

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

// Failure reasons of cohortsync_dead_letter_failures_total.
const (
	failTooLarge  = "too_large" // a letter refused as too large: rewritten without its value
	failPermanent = "permanent" // an error the broker calls permanent: retried, Failing
	failTransient = "transient" // an error the broker calls temporary, or a network error: retried
)

// NewDLQ returns a DLQ writing through w. topic is only used in logs.
func NewDLQ(w Writer, topic string, log *slog.Logger, m *metrics.Metrics) *DLQ {
	if log == nil {
		log = slog.Default()
	}
	if m == nil {
		m = metrics.New(nil)
	}
	return &DLQ{w: w, topic: topic, log: log.With("component", "dlq"), m: m,
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
		ErrorLogger:  kafkaLogger(log, slog.LevelWarn),
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

// invalid dead-letters a record that failed decoding, keeping its key,
// value and headers, and settles ack once written. It does not wait.
func (d *DLQ) invalid(ctx context.Context, m kafka.Message, err *event.InvalidError, ack batcher.Ack) error {
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
		if len(r.Acks) > 0 {
			if ra, offset, key, ok := source(r.Acks[0], r.Header, r.UID); ok {
				msg.Key = key
				msg.Headers = sourceHeaders(reason, r.Reason, ra.t.topic, ra.t.partition, offset)
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

// sourceHeaders are the headers that say why and where a record failed.
func sourceHeaders(reason event.Reason, detail, topic string, partition int, offset int64) []kafka.Header {
	return []kafka.Header{
		{Key: HeaderReason, Value: []byte(reason)},
		{Key: HeaderError, Value: []byte(clip(detail, MaxHeaderValue))},
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

// write writes the letters of batch and finishes each once it is written,
// retrying the others with backoff, until all are written (it returns nil)
// or ctx ends (it finishes the rest with an error and returns it).
//
// A letter larger than the limit is stripped of its value before it is
// tried. When a write of several letters is refused as too large, they are
// written one by one from then on (several letters of one partition go in
// one record batch, which the broker may refuse as a whole); a letter
// refused alone is stripped, and the limit lowered below its size.
func (d *DLQ) write(ctx context.Context, batch []*letter) error {
	for _, l := range batch {
		if letterSize(l.msg) > d.limit() {
			d.strip(l, "it is larger than the dead-letter topic takes (MaxLetterBytes)")
		}
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval = 200 * time.Millisecond
	bo.MaxInterval = 10 * time.Second
	bo.MaxElapsedTime = 0 // a dead letter is never dropped
	var (
		todo     = batch
		f        writeFailures
		oneByOne bool
		msgs     []kafka.Message
	)
	for attempt := 1; len(todo) > 0; attempt++ {
		n := len(todo)
		if oneByOne {
			n = 1
		}
		msgs = msgs[:0]
		for _, l := range todo[:n] {
			msgs = append(msgs, l.msg)
		}
		err := d.w.WriteMessages(ctx, msgs...)
		if ctx.Err() != nil {
			d.finishAll(todo, ctx.Err())
			return ctx.Err()
		}
		r := d.settleAttempt(todo[:n], err)
		oneByOne = oneByOne || r.oneByOne
		todo = append(r.failed, todo[n:]...)
		if r.progress {
			f.since = time.Time{}
			d.setFailing(false)
		}
		cause, permanent := r.cause()
		if cause == nil {
			bo.Reset()
			continue
		}
		d.failed(&f, cause, permanent, len(todo), attempt)
		select {
		case <-time.After(bo.NextBackOff()):
		case <-ctx.Done():
			d.finishAll(todo, ctx.Err())
			return fmt.Errorf("dlq: write: %w", errors.Join(ctx.Err(), cause))
		}
	}
	d.setFailing(false)
	return nil
}

// finishAll finishes every letter of ls with err.
func (d *DLQ) finishAll(ls []*letter, err error) {
	for _, l := range ls {
		d.finish(l, err)
	}
}

// writeResult is the outcome of one WriteMessages call for the letters it
// was given.
type writeResult struct {
	failed    []*letter // to write again, in their order
	progress  bool      // a letter was written, or stripped after it was refused alone
	oneByOne  bool      // letters written together were refused as too large
	permanent error     // the last error the broker calls permanent (or too large, when stripping cannot help)
	transient error     // the last other error
}

// cause returns the error to report for r, preferring a permanent one, or
// nil when no letter failed for a reason other than its size.
func (r writeResult) cause() (err error, permanent bool) {
	if r.permanent != nil {
		return r.permanent, true
	}
	return r.transient, false
}

// settleAttempt finishes the letters of tried that WriteMessages wrote,
// strips one refused alone as too large, and returns the others, given
// err, the error WriteMessages returned for all of tried.
func (d *DLQ) settleAttempt(tried []*letter, err error) writeResult {
	n := len(tried)
	var werrs kafka.WriteErrors
	perMsg := err != nil && errors.As(err, &werrs) && len(werrs) == n
	r := writeResult{failed: make([]*letter, 0, n)}
	for i, l := range tried {
		e := err
		if perMsg {
			e = werrs[i]
		}
		switch {
		case e == nil:
			d.finish(l, nil)
			r.progress = true
			continue
		case tooLarge(e) && n > 1:
			r.oneByOne = true
		case tooLarge(e) && !l.stripped:
			if size := letterSize(l.msg); d.observed == 0 || size <= d.observed {
				d.observed = size - 1
			}
			d.m.DeadLetterFailures.WithLabelValues(failTooLarge).Inc()
			d.strip(l, "the dead-letter topic refused it as too large ("+e.Error()+")")
			r.progress = true
		case isPermanent(e) || tooLarge(e):
			r.permanent = e
		default:
			r.transient = e
		}
		r.failed = append(r.failed, l)
	}
	return r
}

// writeFailures is what one write call remembers of its failures.
type writeFailures struct {
	since   time.Time // of the first failure without progress since
	lastErr string    // the cause last logged
}

// failed counts a failed attempt with cause, sets the Failing state (at
// once for a permanent cause, else after failingAfter without progress)
// and logs the failure when that state or the cause changed.
func (d *DLQ) failed(f *writeFailures, cause error, permanent bool, records, attempt int) {
	if f.since.IsZero() {
		f.since = time.Now()
	}
	reason := failTransient
	if permanent {
		reason = failPermanent
	}
	d.m.DeadLetterFailures.WithLabelValues(reason).Inc()
	failing := permanent || time.Since(f.since) > failingAfter
	if d.setFailing(failing) || cause.Error() != f.lastErr {
		f.lastErr = cause.Error()
		msg := "dead-letter write failed; retrying"
		if failing {
			msg = "dead-letter writes keep failing; retrying (their records are not committed meanwhile)"
		}
		d.log.Error(msg, "err", cause, "permanent", permanent, "topic", d.topic,
			"records", records, "attempt", attempt)
	}
}

// setFailing sets the Failing state and reports whether it changed.
func (d *DLQ) setFailing(v bool) bool {
	if d.failing.Swap(v) == v {
		return false
	}
	g := 0.0
	if v {
		g = 1
	}
	d.m.DeadLetterFailing.Set(g)
	return true
}

// limit is the size above which a letter is written without its value.
func (d *DLQ) limit() int {
	n := d.MaxLetterBytes
	if n <= 0 {
		n = DefaultMaxLetterBytes
	}
	if d.observed > 0 && d.observed < n {
		n = d.observed
	}
	return n
}

// strip replaces l's message with the letter without the record's value and
// headers (and key, past maxKeptKey): the reason too_large, why, where the
// record was read, and the size and reason of the original.
func (d *DLQ) strip(l *letter, why string) {
	orig := l.msg
	key := orig.Key
	note := ""
	if len(key) > maxKeptKey {
		key = nil
		note = "; its key (" + strconv.Itoa(len(orig.Key)) + " bytes) is left out too"
	}
	detail := "written without the record's value and headers, as " + why + note +
		". The record (" + strconv.Itoa(len(orig.Value)) + " bytes) was dead-lettered as " + string(l.reason) + ": " + l.detail
	// The worker's own headers come last (sourceHeaders): take those.
	last := func(k string) []byte {
		for i := len(orig.Headers) - 1; i >= 0; i-- {
			if orig.Headers[i].Key == k {
				return orig.Headers[i].Value
			}
		}
		return nil
	}
	l.msg = kafka.Message{Key: key, Headers: []kafka.Header{
		{Key: HeaderReason, Value: []byte(event.ReasonTooLarge)},
		{Key: HeaderError, Value: []byte(clip(detail, MaxHeaderValue))},
		{Key: HeaderSourceTopic, Value: last(HeaderSourceTopic)},
		{Key: HeaderSourcePartition, Value: last(HeaderSourcePartition)},
		{Key: HeaderSourceOffset, Value: last(HeaderSourceOffset)},
		{Key: HeaderFailedAt, Value: []byte(time.Now().UTC().Format(time.RFC3339))},
		{Key: HeaderOriginalSize, Value: []byte(strconv.Itoa(len(orig.Value)))},
		{Key: HeaderOriginalReason, Value: []byte(l.reason)},
	}}
	d.log.Warn("dead letter too large for the dead-letter topic: writing it without the record's value",
		"reason", l.reason, "bytes", letterSize(orig), "limit", d.limit(),
		"topic", string(last(HeaderSourceTopic)), "partition", string(last(HeaderSourcePartition)),
		"offset", string(last(HeaderSourceOffset)))
	l.reason, l.stripped = event.ReasonTooLarge, true
}

// letterSize is an upper bound of the size of m in a Kafka record batch
// (kafka-go's Message.totalSize plus the batch's own header).
func letterSize(m kafka.Message) int {
	n := 128 + len(m.Key) + len(m.Value)
	for _, h := range m.Headers {
		n += 10 + len(h.Key) + len(h.Value)
	}
	return n
}

// tooLarge reports whether err says a letter (or a batch of them) is too
// large for the broker or the writer.
func tooLarge(err error) bool {
	return errors.Is(err, kafka.MessageSizeTooLarge) || errors.Is(err, kafka.RecordListTooLarge)
}

// isPermanent reports whether err is a Kafka error that retrying the same
// write cannot fix by itself.
func isPermanent(err error) bool {
	var ke kafka.Error
	return errors.As(err, &ke) && !ke.Temporary()
}

// clip returns s, or when it is longer than n bytes its start, cut at a
// character boundary, followed by "… (N bytes)": at most n bytes (for an n
// above a few dozen), always valid UTF-8.
func clip(s string, n int) string {
	if len(s) <= n {
		return strings.ToValidUTF8(s, "?") // never longer
	}
	suffix := "… (" + strconv.Itoa(len(s)) + " bytes)"
	cut := max(0, n-len(suffix))
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return strings.ToValidUTF8(s[:cut], "?") + suffix
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
