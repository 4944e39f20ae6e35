package rig

import (
	"context"
	"errors"
	"fmt"

	"github.com/cohortsync/cohortsync-worker/internal/harness/kafkaadmin"
)

// ErrStopped is returned by [WaitNoLag] when the consumer stopped first.
var ErrStopped = errors.New("the consumer stopped before it caught up")

// WaitNoLag waits until group has committed the end of every partition of
// topic (admin's GroupLag is 0), polling as [Poll] does. A failed lag query
// is retried: brokers answer some (a coordinator loading) for seconds. It
// returns ErrStopped if stopped closes first (nil never does), and when ctx
// ends an error wrapping ctx.Err() with the last lag or query error seen.
func WaitNoLag(ctx context.Context, admin *kafkaadmin.Admin, topic, group string, stopped <-chan struct{}) error {
	var last error
	err := Poll(ctx, func() (bool, error) {
		select {
		case <-stopped:
			return false, ErrStopped
		default:
		}
		lag, err := admin.GroupLag(ctx, topic, group)
		switch {
		case err != nil:
			last = err
		case lag > 0:
			last = fmt.Errorf("lag %d", lag)
		}
		return err == nil && lag == 0, nil
	})
	if err != nil && ctx.Err() != nil {
		return fmt.Errorf("group %s did not catch up on %s (last: %v): %w", group, topic, last, ctx.Err())
	}
	return err
}
