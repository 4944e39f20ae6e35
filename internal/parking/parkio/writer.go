package parkio

import "context"

// Writer appends parked records with acks=all, with kafka.Client.Produce (it
// returns offsets; kafka.Writer does not). Safe for concurrent use; writes
// to one parking partition are serialised (one produce in flight per
// partition), so records given in one call, and calls made one after
// another, land in order per partition. A failed produce is retried with
// backoff until ctx ends (a retried produce may duplicate a batch:
// duplicates follow their originals in order, which the protocol allows).
type Writer struct {
	cfg        Config
	partitions int
}

// NewWriter returns a Writer of the topic cfg.Topic with partitions
// partitions (Ensure's result). It connects nothing yet.
func NewWriter(cfg Config, partitions int) *Writer {
	return &Writer{cfg: cfg, partitions: partitions}
}

// Write appends recs and returns, once all are acknowledged, each one's
// position (pos[i] for recs[i]).
func (w *Writer) Write(ctx context.Context, recs []Record) ([]Position, error) {
	return nil, errTODO
}

// MarkAndEnds writes one marker (a record with no change, generation gen)
// to every parking partition, waits for the acknowledgements, then returns
// every partition's end offset (ends[k] = next offset of partition k), read
// after the markers (protocol 6 (b)).
func (w *Writer) MarkAndEnds(ctx context.Context, gen int64) ([]int64, error) {
	return nil, errTODO
}

// Idle returns a channel closed when no Write is in flight (for the fence,
// protocol 6 (a)).
func (w *Writer) Idle() <-chan struct{} {
	ch := make(chan struct{})
	close(ch)
	return ch
}

// Close releases the Writer's connections.
func (w *Writer) Close() error { return nil }
