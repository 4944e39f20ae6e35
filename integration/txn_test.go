package integration

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/cohortsync/cohortsync-worker/internal/event"
)

// txnProducer is a minimal transactional producer (kafka-go's Writer has
// none), on kafka-go's Client: InitProducerID, then per transaction
// AddPartitionsToTxn, Produce of transactional record batches, EndTxn.
type txnProducer struct {
	c      *kafka.Client
	id     string
	pid    int
	epoch  int
	topic  string
	seq    map[int]int32 // next sequence number per partition
	inTxn  map[int]bool  // partitions added to the open transaction
	events []eventAt     // of the open transaction
}

type eventAt struct {
	partition int
	ev        event.Event
}

func newTxnProducer(t *testing.T, topic, id string) *txnProducer {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokerAddr), Timeout: 20 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var res *kafka.InitProducerIDResponse
	var err error
	// The transaction coordinator may not be loaded yet right after the
	// broker started: retry the retriable errors.
	waitFor(t, 45*time.Second, "a producer id", func() bool {
		res, err = c.InitProducerID(ctx, &kafka.InitProducerIDRequest{TransactionalID: id, TransactionTimeoutMs: 60000})
		if err == nil && res.Error == nil && res.Producer != nil {
			return true
		}
		t.Logf("InitProducerID: %v %v", err, errOf(res))
		time.Sleep(200 * time.Millisecond)
		return false
	})
	return &txnProducer{c: c, id: id, pid: res.Producer.ProducerID, epoch: res.Producer.ProducerEpoch, topic: topic,
		seq: map[int]int32{}, inTxn: map[int]bool{}}
}

func errOf(res *kafka.InitProducerIDResponse) error {
	if res == nil {
		return nil
	}
	return res.Error
}

// send produces evs to partition inside the open transaction (one batch).
func (p *txnProducer) send(ctx context.Context, partition int, evs ...event.Event) error {
	if !p.inTxn[partition] {
		if err := p.addPartition(ctx, partition); err != nil {
			return err
		}
		p.inTxn[partition] = true
	}
	recs := make([]protocol.Record, len(evs))
	for i, ev := range evs {
		recs[i] = protocol.Record{Key: protocol.NewBytes([]byte(ev.CohortID)), Value: protocol.NewBytes(event.Encode(ev))}
	}
	raw, err := transactionalBatch(int64(p.pid), int16(p.epoch), p.seq[partition], recs)
	if err != nil {
		return err
	}
	res, err := p.c.RawProduce(ctx, &kafka.RawProduceRequest{Topic: p.topic, Partition: partition,
		RequiredAcks: kafka.RequireAll, TransactionalID: p.id, RawRecords: protocol.RawRecordSet{Reader: bytes.NewReader(raw)}})
	if err != nil {
		return err
	}
	if res.Error != nil {
		return fmt.Errorf("produce: %w", res.Error)
	}
	p.seq[partition] += int32(len(evs))
	for _, ev := range evs {
		p.events = append(p.events, eventAt{partition, ev})
	}
	return nil
}

// addPartition adds partition to the open transaction. The previous
// transaction may still be completing (its markers being written): the
// coordinator answers CONCURRENT_TRANSACTIONS, and a producer retries.
func (p *txnProducer) addPartition(ctx context.Context, partition int) error {
	for {
		res, err := p.c.AddPartitionsToTxn(ctx, &kafka.AddPartitionsToTxnRequest{TransactionalID: p.id,
			ProducerID: p.pid, ProducerEpoch: p.epoch, Topics: map[string][]kafka.AddPartitionToTxn{p.topic: {{Partition: partition}}}})
		if err != nil {
			return err
		}
		var perr error
		for _, ps := range res.Topics[p.topic] {
			if ps.Error != nil {
				perr = ps.Error
			}
		}
		if !errors.Is(perr, kafka.ConcurrentTransactions) {
			if perr != nil {
				return fmt.Errorf("AddPartitionsToTxn: %w", perr)
			}
			return nil
		}
		select {
		case <-time.After(20 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// end commits or aborts the open transaction and returns its events.
func (p *txnProducer) end(ctx context.Context, commit bool) ([]eventAt, error) {
	res, err := p.c.EndTxn(ctx, &kafka.EndTxnRequest{TransactionalID: p.id, ProducerID: p.pid,
		ProducerEpoch: p.epoch, Committed: commit})
	if err != nil {
		return nil, err
	}
	if res.Error != nil {
		return nil, fmt.Errorf("EndTxn: %w", res.Error)
	}
	evs := p.events
	p.events, p.inTxn = nil, map[int]bool{}
	return evs, nil
}

// transactionalBatch encodes recs as one v2 record batch (with its size
// prefix, as a RawRecordSet carries it) marked transactional, of producer
// pid/epoch from sequence number seq. kafka-go's encoder writes producer id
// -1 and no transactional bit: they are set here, and the CRC redone.
func transactionalBatch(pid int64, epoch int16, seq int32, recs []protocol.Record) ([]byte, error) {
	var buf bytes.Buffer
	rs := protocol.RecordSet{Version: 2, Records: protocol.NewRecordReader(recs...)}
	if _, err := rs.WriteTo(&buf); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	batch := b[4:] // after the record set's size
	be := binary.BigEndian
	be.PutUint16(batch[21:], be.Uint16(batch[21:])|uint16(protocol.Transactional)) // attributes
	be.PutUint64(batch[43:], uint64(pid))                                          // producer id
	be.PutUint16(batch[51:], uint16(epoch))                                        // producer epoch
	be.PutUint32(batch[53:], uint32(seq))                                          // base sequence
	be.PutUint32(batch[17:], crc32.Checksum(batch[21:], crc32.MakeTable(crc32.Castagnoli)))
	return b, nil
}

// TestTransactionalInput (issue 18 §8): a transactional producer commits
// and aborts transactions, of one record and of several, interleaved with
// plain records, while the worker reads. The segments hold exactly the fold
// of the plain and committed events; no transaction marker and no aborted
// record is dead-lettered; every partition's lag reaches 0, although each
// ends with an abort marker.
func TestTransactionalInput(t *testing.T) {
	const parts = 2
	topic, dlq := newTopic(t, parts)
	a := startAPI(t, nil)
	p := newProducer(t, topic)
	env := workerEnv(a, topic, dlq, "g-"+topic)
	w := startWorker(t, "w1", env)
	waitFor(t, 30*time.Second, "readiness", w.ready)

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	tp := newTxnProducer(t, topic, "it-txn-"+topic)
	g := newGen(18, 8, 400)
	aborted := 0
	for round := range 60 {
		if err := p.send(ctx, g.next(), g.next()); err != nil { // plain records
			t.Fatal(err)
		}
		// Every third transaction commits; the others abort. Aborted ones
		// add members nothing else adds ("x…") and remove members the fold
		// holds, so a leak of either shows in the segments.
		commit := round%3 == 0
		n := 1 + round%4
		for i := range n {
			ev := g.next()
			if !commit {
				ev = abortedEvent(round, i, g)
			}
			if err := tp.send(ctx, (round+i)%parts, ev); err != nil {
				t.Fatalf("round %d: %v", round, err)
			}
		}
		evs, err := tp.end(ctx, commit)
		if err != nil {
			t.Fatalf("round %d: %v", round, err)
		}
		if commit {
			for _, e := range evs {
				p.mu.Lock()
				p.want.apply(e.ev)
				p.mu.Unlock()
			}
		} else {
			aborted += len(evs)
		}
	}
	// Each partition ends with an aborted transaction: its last offset is
	// an abort marker the commit must pass for the lag to reach 0.
	for part := range parts {
		if err := tp.send(ctx, part, abortedEvent(99, part, g)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := tp.end(ctx, false); err != nil {
		t.Fatal(err)
	}

	waitNoLag(t, topic, env["KAFKA_GROUP_ID"], time.Minute)
	if d := diff(p.model(), a.state()); d != "" {
		t.Errorf("segments differ from the fold of the plain and committed events (%d aborted events): %s", aborted, d)
	}
	if letters := readAll(t, dlq); len(letters) > 0 {
		var hs []string
		for _, h := range letters[0].Headers {
			hs = append(hs, h.Key+"="+string(h.Value))
		}
		t.Errorf("%d records dead-lettered, e.g. %q", len(letters), hs)
	}
	if err := w.stop(30 * time.Second); err != nil {
		t.Fatalf("SIGTERM: %v", err)
	}
}

// abortedEvent is an event of an aborted transaction: an add of a member
// no committed event adds, or a remove of members the fold may hold.
func abortedEvent(round, i int, g *gen) event.Event {
	ev := g.next()
	if (round+i)%2 == 0 {
		ev.Action = event.Add
		ev.UIDs = []string{fmt.Sprintf("x%03d-%d", round, i)}
	} else {
		ev.Action = event.Remove
	}
	return ev
}
