package consumer

import (
	"context"
	"strconv"
	"strings"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/batcher"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// maxNamedUIDs is how many of the members that do not fit a too_large
// letter names in its error header.
const maxNamedUIDs = 3

// defaultFits is Config.Fits when none is given: the default request body
// cap, which is the Batcher's when its MaxBytes is left at the default.
func defaultFits(h wire.Header, uid string) bool {
	return wire.Fits(h, uid, wire.DefaultMaxBodyBytes)
}

// splitFit returns the members of uids that fit in a request with header h
// (on their own), and those that do not. When all fit, fit is uids and
// big is nil, without allocating.
func splitFit(fits func(wire.Header, string) bool, h wire.Header, uids []string) (fit, big []string) {
	for i, u := range uids {
		if fits(h, u) {
			continue
		}
		fit = append(make([]string, 0, len(uids)-1), uids[:i]...)
		big = []string{u}
		for _, u := range uids[i+1:] {
			if fits(h, u) {
				fit = append(fit, u)
			} else {
				big = append(big, u)
			}
		}
		return fit, big
	}
	return uids, nil
}

// deadLetterTooLarge handles a record whose event ev has members that can
// never be sent (big: a request with any of them alone exceeds the body
// cap). The record is dead-lettered as it is, with the reason too_large and
// an error naming those members; the members that fit (fit) are appended
// to buf and go on. The record's ack counts them and the letter, so the
// record is settled only once each of them is accepted (or superseded) and
// the letter is written (DESIGN.md invariant 1).
func (c *Consumer) deadLetterTooLarge(ctx context.Context, tr *tracker, seq int64, m kafka.Message, ev *event.Event,
	h wire.Header, fit, big []string, buf []batcher.Change) ([]batcher.Change, error) {
	inv := &event.InvalidError{Reason: event.ReasonTooLarge, Detail: tooLargeDetail(big, len(ev.UIDs))}
	c.m.EventsInvalid.WithLabelValues(string(inv.Reason)).Inc()
	c.log.Debug("member too large for any request; dead-lettering the record", "reason", inv.Reason, "err", inv.Detail,
		"members", len(ev.UIDs), "too_large", len(big), "topic", m.Topic, "partition", m.Partition, "offset", m.Offset)
	ack := newRecordAck(tr, seq, m.Key, ev, len(fit)+1)
	for _, u := range fit {
		buf = append(buf, batcher.Change{Header: h, UID: u, Ack: ack})
	}
	return buf, c.cfg.DLQ.Invalid(ctx, m, inv, ack)
}

// tooLargeDetail is the error of a too_large letter: which members of the
// event's n do not fit (the first maxNamedUIDs of them, each quoted short).
func tooLargeDetail(big []string, n int) string {
	var b strings.Builder
	if n == 1 {
		b.WriteString("the member does not fit in any request body: a request with it alone exceeds BATCH_MAX_BYTES: uid ")
	} else {
		b.WriteString(strconv.Itoa(len(big)) + " of the event's " + strconv.Itoa(n) +
			" members do not fit in any request body (a request with one alone exceeds BATCH_MAX_BYTES); ")
		if len(big) < n {
			b.WriteString("the others were sent. ")
		}
		b.WriteString("Too large: uid ")
	}
	for i, u := range big[:min(len(big), maxNamedUIDs)] {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(event.Quote(u))
	}
	if len(big) > maxNamedUIDs {
		b.WriteString(" and " + strconv.Itoa(len(big)-maxNamedUIDs) + " more")
	}
	return b.String()
}
