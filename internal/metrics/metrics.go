// Package metrics defines every Prometheus metric the worker exports, on a
// registry the caller owns. Names follow the Prometheus conventions (_total,
// _seconds, _bytes) and no label carries a cohort id or uid.
package metrics

import (
	"runtime"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/cohortsync/cohortsync-worker/internal/event"
)

const ns = "cohortsync"

// Metrics holds the worker's metrics. A nil *Metrics is not valid; use
// New(nil) (an unregistered set) in tests that do not look at them.
// All fields are safe for concurrent use.
type Metrics struct {
	EventsConsumed     prometheus.Counter
	EventsInvalid      *prometheus.CounterVec // reason
	EventsDeadLettered *prometheus.CounterVec // reason
	DeadLetterFailures *prometheus.CounterVec // reason: too_large, permanent, transient
	DeadLetterFailing  prometheus.Gauge       // 1 while dead letters cannot be written
	EventsSkipped      prometheus.Counter     // tombstones
	EventsCompacted    prometheus.Counter     // superseded members
	BatchMembers       prometheus.Histogram
	BatchBytes         prometheus.Histogram
	BatchesFlushed     *prometheus.CounterVec // action, trigger
	Requests           *prometheus.CounterVec // action, code
	RequestDuration    prometheus.Histogram
	Retries            *prometheus.CounterVec // reason
	RateLimitWait      prometheus.Counter     // seconds spent waiting for a permit
	RateLimitRPM       prometheus.Gauge       // this replica's current share
	BoardDuplicates    prometheus.Counter     // budget records under our name we did not write
	PendingMembers     prometheus.Gauge
	InFlight           prometheus.Gauge
	CommittedOffset    *prometheus.GaugeVec   // topic, partition
	Lag                *prometheus.GaugeVec   // topic, partition
	Commits            *prometheus.CounterVec // outcome
	AssignedPartitions prometheus.Gauge
	Rebalances         prometheus.Counter
	LeaseRenewals      *prometheus.CounterVec // outcome: ok, fenced, error
	LeaseValid         prometheus.Gauge
	AuthFailing        prometheus.Gauge       // 1 while line_stopped{reason="auth"} or {reason="config"} is 1
	LineStopped        *prometheus.GaugeVec   // reason (sink.LineStopReasons)
	LineStoppedProbes  *prometheus.CounterVec // reason (sink.LineStopReasons)
	PerWorkspace                              // workspace.go
	Ready              prometheus.Gauge
	BuildInfo          *prometheus.GaugeVec
	Parking            // parking.go
	// Loops is the progress heartbeat of the process's own loops, behind
	// /healthz (not a Prometheus metric).
	Loops *Loops
}

// triggers are the values of the batches_flushed_total trigger label:
// batcher.Triggers (batcher/trigger.go says what each means; a batcher
// test checks that the two lists agree).
var triggers = []string{"bytes", "members", "slots", "header_change", "window", "shutdown", "ahead"}

// DeadLetterFailureReasons are the bounded values of the
// dead_letter_failures_total reason label.
var DeadLetterFailureReasons = []string{"too_large", "permanent", "transient"}

// retryReasons are the values of the retries_total reason label:
// sink.RetryReasons (sink/reason.go says what each means; a sink test
// checks that the two lists agree).
var retryReasons = []string{"rate_limited", "server_error", "timeout", "network", "too_large", "invalid", "auth",
	"status_fail", "lease"}

// lineStopReasons are the values of the line_stopped and
// line_stopped_probes_total reason label: sink.LineStopReasons (a sink test
// checks that the two lists agree).
var lineStopReasons = []string{"auth", "config", "invalid_batch", "no_key"}

// New builds the metrics and registers them on reg (nil: not
// registered). Known label values are pre-initialised so that series exist
// from the start.
func New(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		EventsConsumed: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "events_consumed_total",
			Help: "Kafka records read from the input topics."}),
		EventsInvalid: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_invalid_total",
			Help: "Records that failed decoding or validation, or that name a workspace this worker does not send to (unknown_workspace), by reason."}, []string{"reason"}),
		EventsDeadLettered: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "events_dead_lettered_total",
			Help: "Records written to the dead-letter topic, by reason."}, []string{"reason"}),
		DeadLetterFailures: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "dead_letter_failures_total",
			Help: "Failed dead-letter writes, by reason: too_large (a letter refused as too large, written again without the record's value), permanent (an error the broker calls permanent; retried) or transient (retried)."}, []string{"reason"}),
		DeadLetterFailing: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "dead_letter_failing",
			Help: "1 while dead letters cannot be written (a permanent error, or failures for over a minute): their records are not committed (readiness does not change)."}),
		EventsSkipped: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "events_skipped_total",
			Help: "Records skipped on purpose (tombstones)."}),
		EventsCompacted: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "events_compacted_total",
			Help: "Member changes superseded by a later change for the same cohort and uid before being sent."}),
		BatchMembers: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "batch_members",
			Help:    "Members per request sent.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9)}),
		BatchBytes: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "batch_bytes",
			Help:    "Encoded request body size in bytes.",
			Buckets: prometheus.ExponentialBuckets(256, 2, 10)}),
		BatchesFlushed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "batches_flushed_total",
			Help: "Batches handed to the sink, by action and what made them due (trigger): bytes (the body cap), members (the member cap), slots (the member table's bound), header_change (a change with another cohort_name or cohort_description), window (the window ended), shutdown (draining), ahead (sent early, before a later full batch of the same cohort)."}, []string{"action", "trigger"}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "requests_total",
			Help: "HTTP requests to the Cohort Sync API, by action and status code (0 = no response)."}, []string{"action", "code"}),
		RequestDuration: prometheus.NewHistogram(prometheus.HistogramOpts{Namespace: ns, Name: "request_duration_seconds",
			Help: "Duration of one HTTP attempt.", Buckets: prometheus.DefBuckets}),
		Retries: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "retries_total",
			Help: "Attempts repeated after a failure, by reason."}, []string{"reason"}),
		RateLimitWait: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "rate_limit_wait_seconds_total",
			Help: "Time spent waiting for a rate-limit permit or a 429 pause."}),
		RateLimitRPM: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "rate_limit_requests_per_minute",
			Help: "This replica's request rate in force: its share of the fleet-wide budget, less what it lends, plus what it borrows."}),
		BoardDuplicates: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "budget_board_duplicates_total",
			Help: "Budget-board records read under this replica's name that this process did not write: another process uses the same name, the two overwrite each other's records and sharing falls back to static shares."}),
		PendingMembers: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "pending_members",
			Help: "Member changes read but not yet accepted, superseded or dead-lettered."}),
		InFlight: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "in_flight_requests",
			Help: "Batches being sent."}),
		CommittedOffset: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "committed_offset",
			Help: "Last offset committed, per partition."}, []string{"topic", "partition"}),
		Lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "consumer_lag",
			Help: "Records between the committed offset and the end of the partition."}, []string{"topic", "partition"}),
		Commits: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "offset_commits_total",
			Help: "Offset commit calls, by outcome."}, []string{"outcome"}),
		AssignedPartitions: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "assigned_partitions",
			Help: "Partitions assigned to this replica in the current generation."}),
		Rebalances: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Name: "rebalances_total",
			Help: "Consumer-group generations this replica has joined."}),
		LeaseRenewals: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "lease_renewals_total",
			Help: "Proofs of group membership (heartbeats of the worker's own), by outcome: ok, fenced, error."}, []string{"outcome"}),
		LeaseValid: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "lease_valid",
			Help: "1 while this replica holds a valid proof of group membership and may send; 0 while sending waits for one."}),
		AuthFailing: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "auth_failing",
			Help: "1 while sending is stopped because the API rejects the credentials (401, 403, an authentication error) or the configuration (404, 405, 415, 3xx, a request header): line_stopped reason auth or config."}),
		LineStopped: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "line_stopped",
			Help: "1 while sending is stopped (retried slowly, nothing dropped or committed), by reason."}, []string{"reason"}),
		LineStoppedProbes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Name: "line_stopped_probes_total",
			Help: "Probes of a stopped line: each time a stopped Send sends again, after a pause that doubles from 30s to 5m, by reason."}, []string{"reason"}),
		PerWorkspace: newPerWorkspace(),
		Ready: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Name: "ready",
			Help: "1 when the replica is ready (/readyz): started, and joined or joining the consumer group. A stopped line or failing dead letters do not change it (see line_stopped, dead_letter_failing)."}),
		BuildInfo: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Name: "build_info",
			Help: "Build information; always 1."}, []string{"version", "goversion"}),
		Loops:   newLoops(),
		Parking: newParking(),
	}
	for _, r := range event.Reasons {
		m.EventsInvalid.WithLabelValues(string(r))
		m.EventsDeadLettered.WithLabelValues(string(r))
	}
	for _, r := range DeadLetterFailureReasons {
		m.DeadLetterFailures.WithLabelValues(r)
	}
	for _, a := range []event.Action{event.Add, event.Remove} {
		for _, tr := range triggers {
			m.BatchesFlushed.WithLabelValues(string(a), tr)
		}
	}
	for _, r := range retryReasons {
		m.Retries.WithLabelValues(r)
	}
	for _, r := range lineStopReasons {
		m.LineStopped.WithLabelValues(r)
		m.LineStoppedProbes.WithLabelValues(r)
	}
	for _, o := range []string{"ok", "error"} {
		m.Commits.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.PerWorkspace.collectors()...)
	}
	for _, o := range []string{"ok", "fenced", "error"} {
		m.LeaseRenewals.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.EventsConsumed, m.EventsInvalid, m.EventsDeadLettered, m.DeadLetterFailures, m.DeadLetterFailing, m.EventsSkipped,
			m.EventsCompacted, m.BatchMembers, m.BatchBytes, m.BatchesFlushed, m.Requests,
			m.RequestDuration, m.Retries, m.RateLimitWait, m.RateLimitRPM, m.BoardDuplicates, m.PendingMembers, m.InFlight,
			m.CommittedOffset, m.Lag, m.Commits, m.AssignedPartitions, m.Rebalances, m.LeaseRenewals, m.LeaseValid, m.AuthFailing,
			m.LineStopped, m.LineStoppedProbes, m.Ready, m.BuildInfo)
		reg.MustRegister(m.Parking.collectors()...)
	}
	return m
}

// BatchFlushed counts a batch handed to the sink (batcher.Metrics): its
// action, what made it due (batcher.Trigger), its members and body bytes.
func (m *Metrics) BatchFlushed(action, trigger string, members, bodyBytes int) {
	m.BatchesFlushed.WithLabelValues(action, trigger).Inc()
	m.BatchMembers.Observe(float64(members))
	m.BatchBytes.Observe(float64(bodyBytes))
}

// SetBacklog sets pending_members and in_flight_requests (batcher.Metrics).
func (m *Metrics) SetBacklog(pending, inFlight int) {
	m.PendingMembers.Set(float64(pending))
	m.InFlight.Set(float64(inFlight))
}

// AddCompacted adds n to events_compacted_total (batcher.Metrics).
func (m *Metrics) AddCompacted(n int64) { m.EventsCompacted.Add(float64(n)) }

// StartLoop registers a loop's heartbeat on m.Loops (batcher.Metrics; the
// interface is batcher.Heartbeat's, spelt out so that this package does
// not import batcher).
func (m *Metrics) StartLoop(name string) interface {
	Busy()
	Idle()
	Stop()
} {
	return m.Loops.Start(name)
}

// SetBuildInfo sets cohortsync_build_info{version, goversion} to 1.
func (m *Metrics) SetBuildInfo(version string) {
	m.BuildInfo.WithLabelValues(version, runtime.Version()).Set(1)
}

// Code renders an HTTP status for the code label (0 when there was no response).
func Code(status int) string { return strconv.Itoa(status) }

// CodeFail renders, for the code label, a 2xx answer whose body says
// "status": "fail" (e.g. "200_fail"): no acceptance, and not matched by
// code=~"2..".
func CodeFail(status int) string { return strconv.Itoa(status) + "_fail" }

// CodeNotAPI renders, for the code label, a 2xx answer whose body is not
// the API's (not a JSON object whose status is success or fail): e.g.
// "200_not_api". Something else answers at the base URL.
func CodeNotAPI(status int) string { return strconv.Itoa(status) + "_not_api" }

// RegisterRuntime adds the Go and process collectors to reg.
func RegisterRuntime(reg prometheus.Registerer) {
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
}
