package localkafka

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"
)

// PID returns the process id of the running JVM, or 0 if none is running.
func (b *Broker) PID() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reap()
	if b.proc == nil {
		return 0
	}
	return b.proc.cmd.Process.Pid
}

// Running reports whether the JVM is running.
func (b *Broker) Running() bool { return b.PID() != 0 }

// killProc SIGKILLs p's process group and waits for it to be reaped.
func (b *Broker) killProc(p *process) {
	p.signaled = true
	_ = signalGroup(p.cmd.Process, syscall.SIGKILL)
	<-p.done
}

// terminateProc sends SIGTERM to p's process group, waits up to grace, then
// SIGKILLs it. It reports whether SIGKILL was needed.
func (b *Broker) terminateProc(p *process, grace time.Duration) (killed bool) {
	p.signaled = true
	_ = signalGroup(p.cmd.Process, syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return false
	case <-t.C:
		b.o.Logger.Warn("localkafka: broker ignored SIGTERM, killing it", "grace", grace)
		b.killProc(p)
		return true
	}
}

// reap notes how a JVM that exited by itself ended. Caller holds b.mu.
func (b *Broker) reap() {
	if b.proc == nil {
		return
	}
	select {
	case <-b.proc.done:
		if !b.proc.signaled {
			b.exitErr = fmt.Errorf("localkafka: broker exited unexpectedly (%v)", b.proc.err)
			if b.proc.err == nil {
				b.exitErr = errors.New("localkafka: broker exited unexpectedly (status 0)")
			}
		}
		b.proc = nil
	default:
	}
}

// Kill hard-kills the JVM (SIGKILL to its process group, like a crash or
// power loss) and waits for it to exit, keeping the data dir and ports for
// Restart. It is a no-op if the JVM is not running.
func (b *Broker) Kill() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reap()
	if b.proc == nil {
		return nil
	}
	b.o.Logger.Info("localkafka: killing broker (SIGKILL)", "pid", b.proc.cmd.Process.Pid)
	b.killProc(b.proc)
	b.proc = nil
	return nil
}

// Terminate stops the JVM gracefully (SIGTERM, then SIGKILL after
// Options.StopTimeout), keeping the data dir and ports for Restart. It is a
// no-op if the JVM is not running.
func (b *Broker) Terminate() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.reap()
	if b.proc == nil {
		return nil
	}
	start := time.Now()
	killed := b.terminateProc(b.proc, b.o.StopTimeout)
	b.proc = nil
	b.o.Logger.Info("localkafka: broker terminated", "took", time.Since(start).Round(time.Millisecond), "sigkill", killed)
	return nil
}

// Restart starts the broker again on the same ports and data dir (so topics,
// messages and committed offsets survive), hard-killing the JVM first if it
// is still running, and waits until it is ready as Start does. Clients must
// reconnect. It fails after Stop.
func (b *Broker) Restart(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return errors.New("localkafka: Restart after Stop")
	}
	b.reap()
	if b.proc != nil {
		b.o.Logger.Info("localkafka: killing broker for restart (SIGKILL)", "pid", b.proc.cmd.Process.Pid)
		b.killProc(b.proc)
		b.proc = nil
	}
	start := time.Now()
	if err := b.launch(ctx); err != nil {
		return err
	}
	b.o.Logger.Info("localkafka: broker restarted", "addr", b.Addr(), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// Stop shuts the broker down: SIGTERM to the JVM's process group, a wait
// bounded by Options.StopTimeout (default 20 s), then SIGKILL; then it
// removes DataDir if Start created it. It returns an error if the broker had
// died on its own or DataDir could not be removed. Calling it again returns
// the first result.
func (b *Broker) Stop() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stopped {
		return b.stopErr
	}
	b.stopped = true
	b.reap()
	var errs []error
	if b.exitErr != nil {
		errs = append(errs, b.exitErr)
	}
	if b.proc != nil {
		start := time.Now()
		killed := b.terminateProc(b.proc, b.o.StopTimeout)
		b.proc = nil
		b.o.Logger.Info("localkafka: broker stopped", "took", time.Since(start).Round(time.Millisecond), "sigkill", killed)
	}
	if b.ownsDir {
		if err := os.RemoveAll(b.dataDir); err != nil {
			errs = append(errs, fmt.Errorf("localkafka: remove data dir: %w", err))
		}
	}
	b.stopErr = errors.Join(errs...)
	return b.stopErr
}
