package scheduler

import (
	"context"
	"errors"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/ack"
	"github.com/go-outbox/outbox/inbox"
)

// InboxCleanupJob returns a job that deletes the inbox records of messages
// c handled more than retention ago (see inbox.Consumer.Cleanup). Keep
// records longer than a message can be redelivered.
//
//	s.Add("inbox-cleanup", "0 0 * * * *", scheduler.InboxCleanupJob(c, 7*24*time.Hour))
func InboxCleanupJob(c *inbox.Consumer, retention time.Duration) JobFunc {
	return func(ctx context.Context) error {
		_, err := c.Cleanup(ctx, time.Now().Add(-retention), 0)
		if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil
		}
		return err
	}
}

// AckTimeoutJob returns a job that treats the events of db's outbox that
// waited longer than the tracker's Timeout for an answer as failed
// attempts (see ack.Tracker.Expire).
//
//	s.Add("ack-timeout", "@every 1m", scheduler.AckTimeoutJob(tracker, db))
func AckTimeoutJob(t *ack.Tracker, db *gorm.DB) JobFunc {
	return func(ctx context.Context) error {
		_, err := t.Expire(ctx, db)
		if err != nil && ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return nil
		}
		return err
	}
}
