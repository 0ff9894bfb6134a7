package scheduler

import (
	"context"
	"errors"
	"time"

	"github.com/go-outbox/outbox/gormoutbox"
)

// RelayJob returns a job that runs one relay pass per tick: r.Drain claims
// and publishes until the backlog is empty or the relay's Budget is spent.
// When the scheduler stops, the batch in flight is finished (published
// and marked) and the pass ends without error.
//
//	s.Add("outbox-relay", "*/1 * * * * *", scheduler.RelayJob(relay))
func RelayJob(r *gormoutbox.Relay) JobFunc {
	return func(ctx context.Context) error {
		_, err := r.Drain(ctx)
		if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil // stopped between batches
		}
		return err
	}
}

// CleanupJob returns a job that deletes the rows published more than
// retention ago, in bounded batches (see gormoutbox.Relay.Cleanup).
//
//	s.Add("outbox-cleanup", "0 */10 * * * *", scheduler.CleanupJob(relay, 24*time.Hour))
func CleanupJob(r *gormoutbox.Relay, retention time.Duration) JobFunc {
	return func(ctx context.Context) error {
		_, err := r.Cleanup(ctx, retention)
		if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil
		}
		return err
	}
}
