package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/event"
)

const (
	src   = "in"
	dlq   = "in.dlq"
	group = "g-dlq-replay"
)

// deadLetter builds a record as the worker's DLQ writes it.
func deadLetter(key string, reason event.Reason, srcPartition int, srcOffset int64, extra ...kafka.Header) kafka.Message {
	hs := append([]kafka.Header(nil), extra...)
	hs = append(hs,
		kafka.Header{Key: deadletter.HeaderReason, Value: []byte(reason)},
		kafka.Header{Key: deadletter.HeaderError, Value: []byte("detail of " + key)},
		kafka.Header{Key: deadletter.HeaderSourceTopic, Value: []byte(src)},
		kafka.Header{Key: deadletter.HeaderSourcePartition, Value: []byte(strconv.Itoa(srcPartition))},
		kafka.Header{Key: deadletter.HeaderSourceOffset, Value: []byte(strconv.FormatInt(srcOffset, 10))},
		kafka.Header{Key: deadletter.HeaderFailedAt, Value: []byte("2026-11-28T10:00:00Z")},
	)
	return kafka.Message{Key: []byte(key), Value: []byte(`{"value of":"` + key + `"}`), Headers: hs}
}

// setup makes a 3-partition source topic and a 1-partition dead-letter
// topic holding letters.
func setup(letters ...kafka.Message) *fakeCluster {
	c := newFakeCluster()
	c.createTopic(src, 3)
	c.createTopic(dlq, 1)
	c.add(dlq, 0, letters...)
	return c
}

type result struct {
	stats       Stats
	err         error
	out, status string
}

func runReplay(t *testing.T, c *fakeCluster, mutate func(*Config)) result {
	t.Helper()
	var out, status bytes.Buffer
	cfg := Config{Topic: dlq, Group: group, FromOffset: -1, Topics: c, Writer: c, Groups: c,
		Out: &out, Status: &status, ProgressInterval: -1, IdleTimeout: 50 * time.Millisecond}
	if mutate != nil {
		mutate(&cfg)
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stats, err := r.Run(ctx)
	return result{stats, err, out.String(), status.String()}
}

func want(t *testing.T, got Stats, read, replayed, skipped int64) {
	t.Helper()
	if w := (Stats{read, replayed, skipped}); got != w {
		t.Fatalf("stats %s, want %s", got, w)
	}
}

func hdrs(m kafka.Message) map[string]string { return headers(m.Headers) }

func TestReplayRewritesAndCommits(t *testing.T) {
	trace := kafka.Header{Key: "trace-id", Value: []byte("abc")}
	c := setup(
		deadLetter("k0", event.ReasonForbiddenChar, 1, 10, trace),
		deadLetter("k1", event.ReasonMalformed, 0, 11),
		deadLetter("k2", event.ReasonForbiddenChar, 2, 12),
		deadLetter("k3", event.ReasonAPIRejected, 0, 13),
	)
	res := runReplay(t, c, func(cfg *Config) { cfg.Reasons = []event.Reason{event.ReasonForbiddenChar} })
	if res.err != nil {
		t.Fatal(res.err)
	}
	want(t, res.stats, 4, 2, 2)
	if got := res.stats.String(); got != "read=4 replayed=2 skipped=2" {
		t.Errorf("summary %q", got)
	}
	p1, p2 := c.records(src, 1), c.records(src, 2)
	if len(p1) != 1 || len(p2) != 1 || len(c.records(src, 0)) != 0 {
		t.Fatalf("source partitions hold %d, %d, %d records; want 0, 1, 1 (each back in its source partition)",
			len(c.records(src, 0)), len(p1), len(p2))
	}
	m := p1[0]
	if string(m.Key) != "k0" || string(m.Value) != `{"value of":"k0"}` {
		t.Errorf("replayed record %q=%q; want the original key and value", m.Key, m.Value)
	}
	wantHeaders := []kafka.Header{trace, {Key: HeaderReplayedFrom, Value: []byte("in.dlq/0/0")}}
	if fmt.Sprint(m.Headers) != fmt.Sprint(wantHeaders) {
		t.Errorf("headers %v, want %v", m.Headers, wantHeaders)
	}
	if h := hdrs(p2[0]); h[HeaderReplayedFrom] != "in.dlq/0/2" || h[deadletter.HeaderReason] != "" {
		t.Errorf("headers %v", h)
	}
	if off := c.commitOf(group, 0); off != 4 {
		t.Fatalf("committed %d, want 4 (past the skipped records too)", off)
	}

	// A second run replays nothing.
	res = runReplay(t, c, func(cfg *Config) { cfg.Reasons = []event.Reason{event.ReasonForbiddenChar} })
	if res.err != nil {
		t.Fatal(res.err)
	}
	want(t, res.stats, 0, 0, 0)
	if n := len(c.records(src, 1)) + len(c.records(src, 2)); n != 2 {
		t.Fatalf("%d records in the source topic after the second run, want 2", n)
	}
}

// TestLetterWithoutValueIsNotReplayed: a letter the worker wrote without
// the record's value (the record was too large for the dead-letter topic)
// must not be written back as an empty record (a tombstone).
func TestLetterWithoutValueIsNotReplayed(t *testing.T) {
	stripped := deadLetter("k1", event.ReasonTooLarge, 1, 11,
		kafka.Header{Key: deadletter.HeaderOriginalSize, Value: []byte("1500000")})
	stripped.Value = nil
	c := setup(deadLetter("k0", event.ReasonTooLarge, 0, 10), stripped)
	res := runReplay(t, c, nil)
	if res.err != nil {
		t.Fatal(res.err)
	}
	want(t, res.stats, 2, 1, 1)
	if n := len(c.records(src, 1)); n != 0 {
		t.Fatalf("%d records written back for the letter without a value", n)
	}
	if !strings.Contains(res.status, "not replayable: in.dlq/0/1") || !strings.Contains(res.status, "1500000 bytes") ||
		!strings.Contains(res.status, "in/1/11") {
		t.Errorf("status does not say why the letter was not replayed: %q", res.status)
	}
	if off := c.commitOf(group, 0); off != 2 {
		t.Fatalf("committed %d, want 2 (past the letter that cannot be replayed)", off)
	}
}

func TestDryRunWritesAndCommitsNothing(t *testing.T) {
	c := setup(
		deadLetter("k0", event.ReasonForbiddenChar, 1, 10),
		deadLetter("k1", event.ReasonMalformed, 0, 11),
		deadLetter("k2", event.ReasonForbiddenChar, 2, 12),
	)
	res := runReplay(t, c, func(cfg *Config) {
		cfg.DryRun = true
		cfg.Writer = nil
		cfg.Reasons = []event.Reason{event.ReasonForbiddenChar}
	})
	if res.err != nil {
		t.Fatal(res.err)
	}
	want(t, res.stats, 3, 2, 1)
	for p := range 3 {
		if n := len(c.records(src, p)); n != 0 {
			t.Fatalf("dry run wrote %d records to %s/%d", n, src, p)
		}
	}
	if c.commits != 0 || c.joins != 0 || c.commitOf(group, 0) != -1 {
		t.Fatalf("dry run joined (%d) or committed (%d)", c.joins, c.commits)
	}
	lines := strings.Split(strings.TrimSpace(res.out), "\n")
	if len(lines) != 2 || !strings.Contains(lines[0], "in.dlq/0/0 to in/1") || !strings.Contains(lines[0], `key="k0"`) ||
		!strings.Contains(lines[0], "reason=forbidden_character") || !strings.Contains(lines[1], "in.dlq/0/2 to in/2") {
		t.Fatalf("dry-run listing:\n%s", res.out)
	}
	// The real run then replays the same records.
	res = runReplay(t, c, func(cfg *Config) { cfg.Reasons = []event.Reason{event.ReasonForbiddenChar} })
	want(t, res.stats, 3, 2, 1)
}

func TestDryRunStartsAtTheCommittedOffset(t *testing.T) {
	c := setup(deadLetter("k0", event.ReasonMalformed, 0, 1), deadLetter("k1", event.ReasonMalformed, 0, 2))
	c.committed[group] = map[int]int64{0: 1}
	res := runReplay(t, c, func(cfg *Config) { cfg.DryRun = true })
	want(t, res.stats, 1, 1, 0)
}

// TestStopsAtTheEndOffsetTakenAtStart: records dead-lettered while the
// replay runs (here: every replayed record fails again at once) are left
// for the next run; the run terminates.
func TestStopsAtTheEndOffsetTakenAtStart(t *testing.T) {
	c := setup(deadLetter("k0", event.ReasonForbiddenChar, 0, 1), deadLetter("k1", event.ReasonForbiddenChar, 1, 2))
	c.onWrite = func(topic string, n int) {
		for range n {
			c.add(dlq, 0, deadLetter("again", event.ReasonForbiddenChar, 0, 9))
		}
	}
	c.onFetch = func(string, int64) { c.add(dlq, 0, deadLetter("late", event.ReasonMalformed, 0, 9)) }
	res := runReplay(t, c, func(cfg *Config) { cfg.BatchSize = 1 })
	if res.err != nil {
		t.Fatal(res.err)
	}
	want(t, res.stats, 2, 2, 0)
	if off := c.commitOf(group, 0); off != 2 {
		t.Fatalf("committed %d, want 2", off)
	}
}

func TestLimit(t *testing.T) {
	var letters []kafka.Message
	for i := range 5 {
		letters = append(letters, deadLetter(fmt.Sprint("k", i), event.ReasonAPIRejected, i%3, int64(i)))
	}
	letters = append(letters[:1], append([]kafka.Message{deadLetter("m", event.ReasonMalformed, 0, 9)}, letters[1:]...)...)
	c := setup(letters...)
	reasons := []event.Reason{event.ReasonAPIRejected}
	res := runReplay(t, c, func(cfg *Config) { cfg.Limit = 2; cfg.Reasons = reasons })
	if res.err != nil {
		t.Fatal(res.err)
	}
	want(t, res.stats, 3, 2, 1)
	if off := c.commitOf(group, 0); off != 3 {
		t.Fatalf("committed %d, want 3 (just past the second replayed record)", off)
	}
	res = runReplay(t, c, func(cfg *Config) { cfg.Reasons = reasons })
	want(t, res.stats, 3, 3, 0)
	total := 0
	for p := range 3 {
		total += len(c.records(src, p))
	}
	if total != 5 {
		t.Fatalf("%d records replayed in all, want 5", total)
	}
}

func TestFromOffsetAndSince(t *testing.T) {
	base := time.Date(2026, 11, 28, 10, 0, 0, 0, time.UTC)
	var letters []kafka.Message
	for i := range 6 {
		m := deadLetter(fmt.Sprint("k", i), event.ReasonMalformed, 0, int64(i))
		m.Time = base.Add(time.Duration(i) * time.Minute)
		letters = append(letters, m)
	}
	t.Run("from-offset", func(t *testing.T) {
		c := setup(letters...)
		res := runReplay(t, c, func(cfg *Config) { cfg.FromOffset = 4 })
		want(t, res.stats, 2, 2, 0)
		if got := string(c.records(src, 0)[0].Key); got != "k4" {
			t.Fatalf("first replayed %s, want k4", got)
		}
	})
	t.Run("committed offset wins when further on", func(t *testing.T) {
		c := setup(letters...)
		c.committed[group] = map[int]int64{0: 5}
		res := runReplay(t, c, func(cfg *Config) { cfg.FromOffset = 2 })
		want(t, res.stats, 1, 1, 0)
	})
	t.Run("since", func(t *testing.T) {
		c := setup(letters...)
		res := runReplay(t, c, func(cfg *Config) { cfg.Since = base.Add(3*time.Minute - time.Second) })
		want(t, res.stats, 3, 3, 0)
		if off := c.commitOf(group, 0); off != 6 {
			t.Fatalf("committed %d, want 6", off)
		}
	})
	t.Run("since after the last record", func(t *testing.T) {
		c := setup(letters...)
		res := runReplay(t, c, func(cfg *Config) { cfg.Since = base.Add(time.Hour) })
		if res.err != nil {
			t.Fatal(res.err)
		}
		want(t, res.stats, 0, 0, 0)
	})
	t.Run("from-offset below the retained records", func(t *testing.T) {
		c := setup(letters...)
		c.deleteBefore(dlq, 0, 3)
		res := runReplay(t, c, func(cfg *Config) { cfg.FromOffset = 0 })
		want(t, res.stats, 3, 3, 0)
	})
}

func TestToTopic(t *testing.T) {
	c := setup(deadLetter("k0", event.ReasonMalformed, 2, 1), deadLetter("k1", event.ReasonMalformed, 2, 2))
	c.createTopic("staging", 2)
	res := runReplay(t, c, func(cfg *Config) { cfg.ToTopic = "staging" })
	if res.err != nil {
		t.Fatal(res.err)
	}
	want(t, res.stats, 2, 2, 0)
	n := len(c.records("staging", 0)) + len(c.records("staging", 1))
	if n != 2 {
		t.Fatalf("%d records in staging, want 2", n)
	}
	var h kafka.Hash
	for _, k := range []string{"k0", "k1"} {
		p := h.Balance(kafka.Message{Key: []byte(k)}, 0, 1)
		found := false
		for _, m := range c.records("staging", p) {
			found = found || string(m.Key) == k
		}
		if !found {
			t.Errorf("%s is not in staging/%d (its key hash)", k, p)
		}
	}
}

func TestSourcePartitionOutOfRangeFallsBackToKeyHash(t *testing.T) {
	c := setup(deadLetter("k0", event.ReasonMalformed, 7, 1))
	res := runReplay(t, c, nil)
	if res.err != nil {
		t.Fatal(res.err)
	}
	want(t, res.stats, 1, 1, 0)
}

func TestDeadLetterWithoutSourceTopicStopsTheRun(t *testing.T) {
	bad := kafka.Message{Key: []byte("x"), Value: []byte("{}"),
		Headers: []kafka.Header{{Key: deadletter.HeaderReason, Value: []byte(event.ReasonAPIRejected)}}}
	c := setup(deadLetter("k0", event.ReasonMalformed, 0, 1), bad, deadLetter("k2", event.ReasonMalformed, 0, 3))
	res := runReplay(t, c, nil)
	if res.err == nil || !strings.Contains(res.err.Error(), "in.dlq/0/1") || !strings.Contains(res.err.Error(), "--to-topic") {
		t.Fatalf("err %v; want one naming the dead letter and --to-topic", res.err)
	}
	if off := c.commitOf(group, 0); off != 1 {
		t.Fatalf("committed %d, want 1: up to the bad record, not past it", off)
	}
	if n := len(c.records(src, 0)); n != 1 {
		t.Fatalf("%d records replayed, want the one before the bad record", n)
	}
	// With --to-topic the rest goes through.
	res = runReplay(t, c, func(cfg *Config) { cfg.ToTopic = src })
	if res.err != nil {
		t.Fatal(res.err)
	}
	want(t, res.stats, 2, 2, 0)
}

func TestMissingDestinationTopic(t *testing.T) {
	c := setup(deadLetter("k0", event.ReasonMalformed, 0, 1))
	res := runReplay(t, c, func(cfg *Config) { cfg.ToTopic = "nope" })
	if res.err == nil || !strings.Contains(res.err.Error(), "nope") {
		t.Fatalf("err %v", res.err)
	}
	if c.commitOf(group, 0) != -1 {
		t.Fatal("committed past a record that was not replayed")
	}
}

func TestMissingDeadLetterTopic(t *testing.T) {
	c := newFakeCluster()
	res := runReplay(t, c, nil)
	if res.err == nil || !strings.Contains(res.err.Error(), dlq) {
		t.Fatalf("err %v", res.err)
	}
}

func TestWriteFailureCommitsNothing(t *testing.T) {
	c := setup(deadLetter("k0", event.ReasonMalformed, 0, 1), deadLetter("k1", event.ReasonMalformed, 0, 2))
	c.writeErr = errors.New("broker says no")
	res := runReplay(t, c, nil)
	if res.err == nil || !strings.Contains(res.err.Error(), "broker says no") {
		t.Fatalf("err %v", res.err)
	}
	want(t, res.stats, 2, 0, 0)
	if c.commitOf(group, 0) != -1 {
		t.Fatal("committed after a failed write")
	}
}

// TestRebalanceRejoinsWithoutReplayingTwice: the claim is lost after the
// first commit; the run rejoins and goes on from the committed offset.
func TestRebalanceRejoinsWithoutReplayingTwice(t *testing.T) {
	var letters []kafka.Message
	for i := range 5 {
		letters = append(letters, deadLetter(fmt.Sprint("k", i), event.ReasonMalformed, 0, int64(i)))
	}
	c := setup(letters...)
	c.loseClaim = func(commits int) bool { return commits == 1 }
	res := runReplay(t, c, func(cfg *Config) { cfg.BatchSize = 2 })
	if res.err != nil {
		t.Fatal(res.err)
	}
	if !strings.Contains(res.status, "rebalanced") {
		t.Errorf("status does not mention the rebalance:\n%s", res.status)
	}
	got := c.records(src, 0)
	if len(got) != 5 {
		t.Fatalf("%d records replayed, want 5 exactly once", len(got))
	}
	for i, m := range got {
		if string(m.Key) != fmt.Sprint("k", i) {
			t.Fatalf("record %d is %s: out of order or twice", i, m.Key)
		}
	}
	if res.stats.Replayed != 5 || c.commitOf(group, 0) != 5 {
		t.Fatalf("stats %s, committed %d", res.stats, c.commitOf(group, 0))
	}
}

func TestNoPartitionAssigned(t *testing.T) {
	c := setup(deadLetter("k0", event.ReasonMalformed, 0, 1))
	c.assign = func([]int) []int { return nil }
	res := runReplay(t, c, nil)
	if res.err == nil || !strings.Contains(res.err.Error(), "another replay") {
		t.Fatalf("err %v", res.err)
	}
}

func TestPartitionsOfAnotherMemberAreReported(t *testing.T) {
	c := newFakeCluster()
	c.createTopic(src, 3)
	c.createTopic(dlq, 2)
	c.add(dlq, 0, deadLetter("k0", event.ReasonMalformed, 0, 1))
	c.add(dlq, 1, deadLetter("k1", event.ReasonMalformed, 0, 2))
	c.assign = func([]int) []int { return []int{0} }
	res := runReplay(t, c, nil)
	if res.err != nil {
		t.Fatal(res.err)
	}
	want(t, res.stats, 1, 1, 0)
	if !strings.Contains(res.status, "partitions 1 of in.dlq belong to another member") {
		t.Fatalf("status:\n%s", res.status)
	}
}

// TestRecordsDeletedWhileRunning: the partition's records below the end
// vanish (retention) while the replay waits for them: it ends cleanly.
func TestRecordsDeletedWhileRunning(t *testing.T) {
	c := setup(deadLetter("k0", event.ReasonMalformed, 0, 1), deadLetter("k1", event.ReasonMalformed, 0, 2),
		deadLetter("k2", event.ReasonMalformed, 0, 3))
	c.onFetch = func(_ string, off int64) {
		if off == 0 {
			go c.deleteBefore(dlq, 0, 3)
		}
	}
	res := runReplay(t, c, func(cfg *Config) { cfg.BatchSize = 1 })
	if res.err != nil {
		t.Fatal(res.err)
	}
	if res.stats.Replayed < 1 || c.commitOf(group, 0) != 3 {
		t.Fatalf("stats %s, committed %d; want the end committed", res.stats, c.commitOf(group, 0))
	}
}

// TestStuckBelowTheEnd: a record below the end never arrives: the run
// fails after three idle periods instead of waiting forever.
func TestStuckBelowTheEnd(t *testing.T) {
	c := setup(deadLetter("k0", event.ReasonMalformed, 0, 1), deadLetter("k1", event.ReasonMalformed, 0, 2))
	stuck := &stuckTopics{fakeCluster: c}
	res := runReplay(t, c, func(cfg *Config) { cfg.Topics = stuck; cfg.IdleTimeout = 10 * time.Millisecond })
	if res.err == nil || !strings.Contains(res.err.Error(), "no record at or after offset 1") {
		t.Fatalf("err %v", res.err)
	}
	if off := c.commitOf(group, 0); off != 1 {
		t.Fatalf("committed %d, want 1 (what was replayed)", off)
	}
}

// stuckTopics delivers only the first record of every partition.
type stuckTopics struct{ *fakeCluster }

func (s *stuckTopics) Reader(topic string, partition int, offset int64) (Reader, error) {
	r, _ := s.fakeCluster.Reader(topic, partition, offset)
	return &stuckReader{r: r}, nil
}

type stuckReader struct {
	r    Reader
	sent bool
}

func (s *stuckReader) FetchMessage(ctx context.Context) (kafka.Message, error) {
	if !s.sent {
		s.sent = true
		return s.r.FetchMessage(ctx)
	}
	<-ctx.Done()
	return kafka.Message{}, ctx.Err()
}

func (s *stuckReader) Close() error { return s.r.Close() }

func TestInterrupted(t *testing.T) {
	c := setup(deadLetter("k0", event.ReasonMalformed, 0, 1), deadLetter("k1", event.ReasonMalformed, 0, 2))
	ctx, cancel := context.WithCancel(context.Background())
	c.onWrite = func(string, int) { cancel() }
	r, err := New(Config{Topic: dlq, Group: group, FromOffset: -1, Topics: c, Writer: c, Groups: c,
		BatchSize: 1, ProgressInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	stats, err := r.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "interrupted") {
		t.Fatalf("err %v", err)
	}
	if stats.Replayed != 1 || c.commitOf(group, 0) != 1 {
		t.Fatalf("stats %s, committed %d; want the written record committed", stats, c.commitOf(group, 0))
	}
}

func TestProgressLines(t *testing.T) {
	c := setup(deadLetter("k0", event.ReasonMalformed, 0, 1))
	stuck := &stuckTopics{fakeCluster: c}
	c.add(dlq, 0, deadLetter("k1", event.ReasonMalformed, 0, 2))
	res := runReplay(t, c, func(cfg *Config) {
		cfg.Topics = stuck
		cfg.IdleTimeout = 20 * time.Millisecond
		cfg.ProgressInterval = 5 * time.Millisecond
	})
	if res.err == nil {
		t.Fatal("want the stuck error")
	}
	if !strings.Contains(res.status, "dlq replay: read=1 replayed=0 skipped=0") &&
		!strings.Contains(res.status, "dlq replay: read=1 replayed=1 skipped=0") {
		t.Fatalf("no progress line:\n%s", res.status)
	}
}

func TestConfigValidation(t *testing.T) {
	c := newFakeCluster()
	base := Config{Topic: dlq, Group: group, FromOffset: -1, Topics: c, Writer: c, Groups: c}
	for name, mutate := range map[string]func(*Config){
		"no topic":         func(cfg *Config) { cfg.Topic = "" },
		"no group":         func(cfg *Config) { cfg.Group = "" },
		"to the dlq":       func(cfg *Config) { cfg.ToTopic = dlq },
		"negative limit":   func(cfg *Config) { cfg.Limit = -1 },
		"offset and since": func(cfg *Config) { cfg.FromOffset = 1; cfg.Since = time.Now() },
		"no writer":        func(cfg *Config) { cfg.Writer = nil },
	} {
		cfg := base
		mutate(&cfg)
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
