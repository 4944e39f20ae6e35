package replay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// HeaderReplayedFrom is added to every replayed record: the dead-letter
// record it came from, as "<topic>/<partition>/<offset>".
const HeaderReplayedFrom = "cohortsync-replayed-from"

// headerPrefix marks the headers the worker adds; a replay drops them all.
const headerPrefix = "cohortsync-"

// Topics reads topic metadata and records. Implementations must be safe
// for use by one goroutine at a time; Replayer never calls them
// concurrently.
type Topics interface {
	// Partitions returns the partition ids of topic in ascending order, or
	// an error when the topic does not exist.
	Partitions(ctx context.Context, topic string) ([]int, error)
	// Offsets returns an offset of every partition given: at is
	// kafka.FirstOffset (the first retained record), kafka.LastOffset (the
	// end: the offset the next record will get) or a Unix time in
	// milliseconds (the first record at or after that time; -1 when there
	// is none).
	Offsets(ctx context.Context, topic string, partitions []int, at int64) (map[int]int64, error)
	// Reader returns a reader of topic/partition positioned at offset.
	Reader(topic string, partition int, offset int64) (Reader, error)
}

// Reader reads one partition in offset order. FetchMessage blocks until a
// record is available or ctx ends (it then returns ctx.Err()); the reader
// stays usable after such a return.
type Reader interface {
	FetchMessage(ctx context.Context) (kafka.Message, error)
	Close() error
}

var _ Reader = (*kafka.Reader)(nil)

// Writer appends records to one partition, in order, acknowledged by all
// in-sync replicas. A nil error means every record was written.
type Writer interface {
	Write(ctx context.Context, topic string, partition int, msgs []kafka.Message) error
}

// Groups reads and holds consumer-group offsets.
type Groups interface {
	// Committed returns the offsets group committed for the partitions of
	// topic (-1: none). It does not join the group.
	Committed(ctx context.Context, group, topic string, partitions []int) (map[int]int64, error)
	// Join makes this process a member of group, consuming topic.
	Join(ctx context.Context, group, topic string) (Membership, error)
}

// Membership is this process's membership of a consumer group.
type Membership interface {
	// Next returns the next generation's claim, joining the group first
	// (or again after the previous claim was lost).
	Next(ctx context.Context) (Claim, error)
	// Close leaves the group.
	Close() error
}

// Claim is one generation of a Membership: the partitions the group
// assigned to this member.
type Claim interface {
	// Partitions maps each assigned partition to the group's committed
	// offset (-1: none).
	Partitions() map[int]int64
	// Do runs fn and returns its error. fn's context ends when the claim
	// is lost (a rebalance); the group moves on only after fn returned.
	Do(fn func(ctx context.Context) error) error
	// Commit commits offsets (partition → the next offset to read).
	Commit(offsets map[int]int64) error
}

// Config configures a Replayer. Zero durations and sizes take the
// documented defaults.
type Config struct {
	Topic string // the dead-letter topic; required
	Group string // the replay's consumer group; required

	// FromOffset, when not negative, makes every partition start at this
	// offset or later (the group's committed offset still wins when it is
	// further on). -1: not set.
	FromOffset int64
	// Since, when not zero, makes every partition start at its first record
	// written at or after Since, or later (as FromOffset).
	Since time.Time
	// Reasons, when not empty, selects only the records whose
	// cohortsync-reason header is one of them; the others are skipped.
	Reasons []event.Reason
	// ToTopic overrides the destination. Empty: the record's
	// cohortsync-source-topic header, into its cohortsync-source-partition.
	ToTopic string
	// Limit stops the run after this many records were replayed. 0: none.
	Limit int
	// DryRun lists what would be replayed on Out and writes and commits
	// nothing (it does not join the group either).
	DryRun bool

	Topics Topics // required
	Writer Writer // required unless DryRun
	Groups Groups // required

	Out    io.Writer // the dry-run listing; default io.Discard
	Status io.Writer // progress and notes; default io.Discard

	BatchSize        int           // records examined between commits; default 100
	ProgressInterval time.Duration // default 1s; negative: no progress lines
	IdleTimeout      time.Duration // wait for a record below the end before checking why; default 10s
	JoinTimeout      time.Duration // joining the group; default 60s
}

func (c *Config) setDefaults() error {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ProgressInterval, time.Second)
	def(&c.IdleTimeout, 10*time.Second)
	def(&c.JoinTimeout, time.Minute)
	if c.BatchSize <= 0 {
		c.BatchSize = 100
	}
	if c.Out == nil {
		c.Out = io.Discard
	}
	if c.Status == nil {
		c.Status = io.Discard
	}
	switch {
	case c.Topic == "":
		return errors.New("replay: no dead-letter topic")
	case c.Group == "":
		return errors.New("replay: no consumer group")
	case c.ToTopic == c.Topic:
		return fmt.Errorf("replay: the destination %s is the dead-letter topic", c.ToTopic)
	case c.Limit < 0:
		return errors.New("replay: negative limit")
	case c.FromOffset >= 0 && !c.Since.IsZero():
		return errors.New("replay: FromOffset and Since are exclusive")
	case c.Topics == nil || c.Groups == nil || (c.Writer == nil && !c.DryRun):
		return errors.New("replay: Topics, Groups and Writer are required")
	}
	return nil
}

// Stats counts the records of a run. Replayed counts, in a dry run, the
// records that would have been replayed.
type Stats struct {
	Read     int64 // dead-letter records examined
	Replayed int64 // written to their destination
	Skipped  int64 // not selected by the reason filter
}

// String is the summary line: "read=N replayed=N skipped=N".
func (s Stats) String() string {
	return fmt.Sprintf("read=%d replayed=%d skipped=%d", s.Read, s.Replayed, s.Skipped)
}

// errClaimLost ends a claim's work when the group rebalanced under it.
var errClaimLost = errors.New("the consumer group rebalanced")

// Replayer replays a dead-letter topic once. Run may be called once.
type Replayer struct {
	cfg     Config
	reasons map[string]bool
	status  *lockedWriter

	read, replayed, skipped atomic.Int64

	// Owned by the goroutine running the replay (Run's, or a Claim.Do's
	// while Run waits for it).
	spans      map[int]span
	partitions map[string]int // partition count of destination topics
	hash       kafka.Hash
}

// span is what one dead-letter partition held when the run started.
type span struct {
	first, end int64 // the first retained offset and the end offset
	floor      int64 // FromOffset or Since's offset; -1 when neither is set
}

// New validates cfg and returns a Replayer.
func New(cfg Config) (*Replayer, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	r := &Replayer{cfg: cfg, status: &lockedWriter{w: cfg.Status}, partitions: map[string]int{}}
	if len(cfg.Reasons) > 0 {
		r.reasons = map[string]bool{}
		for _, reason := range cfg.Reasons {
			r.reasons[string(reason)] = true
		}
	}
	return r, nil
}

// Stats returns the counts so far. Safe for concurrent use.
func (r *Replayer) Stats() Stats {
	return Stats{Read: r.read.Load(), Replayed: r.replayed.Load(), Skipped: r.skipped.Load()}
}

// Run replays the dead-letter topic up to the end offsets it finds at
// start, and returns the counts and the error that stopped it, if any.
// When ctx ends, Run stops: what it wrote is committed, what it read but
// did not write is read again by the next run.
func (r *Replayer) Run(ctx context.Context) (Stats, error) {
	stop := r.progress()
	err := r.run(ctx)
	stop()
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("interrupted (what was replayed is committed): %w", context.Cause(ctx))
	}
	return r.Stats(), err
}

func (r *Replayer) run(ctx context.Context) error {
	topic := r.cfg.Topic
	parts, err := r.cfg.Topics.Partitions(ctx, topic)
	if err != nil {
		return fmt.Errorf("dead-letter topic %s: %w", topic, err)
	}
	ends, err := r.cfg.Topics.Offsets(ctx, topic, parts, kafka.LastOffset)
	if err != nil {
		return fmt.Errorf("end offsets of %s: %w", topic, err)
	}
	firsts, err := r.cfg.Topics.Offsets(ctx, topic, parts, kafka.FirstOffset)
	if err != nil {
		return fmt.Errorf("first offsets of %s: %w", topic, err)
	}
	var since map[int]int64
	if !r.cfg.Since.IsZero() {
		if since, err = r.cfg.Topics.Offsets(ctx, topic, parts, r.cfg.Since.UnixMilli()); err != nil {
			return fmt.Errorf("offsets of %s at %s: %w", topic, r.cfg.Since.Format(time.RFC3339), err)
		}
	}
	r.spans = map[int]span{}
	for _, p := range parts {
		sp := span{first: max(firsts[p], 0), end: ends[p], floor: r.cfg.FromOffset}
		if since != nil {
			sp.floor = since[p]
			if sp.floor < 0 { // nothing written since then
				sp.floor = sp.end
			}
		}
		r.spans[p] = sp
	}
	if r.cfg.DryRun {
		committed, err := r.cfg.Groups.Committed(ctx, r.cfg.Group, topic, parts)
		if err != nil {
			return fmt.Errorf("committed offsets of group %s: %w", r.cfg.Group, err)
		}
		for _, p := range parts {
			c, ok := committed[p]
			if !ok {
				c = -1
			}
			if err := r.partition(ctx, p, c, nil, nil); err != nil {
				return err
			}
			if r.limitReached(0) {
				break
			}
		}
		return nil
	}
	return r.runGroup(ctx, parts)
}

// runGroup replays the partitions the replay's consumer group assigns to
// this run, rejoining when the group rebalances.
func (r *Replayer) runGroup(ctx context.Context, parts []int) error {
	m, err := r.cfg.Groups.Join(ctx, r.cfg.Group, r.cfg.Topic)
	if err != nil {
		return fmt.Errorf("joining consumer group %s: %w", r.cfg.Group, err)
	}
	defer m.Close()
	done := map[int]bool{}
	for {
		jctx, cancel := context.WithTimeout(ctx, r.cfg.JoinTimeout)
		claim, err := m.Next(jctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("joining consumer group %s: %w", r.cfg.Group, err)
		}
		assigned := claim.Partitions()
		if len(assigned) == 0 {
			return fmt.Errorf("consumer group %s assigned no partition of %s to this run: is another replay with this group running?", r.cfg.Group, r.cfg.Topic)
		}
		var todo []int
		for p := range assigned {
			if !done[p] {
				todo = append(todo, p)
			}
		}
		slices.Sort(todo)
		err = claim.Do(func(gctx context.Context) error {
			wctx, cancel := context.WithCancel(ctx)
			defer cancel()
			defer context.AfterFunc(gctx, cancel)()
			live := func() error { // checked before every write (AfterFunc is asynchronous)
				if gctx.Err() != nil {
					return errClaimLost
				}
				return nil
			}
			for _, p := range todo {
				if err := r.partition(wctx, p, assigned[p], claim.Commit, live); err != nil {
					if gctx.Err() != nil && ctx.Err() == nil {
						return errClaimLost
					}
					return err
				}
				done[p] = true
				if r.limitReached(0) {
					return nil
				}
			}
			return nil
		})
		if errors.Is(err, errClaimLost) {
			r.statusf("consumer group %s rebalanced (another replay with this group?); rejoining", r.cfg.Group)
			continue
		}
		if err != nil {
			return err
		}
		if !r.limitReached(0) {
			var others []string
			for _, p := range parts {
				if _, ok := assigned[p]; !ok {
					others = append(others, strconv.Itoa(p))
				}
			}
			if len(others) > 0 {
				r.statusf("partitions %s of %s belong to another member of group %s: this run did not replay them",
					strings.Join(others, ","), r.cfg.Topic, r.cfg.Group)
			}
		}
		return nil
	}
}
