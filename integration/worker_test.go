package integration

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/emulator"
	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// TestHappyPath: many random adds and removes over many cohorts end as the
// fold of the log; every request is within BATCH_MAX_BYTES, well-formed and
// authenticated; the group's lag reaches zero.
func TestHappyPath(t *testing.T) {
	topic, dlq := newTopic(t, 4)
	a := startAPI(t, nil)
	p := newProducer(t, topic)
	g := newGen(1, 60, 3000)
	g.bulk = true
	p.sendN(t, g, 20000)
	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["BATCH_MAX_BYTES"] = "8000" // many full batches: exercises the byte cap
	w := startWorker(t, "w1", env)
	waitFor(t, 30*time.Second, "readiness", w.ready)
	waitConverged(t, a, p.model(), 2*time.Minute)
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], 30*time.Second)
	ok := checkRequests(t, a, 8000)
	if len(ok) < 20 {
		t.Fatalf("only %d accepted requests", len(ok))
	}
	if err := w.stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
	t.Logf("%d events, %d accepted requests", p.count, len(ok))
}

// TestPoison: malformed JSON, missing fields and forbidden cohort_name
// characters go to the dead-letter topic with reasons; the rest is synced.
func TestPoison(t *testing.T) {
	topic, dlq := newTopic(t, 2)
	a := startAPI(t, nil)
	p := newProducer(t, topic)
	g := newGen(2, 10, 200)
	ctx := context.Background()
	poison := []struct {
		value  string
		reason event.Reason
	}{
		{`{"action":"add_members","cohort_id":`, event.ReasonMalformed},
		{`{"action":"add_members","uid":"u1","cohort_name":"n","partner":"p"}`, event.ReasonMissingField},
		{`{"action":"add_members","uid":"u1","cohort_id":"c","partner":"p"}`, event.ReasonMissingField},
		{`{"action":"add_members","cohort_id":"c","cohort_name":"n","partner":"p"}`, event.ReasonMissingField},
		{`{"action":"add_members","uid":"u1","cohort_id":"c","cohort_name":"a|b","partner":"p"}`, event.ReasonForbiddenChar},
		{`{"action":"add_members","uid":"u1","cohort_id":"c","cohort_name":"a:b","partner":"p"}`, event.ReasonForbiddenChar},
		{`{"action":"upsert","uid":"u1","cohort_id":"c","cohort_name":"n","partner":"p"}`, event.ReasonInvalidAction},
		{`{"action":"add","uid":42,"cohort_id":"c","cohort_name":"n","partner":"p"}`, event.ReasonInvalidField},
	}
	for i, pz := range poison {
		p.sendN(t, g, 50)
		if err := p.raw(ctx, kafka.Message{Key: []byte(fmt.Sprint("poison-", i)), Value: []byte(pz.value)}); err != nil {
			t.Fatal(err)
		}
	}
	p.sendN(t, g, 50)
	env := workerEnv(a, topic, dlq, "g-"+topic)
	startWorker(t, "w1", env)
	waitConverged(t, a, p.model(), time.Minute)
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], 30*time.Second)
	got := readTopic(t, dlq, len(poison), 30*time.Second)
	if len(got) != len(poison) {
		t.Fatalf("dead-letter topic holds %d records, want %d", len(got), len(poison))
	}
	for _, m := range got {
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
		}
		i, err := strconv.Atoi(strings.TrimPrefix(string(m.Key), "poison-"))
		if err != nil {
			t.Fatalf("unexpected dead letter key %q", m.Key)
		}
		if string(m.Value) != poison[i].value {
			t.Errorf("dead letter %d value %q, want the original %q", i, m.Value, poison[i].value)
		}
		if h[deadletter.HeaderReason] != string(poison[i].reason) {
			t.Errorf("dead letter %d reason %q, want %q (error %q)", i, h[deadletter.HeaderReason], poison[i].reason, h[deadletter.HeaderError])
		}
		if h[deadletter.HeaderSourceTopic] != topic || h[deadletter.HeaderSourceOffset] == "" || h[deadletter.HeaderError] == "" {
			t.Errorf("dead letter %d headers %v", i, h)
		}
	}
	checkRequests(t, a, 128000)
}

// TestGracefulShutdown: SIGTERM drains open batches and commits; a restart
// re-sends nothing that was accepted.
func TestGracefulShutdown(t *testing.T) {
	topic, dlq := newTopic(t, 4)
	a := startAPI(t, nil)
	p := newProducer(t, topic)
	p.sendN(t, newGen(3, 20, 500), 3000)
	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["BATCH_WINDOW"] = "10m" // nothing is due before the drain
	w := startWorker(t, "w1", env)
	waitFor(t, time.Minute, "all events read", func() bool { return w.metric("cohortsync_events_consumed_total") >= 3000 })
	if n := len(a.Requests()); n != 0 {
		t.Fatalf("%d requests before the window ended", n)
	}
	start := time.Now()
	if err := w.stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v\n%s", err, tail(w.out.String(), 30))
	}
	t.Logf("drained in %s", time.Since(start))
	if d := diff(p.model(), a.state()); d != "" {
		t.Fatalf("after the drain: %s", d)
	}
	lag, err := admin.GroupLag(context.Background(), topic, env["KAFKA_GROUP_ID"])
	if err != nil || lag != 0 {
		t.Fatalf("lag after the drain: %d (%v)", lag, err)
	}
	before := len(a.Requests())
	w2 := startWorker(t, "w2", env)
	waitFor(t, 30*time.Second, "restarted worker ready", w2.ready)
	time.Sleep(2 * time.Second)
	if n := len(a.Requests()) - before; n != 0 {
		t.Fatalf("the restarted worker re-sent %d requests", n)
	}
	if err := w2.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestAuthFailure: a wrong key stops the line (cohortsync_auth_failing; the
// pod stays ready, issue 19) and commits nothing; the right key after a
// restart converges.
func TestAuthFailure(t *testing.T) {
	topic, dlq := newTopic(t, 2)
	a := startAPI(t, nil)
	p := newProducer(t, topic)
	p.sendN(t, newGen(4, 10, 200), 1000)
	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["MOENGAGE_DATA_API_KEY"] = "wrong-key-9f8e7d"
	w := startWorker(t, "bad", env)
	waitFor(t, 30*time.Second, "401s", func() bool {
		for _, r := range a.Requests() {
			if r.Status == 401 {
				return true
			}
		}
		return false
	})
	time.Sleep(3 * time.Second)
	if !w.ready() || w.metric("cohortsync_auth_failing") != 1 {
		t.Fatalf("while the API rejects the key: ready %v (want true), auth_failing %v (want 1)", w.ready(), w.metric("cohortsync_auth_failing"))
	}
	_, committed, err := offsets(context.Background(), topic, env["KAFKA_GROUP_ID"])
	if err != nil {
		t.Fatal(err)
	}
	for part, c := range committed {
		if c > 0 {
			t.Fatalf("partition %d committed to %d during the auth failure", part, c)
		}
	}
	if strings.Contains(w.out.String(), "wrong-key-9f8e7d") {
		t.Fatal("the API key appears in the worker's output")
	}
	if err := w.stop(30 * time.Second); err != nil {
		t.Logf("stop during auth failure: %v", err)
	}
	env["MOENGAGE_DATA_API_KEY"] = apiKey
	w2 := startWorker(t, "good", env)
	waitConverged(t, a, p.model(), time.Minute)
	waitFor(t, 30*time.Second, "readiness with the right key", w2.ready)
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], 30*time.Second)
}

// TestKeyRotation: a worker whose key file holds a key the API rejects
// heals on its own once the file is replaced (as the kubelet swaps a
// rotated Secret), without a restart, and commits nothing before.
func TestKeyRotation(t *testing.T) {
	topic, dlq := newTopic(t, 2)
	a := startAPI(t, nil)
	p := newProducer(t, topic)
	p.sendN(t, newGen(41, 10, 200), 500)
	keyFile := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(keyFile, []byte("revoked-key-1a2b3c\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	env := workerEnv(a, topic, dlq, "g-"+topic)
	delete(env, "MOENGAGE_DATA_API_KEY")
	env["MOENGAGE_DATA_API_KEY_FILE"] = keyFile
	w := startWorker(t, "w", env)
	waitFor(t, 30*time.Second, "401s", func() bool {
		return slices.ContainsFunc(a.Requests(), func(r emulator.RequestRecord) bool { return r.Status == 401 })
	})
	waitFor(t, 10*time.Second, "the line stopped, still ready", func() bool {
		return w.metric("cohortsync_auth_failing") == 1 && w.ready()
	})

	// Rotate: write the new key beside the file and rename it over.
	tmp := keyFile + ".new"
	if err := os.WriteFile(tmp, []byte(apiKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, keyFile); err != nil {
		t.Fatal(err)
	}
	rotated := time.Now()
	waitConverged(t, a, p.model(), time.Minute)
	waitFor(t, 30*time.Second, "the line going again with the rotated key", func() bool {
		return w.metric("cohortsync_auth_failing") == 0 && w.ready()
	})
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], 30*time.Second)
	t.Logf("healed %s after the rotation, without a restart", time.Since(rotated).Round(time.Second))
	if strings.Contains(w.out.String(), "revoked-key-1a2b3c") || strings.Contains(w.out.String(), apiKey) {
		t.Fatal("a key appears in the worker's output")
	}
	if err := w.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestAPIFaults: 5xx bursts, 429 bursts and a 30-second outage end in the
// same final state, and nothing is committed while nothing is accepted.
func TestAPIFaults(t *testing.T) {
	topic, dlq := newTopic(t, 4)
	a := startAPI(t, func(c *emulator.Config) {
		c.RateLimit = 300
		c.RateWindow = 10 * time.Second // a 429 pauses until the window resets: keep that short
	})
	p := newProducer(t, topic)
	g := newGen(5, 30, 1000)
	p.sendN(t, g, 5000)
	env := workerEnv(a, topic, dlq, "g-"+topic)
	env["RATE_LIMIT_RPM"] = "300"
	w := startWorker(t, "w1", env)
	group := env["KAFKA_GROUP_ID"]

	// A 5xx burst, then a 429 burst, while events keep coming.
	if err := a.SetFaults(emulator.Faults{ErrorRate: 0.5, ErrorStatuses: []int{500, 502, 503, 504}}); err != nil {
		t.Fatal(err)
	}
	stop := p.background(t, g, 200)
	waitFor(t, time.Minute, "retries during the 5xx burst", func() bool { return w.metric("cohortsync_retries_total") >= 5 })
	if err := a.SetFaults(emulator.Faults{Force429: 3}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "429s answered", func() bool {
		return w.metric(`cohortsync_requests_total{action="add_members",code="429"}`) > 0 || w.metric(`cohortsync_requests_total{action="remove_members",code="429"}`) > 0
	})

	// A 30-second outage: nothing accepted, so nothing may be committed.
	if err := a.SetFaults(emulator.Faults{Outage: true}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(3 * time.Second) // commits of requests accepted before the outage land
	_, before, err := offsets(context.Background(), topic, group)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(27 * time.Second)
	_, during, err := offsets(context.Background(), topic, group)
	if err != nil {
		t.Fatal(err)
	}
	for part := range during {
		if during[part] != before[part] {
			t.Fatalf("partition %d committed from %d to %d during the outage", part, before[part], during[part])
		}
	}
	stop()
	if err := a.SetFaults(emulator.Faults{}); err != nil {
		t.Fatal(err)
	}
	waitConverged(t, a, p.model(), 3*time.Minute)
	waitNoLag(t, topic, group, time.Minute)
	checkRequests(t, a, 128000)
	if err := w.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}

// TestCrashRecovery: the worker killed with SIGKILL mid-stream and restarted,
// several times, ends in the same final state.
func TestCrashRecovery(t *testing.T) {
	topic, dlq := newTopic(t, 4)
	a := startAPI(t, nil)
	p := newProducer(t, topic)
	g := newGen(6, 40, 2000)
	g.bulk = true
	env := workerEnv(a, topic, dlq, "g-"+topic)
	stop := p.background(t, g, 1000)
	for i := range 4 {
		w := startWorker(t, fmt.Sprint("w", i), env)
		time.Sleep(time.Duration(2000+i*700) * time.Millisecond)
		w.kill()
	}
	stop()
	startWorker(t, "final", env)
	waitConverged(t, a, p.model(), 2*time.Minute)
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], time.Minute)
	checkRequests(t, a, 128000)
}
