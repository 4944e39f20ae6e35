package integration

import (
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
	"github.com/cohortsync/cohortsync-worker/internal/harness/rig"
)

// Tests of API rejections the worker must tell apart (DESIGN.md invariant 7
// and the Retry policy): a 400 that hits every part of a batch alike stops
// the line and drops nothing; a 400 caused by one member dead-letters that
// member alone, found by an isolating split; a 200 whose body says
// "status":"fail" is not an acceptance.

const (
	brInvalidBatch = `cohortsync_line_stopped{reason="invalid_batch"}`
	brStatusFail   = `cohortsync_retries_total{reason="status_fail"}`
	// The worker's AuthRetryInterval, which has no environment variable: a
	// stopped line is retried this often.
	brAuthRetryInterval = 30 * time.Second
)

// TestBatchWide400: for about ten seconds mid-stream the API answers every
// request with the documented 400 "Malformed JSON" (no attribute), as an API
// fault or a proxy would. No member may be blamed: nothing is dead-lettered,
// the worker is not ready with line_stopped{reason="invalid_batch"} 1, and
// nothing is committed past what was accepted before the fault. Once it
// clears, the membership is the fold of the log, the lag is zero and the
// worker is ready again.
func TestBatchWide400(t *testing.T) {
	topic, dlq := newTopic(t, 2)
	a := startAPI(t, nil)
	p := newProducer(t, topic)
	g := newGen(71, 4, 5000) // few repeats: most (cohort, uid) pairs settle below the committed offsets
	g.bulk = true
	env := workerEnv(a, topic, dlq, "g-"+topic)
	group := env["KAFKA_GROUP_ID"]
	w := startWorker(t, "w1", env)
	stop := p.background(t, g, 100)
	ctx := context.Background()

	// Flowing: requests accepted and offsets committed.
	waitFor(t, 30*time.Second, "readiness", w.ready)
	waitFor(t, 30*time.Second, "accepted requests and commits", func() bool {
		_, committed, err := offsets(ctx, topic, group)
		return err == nil && brCountStatus(a.Requests(), 200) >= 10 && brSumOffsets(committed) >= 300
	})

	// The fault.
	if err := a.SetFaults(emulator.Faults{BadRequest: true}); err != nil {
		t.Fatal(err)
	}
	faultAt := time.Now()
	waitFor(t, 15*time.Second, "bad_request answers", func() bool {
		return brCountFault(a.Requests(), emulator.FaultBadRequest) > 0
	})
	// Every violation below is reported (once each), not only the first.
	report := brReporter(t)
	if d := brPoll(10*time.Second, func() bool { return w.metric(brInvalidBatch) == 1 && w.ready() }); d < 0 {
		report("stop", "the line did not stop within 10s of a batch-wide 400: ready %v, %s = %v",
			w.ready(), brInvalidBatch, w.metric(brInvalidBatch))
	} else {
		t.Logf("line stopped (still ready: issue 19), %s after the first 400", d.Round(time.Millisecond))
	}
	// Let the commits of requests accepted before the fault land; from then
	// on nothing is accepted, so nothing may be committed.
	time.Sleep(time.Until(faultAt.Add(3 * time.Second))) // the worker commits every second
	_, before, err := offsets(ctx, topic, group)
	if err != nil {
		t.Fatal(err)
	}
	frozen := a.state()
	for time.Since(faultAt) < 12*time.Second {
		time.Sleep(500 * time.Millisecond)
		in := time.Since(faultAt).Round(time.Millisecond)
		if !w.ready() {
			report("ready", "not ready %s into a batch-wide 400: a stopped line is not a readiness condition", in)
		}
		if v := w.metric(brInvalidBatch); v != 1 {
			report("metric", "%s = %v %s into a batch-wide 400, want 1", brInvalidBatch, v, in)
		}
		if n := brEndOffset(t, dlq); n != 0 {
			report("dlq", "%d dead letters %s into a batch-wide 400, e.g.\n%s", n, in, brDescribeLetters(readAll(t, dlq)))
		}
		_, now, err := offsets(ctx, topic, group)
		if err != nil {
			t.Fatal(err)
		}
		for part, c := range now {
			if c != before[part] {
				report(fmt.Sprint("commit", part), "partition %d committed from %d to %d %s into a batch-wide 400",
					part, before[part], c, in)
			}
		}
	}

	// Nothing was applied during the fault, and what is committed is what
	// the API holds: every (cohort, uid) whose events all lie below the
	// committed offset has the membership their fold implies.
	if d := diff(frozen, a.state()); d != "" {
		t.Errorf("the state changed during the fault: %s", d)
	}
	ends, committed, err := offsets(ctx, topic, group)
	if err != nil {
		t.Fatal(err)
	}
	brCheckCommittedApplied(t, brReadPartitions(t, topic, ends), committed, frozen)
	if t.Failed() {
		t.FailNow()
	}
	var faulted, appliedDuring int
	for _, r := range a.Requests() {
		if r.Time.Before(faultAt) {
			continue
		}
		if r.Fault == emulator.FaultBadRequest {
			faulted++
		}
		if r.Applied {
			appliedDuring++
		}
	}
	if faulted == 0 || appliedDuring != 0 {
		t.Fatalf("during the fault: %d requests answered bad_request, %d applied", faulted, appliedDuring)
	}
	t.Logf("fault held %s: %d requests answered 400, committed %v (ends %v)",
		time.Since(faultAt).Round(time.Millisecond), faulted, committed, ends)

	// Cleared: everything goes through on the next slow retry.
	stop()
	if err := a.SetFaults(emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	cleared := time.Now()
	waitConverged(t, a, p.model(), brAuthRetryInterval+time.Minute)
	waitNoLag(t, topic, group, time.Minute)
	waitFor(t, 30*time.Second, "ready again, line_stopped 0", func() bool {
		return w.ready() && w.metric(brInvalidBatch) == 0
	})
	t.Logf("recovered %s after the fault cleared; %d events", time.Since(cleared).Round(time.Millisecond), p.count)
	if n := brEndOffset(t, dlq); n != 0 {
		t.Fatalf("%d dead letters after a batch-wide 400:\n%s", n, brDescribeLetters(readAll(t, dlq)))
	}
	if v := w.metric("cohortsync_events_dead_lettered_total"); v != 0 {
		t.Fatalf("events_dead_lettered_total = %v", v)
	}
	if err := w.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestPoisonedMember: 1,000 distinct uids added to one cohort in one batch,
// one of which the API refuses with a 400 that names nothing. The isolating
// split finds it: exactly that uid is dead-lettered (api_rejected), every
// other uid becomes a member, within 1 + 2·⌈log2 n⌉ + 3 requests.
func TestPoisonedMember(t *testing.T) {
	const (
		n       = 1000
		poisonI = 637
		cohort  = "cohort-poisoned"
	)
	poison := fmt.Sprintf("u%07d", poisonI)
	topic, dlq := newTopic(t, 1)
	a := startAPI(t, func(c *emulator.Config) { c.Faults.RejectUIDs = []string{poison} })
	p := newProducer(t, topic)
	evs := make([]event.Event, n)
	for i := range evs {
		evs[i] = event.Event{Action: event.Add, Partner: partner, CohortID: cohort, CohortName: "IT_Poisoned",
			UIDs: []string{fmt.Sprintf("u%07d", i)}}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := p.send(ctx, evs...); err != nil { // one burst, before the worker starts
		t.Fatal(err)
	}
	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["BATCH_WINDOW"] = "5s" // all 1,000 are read before the batch is due
	w := startWorker(t, "w1", env)

	letters := readTopic(t, dlq, 1, 2*time.Minute)
	if len(letters) != 1 {
		t.Fatalf("%d dead letters, want 1:\n%s", len(letters), brDescribeLetters(letters))
	}
	m := letters[0]
	h := brHeaders(m)
	ev, err := event.Decode(m.Value, "")
	if err != nil {
		t.Fatalf("dead letter value %q: %v", m.Value, err)
	}
	if string(m.Key) != cohort || ev.Action != event.Add || ev.CohortID != cohort || ev.Partner != partner ||
		len(ev.UIDs) != 1 || ev.UIDs[0] != poison {
		t.Errorf("dead letter key %q value %s, want key %q and an add of %s", m.Key, m.Value, cohort, poison)
	}
	if h[deadletter.HeaderReason] != string(event.ReasonAPIRejected) || !strings.HasPrefix(h[deadletter.HeaderError], "400 ") ||
		!strings.Contains(h[deadletter.HeaderError], emulator.MessageInvalidParameters) ||
		h[deadletter.HeaderSourceTopic] != topic || h[deadletter.HeaderSourcePartition] != "0" ||
		h[deadletter.HeaderSourceOffset] != strconv.Itoa(poisonI) {
		t.Errorf("dead letter headers %v", h)
	}

	want := p.model()
	delete(want[cohortKey{partner, cohort}], poison)
	waitConverged(t, a, want, time.Minute)
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], 30*time.Second)
	if n := brEndOffset(t, dlq); n != 1 { // every letter is written before its record is committed
		t.Errorf("%d dead letters once everything is committed, want 1:\n%s", n, brDescribeLetters(readAll(t, dlq)))
	}
	if !w.ready() || w.metric(brInvalidBatch) != 0 {
		t.Errorf("after the isolation: ready %v, %s = %v", w.ready(), brInvalidBatch, w.metric(brInvalidBatch))
	}
	if v := w.metric(`cohortsync_events_dead_lettered_total{reason="api_rejected"}`); v != 1 {
		t.Errorf(`events_dead_lettered_total{reason="api_rejected"} = %v, want 1`, v)
	}

	var reqs []emulator.RequestRecord
	var lines []string
	for _, r := range a.Requests() {
		if r.CohortID != cohort {
			continue
		}
		reqs = append(reqs, r)
		mark := ""
		if brContainsString(r.Members, poison) {
			mark = " (holds the poisoned uid)"
		}
		lines = append(lines, fmt.Sprintf("  #%d %d members [%s..%s] -> %d %s%s", len(reqs), len(r.Members),
			brFirst(r.Members), brLast(r.Members), r.Status, r.Fault, mark))
	}
	bound := 1 + 2*int(math.Ceil(math.Log2(n))) + 3
	t.Logf("%d requests for the cohort (bound %d):\n%s", len(reqs), bound, strings.Join(lines, "\n"))
	if len(reqs) == 0 || len(reqs[0].Members) != n {
		t.Fatalf("the first request for the cohort did not carry all %d members: the test needs them in one batch", n)
	}
	if len(reqs) > bound {
		t.Errorf("%d requests to isolate one member among %d, want at most %d", len(reqs), n, bound)
	}
	if err := w.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestStatusFail200: while the API answers 200 with {"status":"fail",...},
// nothing is accepted: nothing is committed or dead-lettered, and the
// worker retries (retries_total{reason="status_fail"}); after a few
// identical answers to a batch it takes the 4xx path, and since every part
// fails alike the line stops (invalid_batch). After it clears, the
// membership is the fold of the log.
func TestStatusFail200(t *testing.T) {
	topic, dlq := newTopic(t, 2)
	a := startAPI(t, nil)
	p := newProducer(t, topic)
	g := newGen(73, 6, 300)
	p.sendN(t, g, 500)
	env := workerEnv(a, topic, dlq, "g-"+topic)
	group := env["KAFKA_GROUP_ID"]
	w := startWorker(t, "w1", env)
	ctx := context.Background()
	waitConverged(t, a, p.model(), time.Minute)
	waitNoLag(t, topic, group, 30*time.Second)
	_, before, err := offsets(ctx, topic, group)
	if err != nil {
		t.Fatal(err)
	}
	frozen := a.state()

	if err := a.SetFaults(emulator.Faults{StatusFail: true}); err != nil {
		t.Fatal(err)
	}
	faultAt := time.Now()
	p.sendN(t, g, 500)
	waitFor(t, 20*time.Second, "status_fail answers", func() bool {
		return brCountFault(a.Requests(), emulator.FaultStatusFail) > 0
	})
	report := brReporter(t)
	for time.Since(faultAt) < 6*time.Second {
		time.Sleep(500 * time.Millisecond)
		_, now, err := offsets(ctx, topic, group)
		if err != nil {
			t.Fatal(err)
		}
		for part, c := range now {
			if c != before[part] {
				report(fmt.Sprint("commit", part), "partition %d committed from %d to %d while every answer was status fail",
					part, before[part], c)
			}
		}
		if n := brEndOffset(t, dlq); n != 0 {
			report("dlq", "%d dead letters while every answer was status fail, e.g.\n%s", n, brDescribeLetters(readAll(t, dlq)))
		}
	}
	if d := diff(frozen, a.state()); d != "" {
		t.Errorf("the state changed during the fault: %s", d)
	}
	fails := 0
	for _, r := range a.Requests() {
		if r.Fault == emulator.FaultStatusFail {
			fails++
			if r.Status != 200 || r.Applied {
				t.Errorf("status_fail record %+v", r)
			}
		}
	}
	codeFail := w.metric(`cohortsync_requests_total{action="add_members",code="200_fail"}`) +
		w.metric(`cohortsync_requests_total{action="remove_members",code="200_fail"}`)
	retries := w.metric(brStatusFail)
	t.Logf("during the fault: %d status_fail answers, requests_total{code=\"200_fail\"} %v, retries_total{reason=\"status_fail\"} %v",
		fails, codeFail, retries)
	if fails == 0 || codeFail == 0 || retries == 0 {
		t.Errorf("status fail answers %d, 200_fail requests %v, status_fail retries %v: want all > 0", fails, codeFail, retries)
	}
	if v := w.metric(brInvalidBatch); v != 1 {
		t.Errorf("%s = %v: a status fail that every part of a batch gets, again and again, stops the line", brInvalidBatch, v)
	}
	if t.Failed() {
		t.FailNow()
	}

	if err := a.SetFaults(emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, a, p.model(), brAuthRetryInterval+time.Minute) // the stopped line retries every 30 s
	waitNoLag(t, topic, group, 30*time.Second)
	if n := brEndOffset(t, dlq); n != 0 {
		t.Fatalf("%d dead letters after a status fail:\n%s", n, brDescribeLetters(readAll(t, dlq)))
	}
	if !w.ready() {
		t.Error("not ready after the fault cleared")
	}
	if err := w.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// ---- helpers ----

// brReporter returns a function that reports a failure once per key.
func brReporter(t *testing.T) func(key, format string, args ...any) {
	seen := map[string]bool{}
	return func(key, format string, args ...any) {
		t.Helper()
		if !seen[key] {
			seen[key] = true
			t.Errorf(format, args...)
		}
	}
}

// brPoll polls cond until it holds, and returns how long that took, or -1
// after timeout.
func brPoll(timeout time.Duration, cond func() bool) time.Duration {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	start := time.Now()
	if rig.Wait(ctx, cond) != nil {
		return -1
	}
	return time.Since(start)
}

func brCountFault(recs []emulator.RequestRecord, fault string) int {
	n := 0
	for _, r := range recs {
		if r.Fault == fault {
			n++
		}
	}
	return n
}

func brCountStatus(recs []emulator.RequestRecord, status int) int {
	n := 0
	for _, r := range recs {
		if r.Status == status {
			n++
		}
	}
	return n
}

func brSumOffsets(committed map[int]int64) int64 {
	var s int64
	for _, c := range committed {
		s += max(c, 0)
	}
	return s
}

// endOffset returns the end offset of partition 0 of topic.
func brEndOffset(t *testing.T, topic string) int64 {
	t.Helper()
	ends, _, err := offsets(context.Background(), topic, "none")
	if err != nil {
		t.Fatalf("end offset of %s: %v", topic, err)
	}
	return ends[0]
}

func brHeaders(m kafka.Message) map[string]string {
	h := map[string]string{}
	for _, x := range m.Headers {
		h[x.Key] = string(x.Value)
	}
	return h
}

func brDescribeLetters(ms []kafka.Message) string {
	var b strings.Builder
	for i, m := range ms {
		if i == 10 {
			fmt.Fprintf(&b, "  ... %d more\n", len(ms)-i)
			break
		}
		h := brHeaders(m)
		fmt.Fprintf(&b, "  key %q reason %q error %q value %s\n", m.Key, h[deadletter.HeaderReason], h[deadletter.HeaderError], m.Value)
	}
	return b.String()
}

func brContainsString(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func brFirst(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func brLast(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[len(s)-1]
}

// readPartitions reads every partition of topic from the start up to (not
// including) its offset in ends.
func brReadPartitions(t *testing.T, topic string, ends map[int]int64) map[int][]kafka.Message {
	t.Helper()
	out := map[int][]kafka.Message{}
	for part, end := range ends {
		if end <= 0 {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{brokerAddr}, Topic: topic, Partition: part,
			MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 200 * time.Millisecond})
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				cancel()
				r.Close()
				t.Fatalf("reading %s/%d: got %d of %d records: %v", topic, part, len(out[part]), end, err)
			}
			if m.Offset >= end {
				break
			}
			out[part] = append(out[part], m)
			if m.Offset == end-1 {
				break
			}
		}
		cancel()
		r.Close()
	}
	return out
}

// checkCommittedApplied checks that the committed offsets claim nothing the
// API does not hold. Every event below a partition's committed offset was
// accepted, or superseded by a later event for the same (cohort, uid); so
// for a (cohort, uid) none of whose events lies at or above the committed
// offset, the API's membership must be the fold of its events. state must
// not change while this runs (nothing accepted).
func brCheckCommittedApplied(t *testing.T, msgs map[int][]kafka.Message, committed map[int]int64, state model) {
	t.Helper()
	type cu struct {
		k   cohortKey
		uid string
	}
	below := map[cu]bool{} // the fold below the committed offset: member or not
	later := map[cu]bool{} // has an event at or above it
	checked, uncommitted := 0, 0
	for part, ms := range msgs {
		c := committed[part]
		for _, m := range ms {
			ev, err := event.Decode(m.Value, "")
			if err != nil {
				t.Fatalf("record %d/%d does not decode: %v", part, m.Offset, err)
			}
			for _, u := range ev.UIDs {
				x := cu{cohortKey{ev.Partner, ev.CohortID}, u}
				if m.Offset >= c {
					later[x] = true
					continue
				}
				below[x] = ev.Action == event.Add
			}
			if m.Offset >= c {
				uncommitted++
			}
		}
	}
	bad := 0
	for x, member := range below {
		if later[x] {
			continue
		}
		checked++
		if state[x.k][x.uid] != member {
			bad++
			if bad <= 5 {
				t.Errorf("%s/%s: committed as member=%v, but the API has member=%v", x.k.id, x.uid, member, state[x.k][x.uid])
			}
		}
	}
	t.Logf("commit check: %d (cohort, uid) pairs settled below the committed offsets, %d records above them", checked, uncommitted)
	if checked == 0 || uncommitted == 0 {
		t.Fatalf("the commit check is vacuous: %d settled pairs, %d uncommitted records", checked, uncommitted)
	}
	if bad > 0 {
		t.Fatalf("%d (cohort, uid) pairs committed but not applied", bad)
	}
}
