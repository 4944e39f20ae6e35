// Package board is the Kafka side of the shared rate budget: a small
// compacted topic on which every replica publishes its ratelimit.Record,
// keyed by replica, and from which every replica reads the others'. It
// implements ratelimit.Board. Nothing but the deployment's own Kafka is
// needed: no new server.
package board

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/ratelimit"
)

// Config configures a Board.
type Config struct {
	Brokers   []string
	Topic     string
	Replica   string // this replica's key
	Dialer    *kafka.Dialer
	Transport *kafka.Transport
	Logger    *slog.Logger
	// OnDuplicate, when set, is called for every message read under this
	// replica's key that this Board did not write (see Duplicates).
	OnDuplicate func()
}

// WriterHeader is the header of every message a Board writes: a random id
// of the Board (one per process start), by which it tells its own messages
// from another process's under the same key.
const WriterHeader = "cohortsync-writer"

// duplicateLogEvery bounds the duplicate warnings: one at the first, then
// at most one per interval.
const duplicateLogEvery = time.Minute

// Board publishes and reads the records. Run must be running for Records
// to see anything.
type Board struct {
	cfg    Config
	log    *slog.Logger
	w      *kafka.Writer
	writer []byte    // this Board's WriterHeader value
	start  time.Time // when it was made: older messages are a former process's

	mu     sync.Mutex
	recs   map[string]ratelimit.Record
	fresh  time.Time // when the reader last reached the end of the topic
	ready  bool      // the topic is known to exist: Run found or created it
	failed bool      // the last publish failed (logged once per change)
	dups   int64     // messages under our key that we did not write
	dupAt  int64     // the offset of the last one counted (a re-read counts none twice)
	dupLog time.Time // the last duplicate warning
}

// errNotReady is Publish's error before Run has made sure the topic exists
// (the Fleet's first records come before): not worth a warning.
var errNotReady = errors.New("board: the budget topic is not ready yet")

var _ ratelimit.Board = (*Board)(nil)

// New returns a Board. It connects nothing yet.
func New(cfg Config) *Board {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &kafka.Dialer{Timeout: 10 * time.Second, DualStack: true}
	}
	if cfg.Transport == nil {
		cfg.Transport = &kafka.Transport{}
	}
	id := make([]byte, 8)
	_, _ = rand.Read(id) // never fails (crypto/rand)
	return &Board{
		cfg:    cfg,
		writer: []byte(hex.EncodeToString(id)),
		start:  time.Now(),
		log:    cfg.Logger.With("component", "budget-board", "topic", cfg.Topic),
		w: &kafka.Writer{
			Addr:         kafka.TCP(cfg.Brokers...),
			Topic:        cfg.Topic,
			Transport:    cfg.Transport,
			Balancer:     &kafka.Hash{},
			RequiredAcks: kafka.RequireAll,
			BatchTimeout: time.Millisecond, // one record a second: never wait to fill a batch
			MaxAttempts:  1,                // the next record replaces a lost one
		},
		recs: make(map[string]ratelimit.Record),
	}
}

// Publish writes this replica's record.
func (b *Board) Publish(ctx context.Context, r ratelimit.Record) error {
	b.mu.Lock()
	ready := b.ready
	b.mu.Unlock()
	if !ready {
		return errNotReady
	}
	v, err := json.Marshal(r)
	if err != nil {
		return err
	}
	err = b.w.WriteMessages(ctx, b.message(v))
	b.mu.Lock()
	changed := b.failed != (err != nil)
	b.failed = err != nil
	b.mu.Unlock()
	switch {
	case changed && err != nil:
		b.log.Warn("cannot publish to the budget board: this replica lends nothing and borrows nothing until it can (its own share only)", "err", err)
	case changed:
		b.log.Info("publishing to the budget board again")
	}
	return err
}

// Records returns the latest record of every replica read so far (this
// one's too; the Fleet skips it) and when the reader last reached the end
// of the topic.
func (b *Board) Records() ([]ratelimit.Record, time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make([]ratelimit.Record, 0, len(b.recs))
	for _, r := range b.recs {
		out = append(out, r)
	}
	return out, b.fresh
}

// Run makes sure the topic exists, then reads it until ctx ends; on the way
// out it deletes this replica's record (a tombstone) and closes the writer.
// Read errors are retried: meanwhile the records go stale, and the Fleet
// falls back to the static share.
func (b *Board) Run(ctx context.Context) {
	defer b.w.Close()
	defer b.leave()
	for ctx.Err() == nil {
		if err := b.ensureTopic(ctx); err != nil {
			b.log.Warn("the budget board topic is missing and cannot be created: each replica keeps its static share", "err", err)
		} else if err := b.readReady(ctx); err != nil && ctx.Err() == nil {
			b.log.Warn("reading the budget board failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
	}
}

// readReady marks the topic ready for Publish, then reads it.
func (b *Board) readReady(ctx context.Context) error {
	b.mu.Lock()
	b.ready = true
	b.mu.Unlock()
	return b.read(ctx)
}

// read follows the topic from its start, keeping the latest record per key.
func (b *Board) read(ctx context.Context) error {
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:   b.cfg.Brokers,
		Topic:     b.cfg.Topic,
		Partition: 0,
		Dialer:    b.cfg.Dialer,
		MinBytes:  1,
		MaxBytes:  1 << 20,
		MaxWait:   250 * time.Millisecond,
		Logger:    nil,
	})
	defer r.Close()
	if err := r.SetOffset(kafka.FirstOffset); err != nil {
		return err
	}
	for {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			return err
		}
		b.apply(m)
	}
}

// message is this replica's record value v (nil: a tombstone), marked as
// this Board's.
func (b *Board) message(v []byte) kafka.Message {
	return kafka.Message{Key: []byte(b.cfg.Replica), Value: v,
		Headers: []kafka.Header{{Key: WriterHeader, Value: b.writer}}}
}

// Duplicates returns how many messages the Board has read under its own
// replica key, written since it was made, that it did not write: another
// process runs under the same replica name, and each overwrites the
// other's record (the Fleet then sees neither, and sharing falls back to
// static shares).
func (b *Board) Duplicates() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.dups
}

// foreign reports whether m is under this replica's key, written by
// another process since this Board was made.
func (b *Board) foreign(m kafka.Message) bool {
	if string(m.Key) != b.cfg.Replica || (!m.Time.IsZero() && m.Time.Before(b.start)) {
		return false
	}
	for _, h := range m.Headers {
		if h.Key == WriterHeader {
			return !bytes.Equal(h.Value, b.writer)
		}
	}
	return true // a writer that does not mark its messages: not this Board
}

// duplicate counts and reports a foreign message (see foreign), once.
func (b *Board) duplicate(m kafka.Message) {
	b.mu.Lock()
	if b.dups > 0 && m.Offset <= b.dupAt {
		b.mu.Unlock()
		return // counted before the reader started over
	}
	b.dups, b.dupAt = b.dups+1, m.Offset
	n, warn := b.dups, time.Since(b.dupLog) >= duplicateLogEvery
	if warn {
		b.dupLog = time.Now()
	}
	b.mu.Unlock()
	if warn {
		b.log.Error("another process publishes budget records under this replica's name: their records overwrite each other and the fleet shares the budget by static shares only; give each replica a unique name",
			"replica", b.cfg.Replica, "offset", m.Offset, "duplicates", n)
	}
	if b.cfg.OnDuplicate != nil {
		b.cfg.OnDuplicate()
	}
}

// apply keeps one message: a record, or a tombstone that deletes its key.
func (b *Board) apply(m kafka.Message) {
	if b.foreign(m) {
		b.duplicate(m)
	}
	key := string(m.Key)
	b.mu.Lock()
	defer b.mu.Unlock()
	if m.Offset+1 >= m.HighWaterMark {
		b.fresh = time.Now()
	}
	if m.Value == nil {
		delete(b.recs, key)
		return
	}
	var rec ratelimit.Record
	if err := json.Unmarshal(m.Value, &rec); err != nil || rec.Replica != key {
		return // not ours to read: another writer's bytes
	}
	b.recs[key] = rec
}

// leave deletes this replica's record, so that nobody waits for its loans.
func (b *Board) leave() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = b.w.WriteMessages(ctx, b.message(nil))
}

// ensureTopic creates the topic, compacted with one partition, unless it
// exists.
func (b *Board) ensureTopic(ctx context.Context) error {
	c := &kafka.Client{Addr: kafka.TCP(b.cfg.Brokers...), Transport: b.cfg.Transport, Timeout: 10 * time.Second}
	// All topics: asking for the one topic would have a broker with
	// auto.create.topics.enable create it, uncompacted.
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return err
	}
	for _, t := range md.Topics {
		if t.Name == b.cfg.Topic && t.Error == nil && len(t.Partitions) > 0 {
			return nil
		}
	}
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: b.cfg.Topic, NumPartitions: 1, ReplicationFactor: min(3, max(1, len(md.Brokers))),
		ConfigEntries: []kafka.ConfigEntry{
			{ConfigName: "cleanup.policy", ConfigValue: "compact"},
			{ConfigName: "segment.ms", ConfigValue: strconv.Itoa(int(time.Hour / time.Millisecond))},
			{ConfigName: "min.cleanable.dirty.ratio", ConfigValue: "0.1"},
		},
	}}})
	if err != nil {
		return err
	}
	if err := res.Errors[b.cfg.Topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create %s: %w", b.cfg.Topic, err)
	}
	return nil
}
