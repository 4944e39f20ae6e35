package consumer_test

import (
	"strings"
	"testing"
	"time"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// Invariants 1 and 7 with a member too large for any request (issue 10 §3):
// the consumer dead-letters the original record with the reason too_large,
// sends the other members of a bulk event, and commits past both records
// once their letters are written and those members accepted.
func TestTooLargeMemberDeadLetteredEndToEnd(t *testing.T) {
	h := newHarness(t)
	a := h.startReplica("a", replicaOpts{})
	a.waitAssigned(t, partitions)

	big := strings.Repeat("B", 200_000)
	single := event.Encode(event.Event{Action: event.Add, Partner: partner, CohortID: "c1", CohortName: "Name_c1", UIDs: []string{big}})
	bulk := event.Encode(event.Event{Action: event.Add, Partner: partner, CohortID: "c1", CohortName: "Name_c1",
		UIDs: []string{"p1-a", big + "2", "p1-b"}})
	h.produce(valid(change{0, event.Add, "c1", "p0-before"}),
		rec{part: 0, key: []byte("k-single"), value: single},
		valid(change{0, event.Add, "c1", "p0-after"}),
		rec{part: 1, key: []byte("k-bulk"), value: bulk})
	h.waitCommittedToEnd(20 * time.Second)

	dead := h.readTopic(dlqTopic, dlqParts)
	if len(dead) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dead))
	}
	for _, m := range dead {
		want := map[string][]byte{"k-single": single, "k-bulk": bulk}[string(m.Key)]
		if string(m.Value) != string(want) {
			t.Errorf("letter %q is not its original record", m.Key)
		}
		if r, _ := header(m, deadletter.HeaderReason); r != string(event.ReasonTooLarge) {
			t.Errorf("letter %q: reason %q", m.Key, r)
		}
		if e, _ := header(m, deadletter.HeaderError); len(e) > deadletter.MaxHeaderValue || !strings.Contains(e, `"BBBB`) {
			t.Errorf("letter %q: error %q", m.Key, e)
		}
	}
	got := h.rec.foldAccepted(nil)
	for _, u := range []string{"p0-before", "p0-after", "p1-a", "p1-b"} {
		if got[memberKey{"c1", u}] != event.Add {
			t.Errorf("%s not accepted", u)
		}
	}
	for k := range got {
		if len(k.uid) > 1000 {
			t.Errorf("a too-large member was sent (%d bytes)", len(k.uid))
		}
	}
	if n := len(got); n != 4 {
		t.Errorf("%d members accepted, want 4", n)
	}
	h.rec.checkNoViolations(t)
}
