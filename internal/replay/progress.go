package replay

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// progress prints the counts to Status every ProgressInterval until the
// returned func is called.
func (r *Replayer) progress() (stop func()) {
	if r.cfg.ProgressInterval < 0 {
		return func() {}
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(r.cfg.ProgressInterval)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				r.statusf("%s", r.Stats())
			}
		}
	})
	return func() { close(done); wg.Wait() }
}

func (r *Replayer) statusf(format string, args ...any) {
	r.status.printf("dlq replay: "+format+"\n", args...)
}

// lockedWriter serialises the progress goroutine's and the replay's lines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) printf(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format, args...)
}
