package integration

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// ownership is one generation of one replica: the partitions it held from
// joining until its fence completed.
type ownership struct {
	from, to time.Time // to is zero while the generation is live
	parts    []string  // "topic/partition"
}

// generations reads a worker's ownership history from its logs.
func (w *worker) generations() (replica string, gens []ownership) {
	for _, l := range w.logs() {
		ts, _ := time.Parse(time.RFC3339Nano, fmt.Sprint(l["time"]))
		switch l["msg"] {
		case "starting cohortsync-worker":
			replica = fmt.Sprint(l["replica"])
		case "joined generation":
			gens = append(gens, ownership{from: ts, parts: strings.Split(fmt.Sprint(l["assigned"]), ",")})
		case "fenced generation: nothing of it is pending or in flight":
			if n := len(gens); n > 0 && gens[n-1].to.IsZero() {
				gens[n-1].to = ts
			}
		}
	}
	return replica, gens
}

// TestRebalance: three replicas started and stopped one at a time under
// load end in the same final state, and no replica sends a cohort's change
// while it does not own the cohort's partition.
func TestRebalance(t *testing.T) {
	const partitions = 6
	topic, dlq := newTopic(t, partitions)
	a := startAPI(t, nil)
	p := newProducer(t, topic)
	g := newGen(7, 60, 3000)
	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["BATCH_WINDOW"] = "200ms"
	stop := p.background(t, g, 800)

	var ws []*worker
	for i := range 3 {
		ws = append(ws, startWorker(t, fmt.Sprint("r", i), env))
		time.Sleep(6 * time.Second)
	}
	for _, w := range ws[:2] {
		if err := w.stop(40 * time.Second); err != nil {
			t.Fatalf("stopping %s: %v", w.name, err)
		}
		time.Sleep(6 * time.Second)
	}
	stop()
	waitConverged(t, a, p.model(), 2*time.Minute)
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], time.Minute)
	if err := ws[2].stop(40 * time.Second); err != nil {
		t.Fatal(err)
	}

	// Fencing: every request a replica sent falls inside one of its
	// generations that held the cohort's partition.
	owners := map[string][]ownership{}
	for _, w := range ws {
		r, gens := w.generations()
		if r == "" || len(gens) == 0 {
			t.Fatalf("no generations logged by %s", w.name)
		}
		owners[r] = gens
	}
	parts := make([]int, partitions)
	for i := range parts {
		parts[i] = i
	}
	hash := &kafka.Hash{}
	checked, rebalances := 0, 0
	for _, gens := range owners {
		rebalances += len(gens)
	}
	for _, r := range a.Requests() {
		gens, ok := owners[r.Replica]
		if !ok {
			t.Fatalf("request %d from unknown replica %q", r.Seq, r.Replica)
		}
		part := fmt.Sprintf("%s/%d", topic, hash.Balance(kafka.Message{Key: []byte(r.CohortID)}, parts...))
		owned := false
		for _, o := range gens {
			if !r.Time.Before(o.from) && (o.to.IsZero() || !r.Time.After(o.to)) && slices.Contains(o.parts, part) {
				owned = true
				break
			}
		}
		if !owned {
			t.Errorf("request %d (cohort %s, %s) sent by %s at %s while it did not own %s",
				r.Seq, r.CohortID, r.Action, r.Replica, r.Time.Format(time.RFC3339Nano), part)
		}
		checked++
	}
	if rebalances < 6 {
		t.Fatalf("only %d generations in all: the replicas did not rebalance", rebalances)
	}
	t.Logf("%d requests checked against %d generations", checked, rebalances)
}
