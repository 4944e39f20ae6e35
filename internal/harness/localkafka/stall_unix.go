//go:build unix

package localkafka

import (
	"context"
	"errors"
	"syscall"
	"time"
)

// Stall freezes the broker's JVM (SIGSTOP to its process group) for d, or
// until ctx ends, then resumes it (SIGCONT): a broker, group coordinator
// and controller that stop answering without closing a connection, as in a
// long GC pause or a stalled VM.
func (b *Broker) Stall(ctx context.Context, d time.Duration) error {
	b.mu.Lock()
	p := b.proc
	b.mu.Unlock()
	if p == nil {
		return errors.New("localkafka: the broker is not running")
	}
	if err := signalGroup(p.cmd.Process, syscall.SIGSTOP); err != nil {
		return err
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
	return signalGroup(p.cmd.Process, syscall.SIGCONT)
}
