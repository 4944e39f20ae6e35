package rig

import "context"

// Run is a function running in the background, such as an in-process
// worker's app.Run. Its methods are safe for concurrent use.
type Run struct {
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// Start runs fn in a goroutine with a child of ctx, which [Run.Stop]
// cancels.
func Start(ctx context.Context, fn func(context.Context) error) *Run {
	ctx, cancel := context.WithCancel(ctx)
	r := &Run{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		r.err = fn(ctx)
	}()
	return r
}

// Done is closed once fn has returned.
func (r *Run) Done() <-chan struct{} { return r.done }

// Cancel cancels fn's context and returns at once.
func (r *Run) Cancel() { r.cancel() }

// Stop cancels fn's context, waits for fn to return and returns its error.
// It may be called more than once.
func (r *Run) Stop() error {
	r.cancel()
	<-r.done
	return r.err
}
