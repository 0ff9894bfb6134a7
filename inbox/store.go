package inbox

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/pick"
)

// MaxIDLen bounds consumer names and event ids (the inbox's primary key).
const MaxIDLen = 191

// store is the inbox table of one database: the batch's storage calls,
// each a method of the dialect.
type store struct {
	d     dialects.Dialect
	table dialects.Table
}

func newStore(db *gorm.DB, table string) (*store, error) {
	// The pool only tunes the dialect's outbox inserts, which the inbox
	// does not run: without one, the dialect takes its default.
	sqlDB, err := db.DB()
	if err != nil {
		sqlDB = nil
	}
	return newStoreFor(db.Dialector.Name(), sqlDB, table)
}

// newStoreFor is newStore for the GORM dialector (or database/sql driver)
// name driver; sqlDB may be nil.
func newStoreFor(driver string, sqlDB *sql.DB, table string) (*store, error) {
	t, err := dialects.ParseTable(table)
	if err != nil {
		return nil, fmt.Errorf("%w: Table: %v", ErrInvalidConfig, err)
	}
	d, err := pick.For(driver, sqlDB)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidConfig, err)
	}
	return &store{d: d, table: t}, nil
}

func (s *store) migrations() []dialects.Migration { return s.d.InboxMigrations(s.table) }

// claim records the messages of a batch in the inbox as done, skipping
// the ones recorded before, and returns the event ids it recorded. The
// event ids of ms are distinct.
func (s *store) claim(ctx context.Context, tx gorm.ConnPool, consumer string, ms []*Message, now time.Time) (map[string]bool, error) {
	batch := make([]dialects.InboxMessage, len(ms))
	for i, m := range ms {
		batch[i] = dialects.InboxMessage{EventID: m.EventID, Topic: m.Topic, Partition: m.Partition, Offset: m.Offset}
	}
	return s.d.InboxRecord(ctx, tx, dialects.InboxRecordParams{Table: s.table, Consumer: consumer, Messages: batch, Now: now})
}

// unclaim removes the records of ids (messages whose handler failed, or
// that wait behind one).
func (s *store) unclaim(ctx context.Context, tx gorm.ConnPool, consumer string, ids []string) error {
	return s.d.InboxUnrecord(ctx, tx, dialects.InboxUnrecordParams{Table: s.table, Consumer: consumer, EventIDs: ids})
}

// park records m as dead, with its content, so that it can be inspected and
// replayed. A record of m that exists already is left as it is.
func (s *store) park(ctx context.Context, db *sql.DB, consumer string, m *Message, attempts int, lastErr string, now time.Time) error {
	h := make(map[string]string, len(m.Headers))
	for _, x := range m.Headers {
		h[x.Key] = string(x.Value)
	}
	return s.d.InboxPark(ctx, db, s.table, dialects.InboxDeadLetter{
		Consumer: consumer, EventID: m.EventID, Topic: m.Topic, Partition: m.Partition, Offset: m.Offset,
		Key: m.Key, Value: m.Value, Headers: h, Attempts: attempts, LastError: lastErr, ParkedAt: now,
	})
}

// dead lists the consumer's parked messages, oldest first: up to limit, or
// those of ids when ids is not empty.
func (s *store) dead(ctx context.Context, db *sql.DB, consumer string, limit int, ids ...string) ([]DeadLetter, error) {
	rows, err := s.d.InboxDeadLetters(ctx, db, dialects.InboxDeadQuery{Table: s.table, Consumer: consumer, EventIDs: ids, Limit: limit})
	if err != nil {
		return nil, err
	}
	var out []DeadLetter
	for _, r := range rows {
		out = append(out, DeadLetter(r))
	}
	return out, nil
}

// revive turns the dead record of id into a done one, in tx.
func (s *store) revive(ctx context.Context, tx gorm.ConnPool, consumer, id string, now time.Time) (bool, error) {
	return s.d.InboxRevive(ctx, tx, dialects.InboxReviveParams{Table: s.table, Consumer: consumer, EventID: id, Now: now})
}

func (s *store) cleanup(ctx context.Context, db *sql.DB, before time.Time, limit int) (int64, error) {
	return s.d.InboxCleanup(ctx, db, dialects.InboxCleanupParams{Table: s.table, Before: before, Limit: limit})
}
