package sink

import "context"

// httpSlots bounds the attempts on the wire at once (Config.MaxConcurrent,
// MAX_IN_FLIGHT): a slot is taken after the attempt's permit and given
// back when the attempt ends. Taken after the permit, a request waiting
// for its workspace's permit holds no slot, so a workspace with a small
// budget (or one whose Limiter gives nothing) never keeps another's
// requests off the wire; the batcher hands out batches per workspace
// (batcher/slots.go), and this bounds what they send together. A permit
// that grew older than permitMaxAge while its slot was waited for is taken
// anew before the request is written (freshen), as after a slow dial. nil:
// no bound.
type httpSlots chan struct{}

func newHTTPSlots(n int) httpSlots {
	if n <= 0 {
		return nil
	}
	return make(httpSlots, n)
}

// take waits for a free slot, or returns ctx.Err().
func (s httpSlots) take(ctx context.Context) error {
	if s == nil {
		return nil
	}
	select {
	case s <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// give frees a slot taken by take.
func (s httpSlots) give() {
	if s != nil {
		<-s
	}
}
