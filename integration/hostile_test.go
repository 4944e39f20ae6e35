package integration

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/deadletter"
	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// TestHostileRecords: records at the edges a producer can reach, mixed
// into a valid stream: a 900 KB invalid action (a letter whose error header
// once quoted it all, and then no longer fitted a dead-letter topic at
// Kafka's default 1 MiB), a 600 KB malformed record, a record of 1,040,000
// bytes (the input topic takes it; no letter with it fits), a 200 KB uid
// (too large for any request: dead-lettered whole at decode), a bulk event
// with one such uid among valid ones (the valid ones are synced), and uids
// that are not UTF-8 or are lone surrogates (which would collapse into one
// U+FFFD uid). Twice: with the dead-letter topic at Kafka's default
// max.message.bytes, and at 500,000 (below some records: the broker refuses
// their letters, which are then written without the value). None may stop a
// partition; every valid change must land; each record gets its letter.
func TestHostileRecords(t *testing.T) {
	for _, max := range []int{0, 500_000} {
		t.Run(fmt.Sprintf("dlq-max-message-bytes-%d", max), func(t *testing.T) { testHostileRecords(t, max) })
	}
}

func testHostileRecords(t *testing.T, dlqMax int) {
	topic, _ := newTopic(t, 2)
	dlq := topic + ".hostile.dlq"
	tc := kafka.TopicConfig{Topic: dlq, NumPartitions: 1, ReplicationFactor: 1}
	letterRoom := deadletter.DefaultMaxLetterBytes - 4096 // a letter's headers and framing
	if dlqMax > 0 {
		tc.ConfigEntries = []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(dlqMax)}}
		letterRoom = min(letterRoom, dlqMax-4096)
	}
	createTopics(t, tc)
	a := startAPI(t, nil)
	p := newProducer(t, topic)
	g := newGen(42, 8, 300)
	big := &kafka.Writer{Addr: kafka.TCP(brokerAddr), Topic: topic, Balancer: &kafka.Hash{},
		BatchSize: 1, BatchBytes: 2 << 20, RequiredAcks: kafka.RequireAll}
	t.Cleanup(func() { big.Close() })

	valid := func(uid string) string {
		return `{"action":"add","cohort_id":"hostile","cohort_name":"Hostile","partner":"` + partner + `","uid":"` + uid + `"}`
	}
	huge := strings.Repeat("u", 200_000)
	type poison struct {
		value      string
		reason     event.Reason
		errorNames string
	}
	poisons := []poison{
		{value: `{"action":"` + strings.Repeat("x", 900_000) + `","cohort_id":"c","cohort_name":"n","partner":"p","uid":"u"}`,
			reason: event.ReasonInvalidAction},
		{value: `{"action":"add","uid":"` + strings.Repeat("y", 600_000), reason: event.ReasonMalformed},
		{value: `{"action":"add","uid":"` + strings.Repeat("z", 1_040_000), reason: event.ReasonMalformed},
		{value: valid(huge), reason: event.ReasonTooLarge},
		{value: `{"action":"add","cohort_id":"hostile","cohort_name":"Hostile","partner":"` + partner +
			`","uids":["bulk-ok-1","` + huge + `","bulk-ok-2"]}`, reason: event.ReasonTooLarge},
		{value: valid("a\xffb"), reason: event.ReasonInvalidField, errorNames: "UTF-8"},
		{value: valid("a\xfeb"), reason: event.ReasonInvalidField, errorNames: "UTF-8"},
		{value: valid(`a\ud800b`), reason: event.ReasonInvalidField, errorNames: "surrogate"},
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for i, pz := range poisons {
		p.sendN(t, g, 100)
		if err := big.WriteMessages(ctx, kafka.Message{Key: []byte("poison-" + strconv.Itoa(i)), Value: []byte(pz.value)}); err != nil {
			t.Fatalf("produce poison %d (%d bytes): %v", i, len(pz.value), err)
		}
	}
	p.sendN(t, g, 100)
	// The bulk event's two valid uids are synced; the huge one is not.
	p.mu.Lock()
	p.want.apply(event.Event{Action: event.Add, Partner: partner, CohortID: "hostile", UIDs: []string{"bulk-ok-1", "bulk-ok-2"}})
	p.mu.Unlock()

	env := workerEnv(a, topic, dlq, "g-"+topic)
	w := startWorker(t, "w", env)
	waitConverged(t, a, p.model(), time.Minute)
	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], time.Minute)

	got := readTopic(t, dlq, len(poisons), 30*time.Second)
	if len(got) != len(poisons) {
		t.Fatalf("dead-letter topic holds %d letters, want %d", len(got), len(poisons))
	}
	for _, m := range got {
		i, err := strconv.Atoi(strings.TrimPrefix(string(m.Key), "poison-"))
		if err != nil || i >= len(poisons) {
			t.Fatalf("unexpected letter key %q", m.Key)
		}
		pz := poisons[i]
		h := map[string]string{}
		for _, x := range m.Headers {
			h[x.Key] = string(x.Value)
			if len(x.Value) > 1024 {
				t.Errorf("letter %d: header %s is %d bytes: letters must be bounded", i, x.Key, len(x.Value))
			}
		}
		switch {
		case len(pz.value) > letterRoom: // written without its value
			if len(m.Value) != 0 || h[deadletter.HeaderReason] != string(event.ReasonTooLarge) ||
				h[deadletter.HeaderOriginalSize] != strconv.Itoa(len(pz.value)) || h[deadletter.HeaderOriginalReason] != string(pz.reason) {
				t.Errorf("letter %d: value %d bytes, headers %v; want no value, reason too_large, original size %d and reason %s",
					i, len(m.Value), h, len(pz.value), pz.reason)
			}
		default:
			if string(m.Value) != pz.value {
				t.Errorf("letter %d: value of %d bytes is not the original record (%d bytes)", i, len(m.Value), len(pz.value))
			}
			if h[deadletter.HeaderReason] != string(pz.reason) {
				t.Errorf("letter %d: reason %q, want %q (error %q)", i, h[deadletter.HeaderReason], pz.reason, h[deadletter.HeaderError])
			}
		}
		if pz.errorNames != "" && !strings.Contains(h[deadletter.HeaderError], pz.errorNames) {
			t.Errorf("letter %d: error %q does not say %q", i, h[deadletter.HeaderError], pz.errorNames)
		}
		if h[deadletter.HeaderSourceTopic] != topic || h[deadletter.HeaderSourceOffset] == "" {
			t.Errorf("letter %d: source headers %v", i, h)
		}
	}
	// Nothing that was not a valid uid reached the API.
	for _, r := range a.Requests() {
		for _, u := range r.Members {
			if len(u) > 1000 || strings.ContainsRune(u, '\uFFFD') {
				t.Errorf("request %d carried the member %.40q (%d bytes)", r.Seq, u, len(u))
			}
		}
	}
	if v := w.metric("cohortsync_dead_letter_failing"); v != 0 {
		t.Errorf("cohortsync_dead_letter_failing = %v after every letter was written", v)
	}
	if err := w.stop(30 * time.Second); err != nil {
		t.Fatal(err)
	}
}
