package batcher

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/cohortsync/cohortsync-worker/internal/wire"
)

// Ack is the handle of the log record a change came from. Done is called
// exactly once per change, when the change was accepted by the API,
// superseded by a later change whose batch was accepted, or dead-lettered.
// It is never called for changes dropped by Revoke or abandoned by a failed
// send. Done must not call back into the Batcher.
type Ack interface{ Done() }

// Change is one member change read from the log.
type Change struct {
	Header wire.Header // workspace, action, partner and cohort of the change
	UID    string
	Ack    Ack
}

// Sink sends one batch, taking the rate-limit permits its attempts need.
// It returns nil once every member was accepted or returned as a
// Rejection. An error means the batch was not (entirely) delivered: nothing
// of it is acknowledged.
type Sink interface {
	Send(ctx context.Context, req wire.Request) ([]wire.Rejection, error)
}

// Rejected is a change the API (or the sink) refused on its own, with every
// Ack it carries (its own and those it superseded).
type Rejected struct {
	Header wire.Header
	UID    string
	Reason string
	Acks   []Ack
}

// DeadLetterFunc writes rejected changes to the dead-letter topic and only
// then calls Done on their Acks. It returns an error only when ctx ended
// before the write succeeded; the changes are then left unacknowledged.
type DeadLetterFunc func(ctx context.Context, rejected []Rejected) error

// Config configures a Batcher. Zero values take the documented defaults.
type Config struct {
	// Limits bound the batches. In a Batcher, MaxInFlight is the number of
	// sends in progress per workspace (the sink bounds the concurrent
	// requests; see slots.go), MaxOut the sends in progress in all, and
	// MaxPending the member changes read but not acknowledged before Add
	// blocks.
	Limits

	Sink       Sink           // required
	DeadLetter DeadLetterFunc // required
	Logger     *slog.Logger
	Metrics    Metrics // nil: none
}

// ErrStopped is returned by Add, Revoke and Flush once Run has returned.
var ErrStopped = errors.New("batcher: stopped")

// Batcher runs a Core: one goroutine, Run's, owns it, and every other
// method asks that goroutine over a channel. See the package doc.
type Batcher struct {
	cfg  Config
	log  *slog.Logger
	m    Metrics
	core *Core // owned by Run's goroutine

	adds    chan addRequest
	replies chan chan addReply // Add's answer channels, recycled (a sync.Pool would mix synctest bubbles)
	flushes chan chan struct{}
	revokes chan chan (<-chan struct{})
	results chan sendResult
	stopped chan struct{} // closed when Run returns

	// Mirrors of the Core's counts, stored by Run's goroutine.
	pending, inFlight atomic.Int64
}

// New returns a Batcher. Run must be running for it to take changes and
// send batches.
func New(cfg Config) (*Batcher, error) {
	core, err := NewCore(cfg.Limits)
	if err != nil {
		return nil, err
	}
	cfg.Limits = core.lim
	switch {
	case cfg.Sink == nil:
		return nil, errors.New("batcher: Sink is required")
	case cfg.DeadLetter == nil:
		return nil, errors.New("batcher: DeadLetter is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = noMetrics{}
	}
	return &Batcher{
		cfg:     cfg,
		log:     cfg.Logger.With("component", "batcher"),
		m:       cfg.Metrics,
		core:    core,
		adds:    make(chan addRequest),
		replies: make(chan chan addReply, 64),
		flushes: make(chan chan struct{}),
		revokes: make(chan chan (<-chan struct{})),
		results: make(chan sendResult),
		stopped: make(chan struct{}),
	}, nil
}

// Fits reports whether a request with header h and the single member uid
// fits within MaxBytes. A change that does not fit can never be sent (the
// consumer dead-letters its record as too_large instead of adding it).
func (b *Batcher) Fits(h wire.Header, uid string) bool {
	if wire.SingleBodyBound(h, uid) <= b.cfg.MaxBytes {
		return true // the common case, without quoting five strings per change
	}
	return wire.BodySize(wire.EnvelopeSize(h), 1, wire.MemberSize(uid)) <= b.cfg.MaxBytes
}

type addRequest struct {
	changes []Change
	reply   chan addReply
}

type addReply struct {
	added int
	space <-chan struct{} // closed when there is room again
}

// Add adds changes in log order. It blocks while MaxPending member changes
// are pending (backpressure), and returns ctx.Err() if ctx ends first (or
// ErrStopped once Run has returned); the changes not added by then are not
// acknowledged.
//
// Every change should Fit. One that does not anyway (a caller's bug) is put
// in a batch of its own, never with others, so that no body with other
// members exceeds MaxBytes; the Sink refuses it (the HTTP sink rejects a
// member too large on its own without sending it).
func (b *Batcher) Add(ctx context.Context, changes []Change) error {
	var reply chan addReply
	select {
	case reply = <-b.replies:
	default:
		reply = make(chan addReply, 1)
	}
	defer func() {
		select {
		case b.replies <- reply: // empty: every request sent is answered before Add returns
		default:
		}
	}()
	for len(changes) > 0 {
		select {
		case b.adds <- addRequest{changes, reply}:
		case <-ctx.Done():
			return ctx.Err()
		case <-b.stopped:
			return ErrStopped
		}
		r := <-reply // Run answers at once
		changes = changes[r.added:]
		if len(changes) == 0 {
			break
		}
		select {
		case <-r.space:
		case <-ctx.Done():
			return ctx.Err()
		case <-b.stopped:
			return ErrStopped
		}
	}
	return nil
}

// Revoke drops every pending change (the new owner of the partitions will
// read them again from the last commit), stops the retries of in-flight
// batches and waits until the attempts under way have finished. Nothing
// dropped or abandoned is acknowledged. It returns ctx.Err() if ctx ends
// before the in-flight attempts finish.
func (b *Batcher) Revoke(ctx context.Context) error {
	reply := make(chan (<-chan struct{}), 1)
	select {
	case b.revokes <- reply:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stopped:
		return nil // Run waited for its sends before it returned
	}
	idle := <-reply
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stopped:
		return nil
	}
}

// Flush makes every batch due now, and every batch created later too, and
// waits until nothing is pending or in flight (shutdown drain). It returns
// ctx.Err() if ctx ends first.
func (b *Batcher) Flush(ctx context.Context) error {
	drained := make(chan struct{})
	select {
	case b.flushes <- drained:
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stopped:
		return ErrStopped
	}
	select {
	case <-drained:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-b.stopped:
		return ErrStopped
	}
}

// Pending returns the number of member changes read but not yet settled.
func (b *Batcher) Pending() int { return int(b.pending.Load()) }

// InFlight returns the number of batches being sent.
func (b *Batcher) InFlight() int { return int(b.inFlight.Load()) }
