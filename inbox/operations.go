package inbox

import (
	"context"
	"fmt"
	"slices"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"gorm.io/gorm"
)

// DeadLetter is a message the handler kept failing on, parked in the
// inbox table.
type DeadLetter struct {
	Consumer  string
	EventID   string
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   map[string]string
	Attempts  int
	LastError string
	ParkedAt  time.Time
}

// DeadLetters lists up to limit messages parked by this consumer's group,
// oldest first.
func (c *Consumer) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	if limit <= 0 {
		limit = 100
	}
	sqlDB, err := c.db.DB()
	if err != nil {
		return nil, err
	}
	out, err := c.st.dead(ctx, sqlDB, c.cfg.GroupID, limit)
	if err != nil {
		return nil, fmt.Errorf("inbox: dead letters: %w", err)
	}
	return out, nil
}

// Replay runs the handler again on parked messages, each in its own
// transaction that also marks it done. It stops at the first handler
// failure (the message stays parked) and returns how many it handled; ids
// that are not parked messages of this group are skipped.
func (c *Consumer) Replay(ctx context.Context, eventIDs ...string) (int, error) {
	if len(eventIDs) == 0 {
		return 0, nil
	}
	sqlDB, err := c.db.DB()
	if err != nil {
		return 0, err
	}
	var dead []DeadLetter
	for chunk := range slices.Chunk(eventIDs, 500) {
		d, err := c.st.dead(ctx, sqlDB, c.cfg.GroupID, len(chunk), chunk...)
		if err != nil {
			return 0, fmt.Errorf("inbox: replay: %w", err)
		}
		dead = append(dead, d...)
	}
	byID := make(map[string]*DeadLetter, len(dead))
	for i := range dead {
		byID[dead[i].EventID] = &dead[i]
	}
	n := 0
	for _, id := range eventIDs {
		dl := byID[id]
		if dl == nil {
			continue
		}
		m := &Message{EventID: dl.EventID, Attempt: dl.Attempts + 1, Consumer: c.cfg.GroupID, Message: kafkago.Message{
			Topic: dl.Topic, Partition: dl.Partition, Offset: dl.Offset, Key: dl.Key, Value: dl.Value}}
		for k, v := range dl.Headers {
			m.Headers = append(m.Headers, kafkago.Header{Key: k, Value: []byte(v)})
		}
		var sp *savepointPool
		err := c.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			ok, err := c.st.revive(ctx, rawTx(tx.Statement.ConnPool), c.cfg.GroupID, id, c.cfg.Now().UTC())
			if err != nil || !ok {
				return err
			}
			sp = newSavepointPool(tx.Statement.ConnPool, c.st.d, false)
			htx := tx.Session(&gorm.Session{NewDB: true, Context: ctx})
			htx.Statement.ConnPool = sp
			if err := c.call(ctx, htx, m); err != nil {
				return err
			}
			return sp.keep(ctx)
		})
		if err == nil && sp != nil {
			sp.runCommitted()
		}
		if err != nil {
			return n, fmt.Errorf("inbox: replay %s: %w", id, err)
		}
		n++
	}
	return n, nil
}

// Cleanup deletes the records of messages handled before before, limit
// rows per statement (default 1,000) so that no statement holds locks for
// long, until none is left or ctx ends; it returns how many it deleted.
// Keep records longer than a message can be redelivered (the topic's
// retention, or how far back offsets may be reset): a message whose record
// is gone is handled again. Parked messages are kept.
func (c *Consumer) Cleanup(ctx context.Context, before time.Time, limit int) (int64, error) {
	if limit <= 0 {
		limit = 1000
	}
	sqlDB, err := c.db.DB()
	if err != nil {
		return 0, err
	}
	var total int64
	for ctx.Err() == nil {
		n, err := c.st.cleanup(ctx, sqlDB, before.UTC(), limit)
		total += n
		if err != nil {
			return total, fmt.Errorf("inbox: cleanup: %w", err)
		}
		if n < int64(limit) {
			break
		}
	}
	return total, ctx.Err()
}
