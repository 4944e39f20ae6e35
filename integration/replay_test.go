package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// replayedFromHeader is the header `dlq replay` adds (internal/replay).
const replayedFromHeader = "cohortsync-replayed-from"

// TestDLQReplay: events with a forbidden cohort_name character and a
// malformed record are dead-lettered by the worker; `dlq replay --reason
// forbidden_character` (the built binary, with only the Kafka settings)
// first as a dry run writes nothing, then re-publishes exactly those three
// to the partitions they came from with a cohortsync-replayed-from header;
// a second run replays nothing; the worker dead-letters them again.
func TestDLQReplay(t *testing.T) {
	topic, dlq := newTopic(t, 2)
	a := startAPI(t, nil)
	p := newProducer(t, topic)
	g := newGen(21, 5, 100)
	ctx := context.Background()
	fix := func(i int, name string) kafka.Message {
		return kafka.Message{Key: []byte(fmt.Sprint("fix-", i)),
			Value:   fmt.Appendf(nil, `{"action":"add_members","uid":"u-fix-%d","cohort_id":"c-fix","cohort_name":%q,"partner":%q}`, i, name, partner),
			Headers: []kafka.Header{{Key: "trace-id", Value: fmt.Appendf(nil, "trace-%d", i)}}}
	}
	poison := []kafka.Message{
		fix(0, "Fix|Me"),
		{Key: []byte("broken"), Value: []byte(`{"action":"add_members","cohort_id":`)},
		fix(1, "Fix:Me"),
		fix(2, "Fix$Me"),
	}
	p.sendN(t, g, 100)
	for _, m := range poison {
		if err := p.raw(ctx, m); err != nil {
			t.Fatal(err)
		}
		p.sendN(t, g, 20)
	}
	env := workerEnv(a, topic, dlq, "g-"+topic)
	w := startWorker(t, "w1", env)
	waitConverged(t, a, p.model(), time.Minute)
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], 30*time.Second)
	letters := readTopic(t, dlq, len(poison), 30*time.Second)
	if len(letters) != len(poison) {
		t.Fatalf("the dead-letter topic holds %d records, want %d", len(letters), len(poison))
	}
	byKey := map[string]kafka.Message{}
	for _, m := range letters {
		byKey[string(m.Key)] = m
	}
	for key, reason := range map[string]event.Reason{"fix-0": event.ReasonForbiddenChar, "fix-1": event.ReasonForbiddenChar,
		"fix-2": event.ReasonForbiddenChar, "broken": event.ReasonMalformed} {
		if got := replayHeaders(byKey[key])[deadletter.HeaderReason]; got != string(reason) {
			t.Fatalf("dead letter %s has reason %q, want %s", key, got, reason)
		}
	}
	// The fix is deployed while the worker is down: nothing re-dead-letters
	// the replayed records while the replays run.
	if err := w.stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}

	// Only the Kafka settings: the replay must not need MOENGAGE_*.
	renv := map[string]string{"KAFKA_BROKERS": brokerAddr, "KAFKA_TOPIC": topic, "KAFKA_DLQ_TOPIC": dlq,
		"KAFKA_GROUP_ID": env["KAFKA_GROUP_ID"]}
	replayGroup := env["KAFKA_GROUP_ID"] + "-dlq-replay"
	before := replayEnds(t, topic)

	// Dry run: lists the three, writes and commits nothing.
	res := runDLQReplay(t, renv, "--reason", "forbidden_character", "--dry-run")
	res.wantSummary(t, 0, "read=4 replayed=3 skipped=1")
	if n := strings.Count(res.stdout, "would replay "); n != 3 {
		t.Errorf("the dry run lists %d records, want 3:\n%s", n, res.stdout)
	}
	if strings.Contains(res.stdout, `key="broken"`) {
		t.Errorf("the dry run lists the malformed record:\n%s", res.stdout)
	}
	if after := replayEnds(t, topic); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("the dry run wrote to %s: end offsets %v, before %v", topic, after, before)
	}
	if _, committed, err := offsets(ctx, dlq, replayGroup); err != nil || committed[0] >= 0 {
		t.Fatalf("the dry run committed %v (%v)", committed, err)
	}

	// Dry runs also check the start positions against the real broker.
	runDLQReplay(t, renv, "--dry-run", "--since", "2000-01-01T00:00:00Z").wantSummary(t, 0, "read=4 replayed=4 skipped=0")
	runDLQReplay(t, renv, "--dry-run", "--since", time.Now().Add(time.Hour).UTC().Format(time.RFC3339)).wantSummary(t, 0, "read=0 replayed=0 skipped=0")
	runDLQReplay(t, renv, "--dry-run", "--from-offset", "2", "--limit", "1").wantSummary(t, 0, "read=1 replayed=1 skipped=0")

	// The replay.
	res = runDLQReplay(t, renv, "--reason", "forbidden_character")
	res.wantSummary(t, 0, "read=4 replayed=3 skipped=1")
	replayed := replayReadFrom(t, topic, before)
	if len(replayed) != 3 {
		t.Fatalf("%d records replayed into %s, want 3", len(replayed), topic)
	}
	for _, m := range replayed {
		h := replayHeaders(m)
		orig, ok := byKey[string(m.Key)]
		if !ok || string(m.Key) == "broken" {
			t.Errorf("replayed an unexpected record %q", m.Key)
			continue
		}
		if string(m.Value) != string(orig.Value) {
			t.Errorf("%s: value %q, want the original %q", m.Key, m.Value, orig.Value)
		}
		if want := fmt.Sprintf("%s/%d/%d", dlq, orig.Partition, orig.Offset); h[replayedFromHeader] != want {
			t.Errorf("%s: %s = %q, want %q", m.Key, replayedFromHeader, h[replayedFromHeader], want)
		}
		if h["trace-id"] != "trace-"+strings.TrimPrefix(string(m.Key), "fix-") {
			t.Errorf("%s: the original header is lost: %v", m.Key, h)
		}
		for k := range h {
			if strings.HasPrefix(k, "cohortsync-") && k != replayedFromHeader {
				t.Errorf("%s: the dead-letter header %s was kept", m.Key, k)
			}
		}
		if src := replayHeaders(orig)[deadletter.HeaderSourcePartition]; strconv.Itoa(m.Partition) != src {
			t.Errorf("%s: replayed into partition %d, read from %s", m.Key, m.Partition, src)
		}
	}
	if _, committed, err := offsets(ctx, dlq, replayGroup); err != nil || committed[0] != int64(len(poison)) {
		t.Fatalf("replay group committed %v (%v), want %d", committed, err, len(poison))
	}

	// A second run replays nothing.
	mid := replayEnds(t, topic)
	res = runDLQReplay(t, renv, "--reason", "forbidden_character")
	res.wantSummary(t, 0, "read=0 replayed=0 skipped=0")
	if after := replayEnds(t, topic); fmt.Sprint(after) != fmt.Sprint(mid) {
		t.Fatalf("the second run wrote to %s: end offsets %v, before %v", topic, after, mid)
	}

	// The records are still invalid: the worker dead-letters them again,
	// and the new dead letters say where they were replayed from.
	w2 := startWorker(t, "w2", env)
	all := readTopic(t, dlq, len(poison)+3, time.Minute)
	if len(all) != len(poison)+3 {
		t.Fatalf("the dead-letter topic holds %d records, want %d", len(all), len(poison)+3)
	}
	for _, m := range all[len(poison):] {
		h := replayHeaders(m)
		if h[deadletter.HeaderReason] != string(event.ReasonForbiddenChar) || !strings.HasPrefix(h[replayedFromHeader], dlq+"/0/") {
			t.Errorf("dead letter again %q: headers %v", m.Key, h)
		}
	}
	if err := w2.stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}

// TestDLQReplayUsage: bad flags exit 2 with one line, before any Kafka I/O.
func TestDLQReplayUsage(t *testing.T) {
	res := runDLQReplay(t, map[string]string{"KAFKA_BROKERS": brokerAddr}, "--since", "yesterday")
	if res.code != 2 || strings.Count(strings.TrimSpace(res.stderr), "\n") != 0 || !strings.Contains(res.stderr, "since") {
		t.Fatalf("exit %d, stderr %q", res.code, res.stderr)
	}
	res = runDLQReplay(t, nil, "--help")
	if res.code != 0 || !strings.Contains(res.stdout, "--dry-run") {
		t.Fatalf("--help: exit %d, stdout %q", res.code, res.stdout)
	}
}

type replayResult struct {
	code           int
	stdout, stderr string
}

// wantSummary checks the exit code and the summary (stdout's last line).
func (r replayResult) wantSummary(t *testing.T, code int, summary string) {
	t.Helper()
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if r.code != code || lines[len(lines)-1] != summary {
		t.Fatalf("dlq replay: exit %d, summary %q; want %d, %q\nstdout:\n%s\nstderr:\n%s",
			r.code, lines[len(lines)-1], code, summary, r.stdout, r.stderr)
	}
}

// runDLQReplay runs `workerBin dlq replay args...` with exactly env.
func runDLQReplay(t *testing.T, env map[string]string, args ...string) replayResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, workerBin, append([]string{"dlq", "replay"}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "GORACE=halt_on_error=1"}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	res := replayResult{stdout: out.String(), stderr: errOut.String()}
	var exit *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &exit):
		res.code = exit.ExitCode()
	default:
		t.Fatalf("dlq replay %v: %v", args, err)
	}
	if strings.Contains(res.stderr, "WARNING: DATA RACE") {
		t.Fatalf("dlq replay %v: data race:\n%s", args, res.stderr)
	}
	t.Logf("dlq replay %s: exit %d\n%s", strings.Join(args, " "), res.code, tail(res.stderr, 20))
	return res
}

// replayEnds returns the end offset of every partition of topic.
func replayEnds(t *testing.T, topic string) map[int]int64 {
	t.Helper()
	ends, _, err := offsets(context.Background(), topic, "none")
	if err != nil {
		t.Fatal(err)
	}
	return ends
}

// replayReadFrom reads every record of topic from the offsets in from up
// to the current ends.
func replayReadFrom(t *testing.T, topic string, from map[int]int64) []kafka.Message {
	t.Helper()
	var out []kafka.Message
	for part, end := range replayEnds(t, topic) {
		if end <= from[part] {
			continue
		}
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: []string{brokerAddr}, Topic: topic, Partition: part,
			MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 200 * time.Millisecond})
		if err := r.SetOffset(from[part]); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				cancel()
				r.Close()
				t.Fatalf("reading %s/%d: %v", topic, part, err)
			}
			out = append(out, m)
			if m.Offset >= end-1 {
				break
			}
		}
		cancel()
		r.Close()
	}
	return out
}

func replayHeaders(m kafka.Message) map[string]string {
	h := map[string]string{}
	for _, x := range m.Headers {
		h[x.Key] = string(x.Value)
	}
	return h
}
