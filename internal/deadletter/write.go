package deadletter

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// Failure reasons of cohortsync_dead_letter_failures_total.
const (
	failTooLarge  = "too_large" // a letter refused as too large: rewritten without its value
	failPermanent = "permanent" // an error the broker calls permanent: retried, Failing
	failTransient = "transient" // an error the broker calls temporary, or a network error: retried
)

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
		{Key: HeaderError, Value: []byte(Clip(detail, MaxHeaderValue))},
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
