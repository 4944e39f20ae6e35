package parkio

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/segmentio/kafka-go"
)

// attemptTimeout bounds one request (a produce waits for all in-sync
// replicas within it).
const attemptTimeout = 10 * time.Second

// retriable reports whether a request that failed with err may succeed when
// sent again: a Kafka error that kafka-go calls temporary (leader moving,
// not enough replicas, coordinator loading, ...) or anything that is not a
// Kafka error (a broken connection, a timeout, the transport's metadata not
// knowing the topic yet). Any other Kafka error (authorization failed,
// message too large, invalid record, ...) is permanent.
func retriable(err error) bool {
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke.Temporary()
	}
	return true
}

// newBackOff is the delay between attempts: 100 ms, ×1.5 with jitter, at
// most 5 s, never giving up (MaxElapsedTime 0: only ctx ends the retries).
func newBackOff() *backoff.ExponentialBackOff {
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	b.Reset()
	return b
}

// retry runs op until it succeeds, fails with a permanent error, or ctx
// ends between attempts. op gets ctx with attemptTimeout. A changed error is
// logged once.
func retry(ctx context.Context, log *slog.Logger, what string, op func(context.Context) error) error {
	b := newBackOff()
	last := ""
	for {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := op(actx)
		cancel()
		switch {
		case err == nil:
			if last != "" {
				log.Info("parking topic: "+what+" succeeded after retries", "err", last)
			}
			return nil
		case !retriable(err):
			return err
		case ctx.Err() != nil:
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		}
		if msg := err.Error(); msg != last {
			log.Warn("parking topic: "+what+" failed; retrying", "err", err)
			last = msg
		}
		t := time.NewTimer(b.NextBackOff())
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
		case <-t.C:
		}
	}
}
