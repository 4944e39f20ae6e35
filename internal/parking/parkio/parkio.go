package parkio

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cohortsync/cohortsync-worker/internal/parking"
)

// Header names of a parked record. HeaderNotBefore and HeaderGeneration are
// the parking package's (one name per header in the code base).
const (
	HeaderWorkspace       = "cohortsync-workspace"
	HeaderCohort          = "cohortsync-cohort"
	HeaderSourceTopic     = "cohortsync-source-topic"
	HeaderSourcePartition = "cohortsync-source-partition"
	HeaderSourceOffset    = "cohortsync-source-offset"
	HeaderNotBefore       = parking.HeaderNotBefore  // "cohortsync-not-before-ms"
	HeaderGeneration      = parking.HeaderGeneration // the writer's group generation
	HeaderMarker          = "cohortsync-marker"      // value MarkerValue on a generation marker
	MarkerValue           = "1"
)

// Defaults of Config.
const (
	DefaultPartitions  = 12
	DefaultReplication = 3
	DefaultRetention   = 7 * 24 * time.Hour
)

// TopicName is the parking topic of a consumer group: "<group>.parked".
func TopicName(group string) string { return group + ".parked" }

// Config is what every function needs. Transport/Dialer as the rest of the
// worker builds them (internal/kafkaconn); nil means plaintext defaults.
type Config struct {
	Brokers     []string
	Transport   kafka.RoundTripper
	Dialer      *kafka.Dialer
	Topic       string
	Partitions  int           // K for a topic created here (default 12)
	Replication int           // replication factor for a topic created here (default 3, capped at the broker count)
	Retention   time.Duration // retention.ms of a topic created here (default 7 days)
	// Logger receives the Writer's retried errors (once per change of
	// error); nil logs nothing. (Added to the seam's API; additive.)
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Partitions <= 0 {
		c.Partitions = DefaultPartitions
	}
	if c.Replication <= 0 {
		c.Replication = DefaultReplication
	}
	if c.Retention <= 0 {
		c.Retention = DefaultRetention
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}

func (c Config) client() *kafka.Client {
	return &kafka.Client{Addr: kafka.TCP(c.Brokers...), Transport: c.Transport}
}

// Record is one parked record: the source record's key and value unchanged,
// plus headers.
type Record struct {
	Workspace, Cohort string // routing: partition parking.PartitionFor(Workspace, Cohort, K)
	Key, Value        []byte // the source record's, unchanged
	SourceTopic       string
	SourcePartition   int
	SourceOffset      int64
	NotBefore         time.Duration // DESIGN.md parking protocol 2 (header cohortsync-not-before-ms)
	Generation        int64         // the writer's group generation (protocol 6)
}

// Position is where a record was appended.
type Position struct {
	Partition int
	Offset    int64
}

// Parked is a decoded parking record.
type Parked struct {
	Record
	Marker    bool // a generation marker: no change; only Generation is set
	Partition int
	Offset    int64
}

// ErrNotParked: a record of the parking topic without the parking headers,
// or with one that does not parse (not written by a worker); the consumer
// dead-letters it.
var ErrNotParked = errors.New("parkio: not a parked record")

// headers returns r's headers (the not-before rounded up to the
// millisecond, as parking.NotBefore: a reader never waits less).
func (r Record) headers() []kafka.Header {
	nb := int64(0)
	if r.NotBefore > 0 {
		nb = int64((r.NotBefore + time.Millisecond - 1) / time.Millisecond)
	}
	return []kafka.Header{
		{Key: HeaderWorkspace, Value: []byte(r.Workspace)},
		{Key: HeaderCohort, Value: []byte(r.Cohort)},
		{Key: HeaderSourceTopic, Value: []byte(r.SourceTopic)},
		{Key: HeaderSourcePartition, Value: strconv.AppendInt(nil, int64(r.SourcePartition), 10)},
		{Key: HeaderSourceOffset, Value: strconv.AppendInt(nil, r.SourceOffset, 10)},
		{Key: HeaderNotBefore, Value: strconv.AppendInt(nil, nb, 10)},
		{Key: HeaderGeneration, Value: strconv.AppendInt(nil, r.Generation, 10)},
	}
}

// markerHeaders are the headers of a generation marker.
func markerHeaders(gen int64) []kafka.Header {
	return []kafka.Header{
		{Key: HeaderGeneration, Value: strconv.AppendInt(nil, gen, 10)},
		{Key: HeaderMarker, Value: []byte(MarkerValue)},
	}
}

// Decode decodes a message read from the parking topic. A record without
// the headers is an error (ErrNotParked): it was not written by a worker;
// the consumer dead-letters it. A marker needs only the generation.
func Decode(m kafka.Message) (Parked, error) {
	h := map[string]string{}
	for _, x := range m.Headers {
		if _, dup := h[x.Key]; !dup { // the first wins: a duplicate is not ours
			h[x.Key] = string(x.Value)
		}
	}
	p := Parked{Partition: m.Partition, Offset: m.Offset}
	var err error
	if p.Generation, err = intHeader(h, HeaderGeneration); err != nil {
		return Parked{}, err
	}
	if v, ok := h[HeaderMarker]; ok {
		if v != MarkerValue {
			return Parked{}, fmt.Errorf("%w: %s %q", ErrNotParked, HeaderMarker, v)
		}
		p.Marker = true
		return p, nil
	}
	return decodeChange(m, h, p)
}

func decodeChange(m kafka.Message, h map[string]string, p Parked) (Parked, error) {
	var ok [3]bool
	p.Workspace, ok[0] = h[HeaderWorkspace]
	p.Cohort, ok[1] = h[HeaderCohort]
	p.SourceTopic, ok[2] = h[HeaderSourceTopic]
	for i, name := range []string{HeaderWorkspace, HeaderCohort, HeaderSourceTopic} {
		if !ok[i] {
			return Parked{}, fmt.Errorf("%w: no header %s", ErrNotParked, name)
		}
	}
	sp, err := intHeader(h, HeaderSourcePartition)
	if err != nil {
		return Parked{}, err
	}
	if sp < 0 || sp > 1<<31-1 {
		return Parked{}, fmt.Errorf("%w: %s %d", ErrNotParked, HeaderSourcePartition, sp)
	}
	p.SourcePartition = int(sp)
	if p.SourceOffset, err = intHeader(h, HeaderSourceOffset); err != nil {
		return Parked{}, err
	}
	v, present := h[HeaderNotBefore]
	if !present {
		return Parked{}, fmt.Errorf("%w: no header %s", ErrNotParked, HeaderNotBefore)
	}
	if p.NotBefore, err = parking.Wait(v); err != nil {
		return Parked{}, fmt.Errorf("%w: %w", ErrNotParked, err)
	}
	p.Key, p.Value = m.Key, m.Value
	return p, nil
}

func intHeader(h map[string]string, name string) (int64, error) {
	v, ok := h[name]
	if !ok {
		return 0, fmt.Errorf("%w: no header %s", ErrNotParked, name)
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: header %s %q", ErrNotParked, name, v)
	}
	return n, nil
}
