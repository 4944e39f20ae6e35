package batcher

// Trigger is what made a batch due: the value of the trigger label of
// cohortsync_batches_flushed_total (the dashboards and alerts in deploy/
// use these values).
type Trigger string

// The triggers. A batch is sealed (closed to new members, due at once) by
// bytes, members, slots or header_change; an open batch becomes due by
// window, shutdown or ahead.
const (
	// TriggerBytes: the next member would not fit under the body cap, or
	// no member could.
	TriggerBytes Trigger = "bytes"
	// TriggerMembers: the batch holds the most members a request may.
	TriggerMembers Trigger = "members"
	// TriggerSlots: the batch's member table is full (Limits.MaxSlots: a
	// bound far beyond any body the API accepts; only a huge body cap
	// reaches it).
	TriggerSlots Trigger = "slots"
	// TriggerHeaderChange: a change of the same cohort and action came
	// with another cohort_name or cohort_description, which one body
	// cannot carry.
	TriggerHeaderChange Trigger = "header_change"
	// TriggerWindow: the batch's window, counted from its first member,
	// ended.
	TriggerWindow Trigger = "window"
	// TriggerShutdown: the worker is draining.
	TriggerShutdown Trigger = "shutdown"
	// TriggerAhead: the batch was sent before its window ended, ahead of
	// a later, sealed batch of the same cohort (a cohort's batches are
	// sent in order).
	TriggerAhead Trigger = "ahead"
)

// Triggers are all the triggers.
var Triggers = []Trigger{TriggerBytes, TriggerMembers, TriggerSlots, TriggerHeaderChange, TriggerWindow,
	TriggerShutdown, TriggerAhead}

// Metrics is what a Batcher reports, from Run's goroutine; no call may
// block. *metrics.Metrics (internal/metrics) implements it; a nil Metrics
// in Config reports nothing.
type Metrics interface {
	// BatchFlushed counts a batch handed to the Sink: its action, what
	// made it due (a Trigger), its members and its body's bytes.
	BatchFlushed(action, trigger string, members, bodyBytes int)
	// SetBacklog sets the member changes pending and the batches in flight.
	SetBacklog(pending, inFlight int)
	// AddCompacted counts n more changes that superseded or repeated a
	// pending change of the same member.
	AddCompacted(n int64)
	// StartLoop registers Run's progress heartbeat (behind /healthz).
	StartLoop(name string) Heartbeat
}

// Heartbeat is a loop's progress heartbeat (metrics.Loop): Busy when it
// goes around, Idle before it waits, Stop when it returns. An alias of an
// unnamed interface, so that a method returning the same interface
// literal, without naming this package, implements Metrics.
type Heartbeat = interface {
	Busy()
	Idle()
	Stop()
}

// noMetrics reports nothing.
type noMetrics struct{}

func (noMetrics) BatchFlushed(string, string, int, int) {}
func (noMetrics) SetBacklog(int, int)                   {}
func (noMetrics) AddCompacted(int64)                    {}
func (noMetrics) StartLoop(string) Heartbeat            { return noHeartbeat{} }

type noHeartbeat struct{}

func (noHeartbeat) Busy() {}
func (noHeartbeat) Idle() {}
func (noHeartbeat) Stop() {}
