package consumer_test

import (
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// wsRecord is the single-member event of c naming workspace ws, keyed by uid.
func wsRecord(c change, ws string) rec {
	return rec{part: c.part, key: []byte(c.uid), value: event.Encode(event.Event{Action: c.action, Partner: partner,
		CohortID: c.cohort, CohortName: "Name_" + c.cohort, UIDs: []string{c.uid}, Workspace: ws})}
}

// Issue 21, routing's first step: an event naming the workspace this worker
// sends to (Config.Workspace), or none, is sent; one naming another
// workspace is never sent but dead-lettered as unknown_workspace with its
// key, value and headers, and where it was read; the partition's commit
// passes both. One member per workspace lives in one partition, between
// valid records, so that a misrouted record held back anything after it
// would show as a missing commit.
func TestUnknownWorkspaceDeadLettered(t *testing.T) {
	h := newHarness(t)
	a := h.startReplica("a", replicaOpts{workspace: "WS_A"})
	a.waitAssigned(t, partitions)

	other := wsRecord(change{1, event.Add, "c1", "p1-ws-b"}, "WS_B")
	other.headers = []kafka.Header{{Key: "origin", Value: []byte("upstream-2")}}
	var recs []rec
	for p := range partitions {
		recs = append(recs, valid(change{p, event.Add, "c1", fmt.Sprintf("p%d-before", p)}))
		switch p {
		case 0:
			recs = append(recs, wsRecord(change{p, event.Add, "c1", "p0-ws-a"}, "WS_A"))
		case 1:
			recs = append(recs, wsRecord(change{p, event.Add, "c1", "p1-ws-a"}, "WS_A"), other)
		}
		recs = append(recs, valid(change{p, event.Remove, "c2", fmt.Sprintf("p%d-after", p)}))
	}
	h.produce(recs...)
	log := h.readTopic(topic, partitions)
	h.waitCommittedToEnd(20 * time.Second)

	// Sent: everything but WS_B's record, and the WS_A members among it.
	checkFold(t, h.rec.foldAccepted(nil), foldLog(log, func(ev event.Event) bool { return ev.Workspace != "WS_B" }))
	for _, u := range []string{"p0-ws-a", "p1-ws-a"} {
		if h.rec.foldAccepted(nil)[memberKey{"c1", u}] != event.Add {
			t.Errorf("%s, of the worker's own workspace, was not sent", u)
		}
	}
	for _, s := range h.rec.snapshot() {
		for _, u := range s.req.UIDs {
			if u == "p1-ws-b" {
				t.Fatalf("WS_B's member was sent to this worker's workspace: %+v", s.req)
			}
		}
	}

	dead := h.readTopic(dlqTopic, dlqParts)
	if len(dead) != 1 || string(dead[0].Key) != string(other.key) {
		t.Fatalf("%d dead letters (%v), want the WS_B record", len(dead), dead)
	}
	var src kafka.Message
	for _, m := range log {
		if string(m.Key) == string(other.key) {
			src = m
		}
	}
	m := dead[0]
	if string(m.Value) != string(other.value) {
		t.Errorf("letter value %q, want the original %q", m.Value, other.value)
	}
	want := map[string]string{
		deadletter.HeaderReason:          string(event.ReasonUnknownWorkspace),
		deadletter.HeaderSourceTopic:     topic,
		deadletter.HeaderSourcePartition: strconv.Itoa(src.Partition),
		deadletter.HeaderSourceOffset:    strconv.FormatInt(src.Offset, 10),
		partHeader:                       "1",
		"origin":                         "upstream-2",
	}
	for k, v := range want {
		if g, _ := header(m, k); g != v {
			t.Errorf("letter header %s = %q, want %q", k, g, v)
		}
	}
	if e, _ := header(m, deadletter.HeaderError); !strings.Contains(e, `"WS_B"`) || !strings.Contains(e, `"WS_A"`) {
		t.Errorf("letter error %q does not name the event's workspace and the served one", e)
	}
	for name, c := range map[string]float64{
		"events_invalid_total":       testutil.ToFloat64(a.m.EventsInvalid.WithLabelValues(string(event.ReasonUnknownWorkspace))),
		"events_dead_lettered_total": testutil.ToFloat64(a.m.EventsDeadLettered.WithLabelValues(string(event.ReasonUnknownWorkspace))),
	} {
		if c != 1 {
			t.Errorf("%s{reason=unknown_workspace} = %v, want 1", name, c)
		}
	}
	h.rec.checkNoViolations(t)
}

// With no workspace configured, an event naming one goes nowhere but the
// dead-letter topic: an unset Config.Workspace is not "any workspace".
// Events naming none are sent as before.
func TestNoWorkspaceConfiguredDeadLettersNamedOnes(t *testing.T) {
	h := newHarness(t)
	h.startReplica("a", replicaOpts{}).waitAssigned(t, partitions)

	named := wsRecord(change{2, event.Add, "c1", "p2-named"}, "WS_A")
	h.produce(valid(change{2, event.Add, "c1", "p2-before"}), named, valid(change{2, event.Add, "c1", "p2-after"}))
	h.waitCommittedToEnd(20 * time.Second)

	got := h.rec.foldAccepted(nil)
	if got[memberKey{"c1", "p2-before"}] != event.Add || got[memberKey{"c1", "p2-after"}] != event.Add || len(got) != 2 {
		t.Errorf("accepted %s, want p2-before and p2-after only", fmtFold(got))
	}
	dead := h.readTopic(dlqTopic, dlqParts)
	if len(dead) != 1 || string(dead[0].Key) != string(named.key) {
		t.Fatalf("%d dead letters, want the record naming WS_A", len(dead))
	}
	if r, _ := header(dead[0], deadletter.HeaderReason); r != string(event.ReasonUnknownWorkspace) {
		t.Errorf("reason %q, want unknown_workspace", r)
	}
	if e, _ := header(dead[0], deadletter.HeaderError); !strings.Contains(e, `"WS_A"`) || !strings.Contains(e, "no workspace is configured") {
		t.Errorf("error %q", e)
	}
}

// Issue 21, the registry's accept rule (Config.Serves): an event naming the
// default or a workspace Serves accepts is sent; one naming a workspace
// neither covers is dead-lettered as unknown_workspace, its error naming
// MOENGAGE_WORKSPACES_DIR. A workspace that Serves starts accepting later
// (added to the registry) is sent from then on.
func TestRegistryWorkspacesServed(t *testing.T) {
	h := newHarness(t)
	var added atomic.Bool
	serves := func(ws string) bool { return ws == "WS_C" || ws == "WS_D" && added.Load() }
	h.startReplica("a", replicaOpts{workspace: "WS_A", serves: serves}).waitAssigned(t, partitions)

	unknown := wsRecord(change{0, event.Add, "c1", "p0-ws-b"}, "WS_B")
	early := wsRecord(change{1, event.Add, "c1", "p1-ws-d-early"}, "WS_D")
	h.produce(valid(change{0, event.Add, "c1", "p0-none"}), wsRecord(change{0, event.Add, "c1", "p0-ws-a"}, "WS_A"),
		wsRecord(change{0, event.Add, "c1", "p0-ws-c"}, "WS_C"), unknown, early)
	h.waitCommittedToEnd(20 * time.Second)
	added.Store(true)
	h.produce(wsRecord(change{1, event.Add, "c1", "p1-ws-d-late"}, "WS_D"))
	h.waitCommittedToEnd(20 * time.Second)

	got := h.rec.foldAccepted(nil)
	for _, u := range []string{"p0-none", "p0-ws-a", "p0-ws-c", "p1-ws-d-late"} {
		if got[memberKey{"c1", u}] != event.Add {
			t.Errorf("%s was not sent", u)
		}
	}
	if len(got) != 4 {
		t.Errorf("accepted %s, want the four served members only", fmtFold(got))
	}
	dead := h.readTopic(dlqTopic, dlqParts)
	if len(dead) != 2 || string(dead[0].Key) != string(unknown.key) && string(dead[1].Key) != string(unknown.key) {
		t.Fatalf("%d dead letters, want WS_B's and WS_D's before it was added", len(dead))
	}
	for _, d := range dead {
		if r, _ := header(d, deadletter.HeaderReason); r != string(event.ReasonUnknownWorkspace) {
			t.Errorf("reason %q, want unknown_workspace", r)
		}
		if e, _ := header(d, deadletter.HeaderError); !strings.Contains(e, "MOENGAGE_WORKSPACES_DIR") || !strings.Contains(e, `"WS_A"`) {
			t.Errorf("error %q does not name the registry and the default", e)
		}
	}
}

// With a registry and no default workspace, an event naming none has
// nowhere to go: it is dead-lettered as invalid_field, never sent (to
// whichever workspace the sink would pick).
func TestRegistryWithoutDefaultDeadLettersUnnamed(t *testing.T) {
	h := newHarness(t)
	h.startReplica("a", replicaOpts{serves: func(ws string) bool { return ws == "WS_C" }}).waitAssigned(t, partitions)

	unnamed := valid(change{2, event.Add, "c1", "p2-none"})
	h.produce(unnamed, wsRecord(change{2, event.Add, "c1", "p2-ws-c"}, "WS_C"))
	h.waitCommittedToEnd(20 * time.Second)

	if got := h.rec.foldAccepted(nil); got[memberKey{"c1", "p2-ws-c"}] != event.Add || len(got) != 1 {
		t.Errorf("accepted %s, want p2-ws-c only", fmtFold(got))
	}
	dead := h.readTopic(dlqTopic, dlqParts)
	if len(dead) != 1 || string(dead[0].Key) != string(unnamed.key) {
		t.Fatalf("%d dead letters, want the record naming no workspace", len(dead))
	}
	if r, _ := header(dead[0], deadletter.HeaderReason); r != string(event.ReasonInvalidField) {
		t.Errorf("reason %q, want invalid_field", r)
	}
	if e, _ := header(dead[0], deadletter.HeaderError); !strings.Contains(e, "MOENGAGE_WORKSPACE_ID") {
		t.Errorf("error %q does not name MOENGAGE_WORKSPACE_ID", e)
	}
}
