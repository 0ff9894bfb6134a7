package gormoutbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
)

// AdminConfig configures an Admin. The zero value is ready to use.
type AdminConfig struct {
	// Table is the outbox table. Default: that of the plugin registered
	// on the *gorm.DB given to NewAdmin, else "outbox".
	Table string

	// Dialect overrides the dialect: default the plugin's, else the one
	// picked from the GORM dialector.
	Dialect dialects.Dialect

	// CleanupBatch is the most rows one cleanup statement deletes.
	// Default 1000.
	CleanupBatch int

	// Now returns the current time (Replay and Resend make rows due at
	// Now, Cleanup counts the retention back from it); for tests. Default
	// time.Now.
	Now func() time.Time
}

// Admin operates an outbox table: counts per state, dead letters and
// failed rows, replay, re-send and cleanup. It needs no Publisher (it never
// publishes; a Relay does), so an operator's tool or an HTTP handler can
// hold one. A Relay has the same methods, which run the same code.
// An Admin is safe for concurrent use.
type Admin struct {
	db           *sql.DB
	d            dialects.Dialect
	table        dialects.Table
	now          func() time.Time
	cleanupBatch int
}

// NewAdmin returns an Admin of the outbox table of db. db needs no plugin
// registered, but when one is, its table and dialect are the defaults, as
// for NewRelay.
func NewAdmin(db *gorm.DB, cfg AdminConfig) (*Admin, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: NewAdmin: nil *gorm.DB", ErrInvalidConfig)
	}
	if p, _ := from(db); p != nil {
		if cfg.Table == "" {
			cfg.Table = p.Table()
		}
		if cfg.Dialect == nil {
			cfg.Dialect = p.Dialect()
		}
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.CleanupBatch == 0 {
		cfg.CleanupBatch = DefaultCleanupBatch
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var errs []error
	table, err := dialects.ParseTable(cfg.Table)
	if err != nil {
		errs = append(errs, fmt.Errorf("%w: AdminConfig.Table: %w", ErrInvalidConfig, err))
	}
	if cfg.CleanupBatch < 1 {
		errs = append(errs, fmt.Errorf("%w: AdminConfig.CleanupBatch = %d, want at least 1", ErrInvalidConfig, cfg.CleanupBatch))
	}
	if cfg.Dialect == nil {
		d, err := dialectFor(db)
		if err != nil {
			errs = append(errs, err)
		}
		cfg.Dialect = d
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("gormoutbox: NewAdmin: %w", err)
	}
	return newAdmin(sqlDB, cfg.Dialect, table, cfg.Now, cfg.CleanupBatch), nil
}

func newAdmin(db *sql.DB, d dialects.Dialect, table dialects.Table, now func() time.Time, cleanupBatch int) *Admin {
	return &Admin{db: db, d: d, table: table, now: now, cleanupBatch: cleanupBatch}
}

// Table returns the outbox table the Admin operates, as configured
// ("outbox", "schema.outbox").
func (a *Admin) Table() string { return a.table.String() }

// Replay puts dead-lettered rows back in the queue (attempts reset, due
// now) and returns how many it put back. Rows that are not dead are left
// alone. A replayed row may reach the topic after later rows of its key,
// which went on while it was dead.
func (a *Admin) Replay(ctx context.Context, ids ...int64) (int64, error) {
	n, err := a.d.Replay(ctx, a.db, a.table, a.now(), ids)
	if err != nil {
		return 0, fmt.Errorf("gormoutbox: %w", err)
	}
	return n, nil
}

// Failed lists rows whose last process attempt a consumer answered FAILED
// (see Acknowledge), in id order, with their process attempts and last
// error; q selects them as for DeadLetters.
func (a *Admin) Failed(ctx context.Context, q DeadLetterQuery) ([]Row, error) {
	rows, err := a.d.FailedRows(ctx, a.db, a.table, q)
	if err != nil {
		return nil, fmt.Errorf("gormoutbox: %w", err)
	}
	return rows, nil
}

// Resend puts failed rows back in the queue for one more process attempt
// (the next "process-attempt"; a FAILED answer to it fails the row again at
// once when the tracker's MaxAttempts is spent), due now. Use it once the
// consumer's problem is fixed. It returns how many rows it put back; ids
// that are not failed rows are left alone.
func (a *Admin) Resend(ctx context.Context, ids ...int64) (int64, error) {
	n, err := a.d.Resend(ctx, a.db, dialects.ResendParams{Table: a.table, Now: a.now(), IDs: ids})
	if err != nil {
		return 0, fmt.Errorf("gormoutbox: %w", err)
	}
	return n, nil
}

// DeadLetterQuery selects dead-lettered rows.
type DeadLetterQuery = dialects.DeadQuery

// DeadLetters lists dead-lettered rows in id order, with their attempts and
// last error.
func (a *Admin) DeadLetters(ctx context.Context, q DeadLetterQuery) ([]Row, error) {
	rows, err := a.d.DeadLetters(ctx, a.db, a.table, q)
	if err != nil {
		return nil, fmt.Errorf("gormoutbox: %w", err)
	}
	return rows, nil
}

// Cleanup deletes rows published more than retention ago, CleanupBatch rows
// per statement so that no statement holds locks for long, until none is
// left or ctx is done. It returns how many rows it deleted. Rows waiting
// for an acknowledgement are kept; pending and dead rows are never
// deleted.
func (a *Admin) Cleanup(ctx context.Context, retention time.Duration) (int64, error) {
	before := a.now().Add(-retention)
	var total int64
	for ctx.Err() == nil {
		n, err := a.d.Cleanup(ctx, a.db, a.table, before, a.cleanupBatch)
		total += n
		if err != nil {
			return total, fmt.Errorf("gormoutbox: %w", err)
		}
		if n < int64(a.cleanupBatch) {
			break
		}
	}
	return total, ctx.Err()
}

// Stats counts the rows of the outbox table per state.
type Stats = dialects.Stats

// Stats reports pending, dead, awaiting and failed rows and the age of the
// oldest pending.
func (a *Admin) Stats(ctx context.Context) (Stats, error) {
	return a.d.Stats(ctx, a.db, a.table)
}

// TopicStats reports Stats per topic (pending, dead, awaiting, failed,
// oldest pending).
func (a *Admin) TopicStats(ctx context.Context) (map[string]Stats, error) {
	return a.d.TopicStats(ctx, a.db, a.table)
}

// CountStates is TopicStats with the published rows that wait for nothing
// and the processed rows counted too (Stats.Published, Stats.Processed):
// every state of every row. It reads all published rows, so it is for
// operators (outboxctl status -all), not for metrics.
func (a *Admin) CountStates(ctx context.Context) (map[string]Stats, error) {
	stats, err := a.TopicStats(ctx)
	if err != nil {
		return nil, err
	}
	if err := a.d.CountDone(ctx, a.db, a.table, stats); err != nil {
		return nil, err
	}
	return stats, nil
}

// RowState is a state of an outbox row: StatePending, StateDead,
// StateAwaiting or StateFailed.
type RowState = dialects.RowState

// Row states, for InState.
const (
	// StatePending rows are neither published nor dead.
	StatePending = dialects.StatePending
	// StateDead rows were dead-lettered (see DeadLetters, Replay).
	StateDead = dialects.StateDead
	// StateAwaiting rows are published and wait for a consumer's answer.
	StateAwaiting = dialects.StateAwaiting
	// StateFailed rows were answered FAILED on their last process attempt
	// (see Failed, Resend).
	StateFailed = dialects.StateFailed
)

// InState returns those of ids that are rows in state s, in no particular
// order: before a Replay or Resend by id, it tells which ids are not dead
// letters or failed rows.
func (a *Admin) InState(ctx context.Context, s RowState, ids ...int64) ([]int64, error) {
	found, err := a.d.InState(ctx, a.db, dialects.InStateParams{Table: a.table, State: s, IDs: ids})
	if err != nil {
		return nil, fmt.Errorf("gormoutbox: %w", err)
	}
	return found, nil
}

// Replay puts dead-lettered rows back in the queue (attempts reset, due
// now) and returns how many it put back. Rows that are not dead are left
// alone. A replayed row may reach the topic after later rows of its key,
// which went on while it was dead. It is Admin.Replay.
func (r *Relay) Replay(ctx context.Context, ids ...int64) (int64, error) {
	return r.admin.Replay(ctx, ids...)
}

// Failed lists rows whose last process attempt a consumer answered FAILED
// (see Acknowledge), in id order, with their process attempts and last
// error; q selects them as for DeadLetters. It is Admin.Failed.
func (r *Relay) Failed(ctx context.Context, q DeadLetterQuery) ([]Row, error) {
	return r.admin.Failed(ctx, q)
}

// Resend puts failed rows back in the queue for one more process attempt
// (the next "process-attempt"; a FAILED answer to it fails the row again at
// once when the tracker's MaxAttempts is spent), due now. Use it once the
// consumer's problem is fixed. It returns how many rows it put back; ids
// that are not failed rows are left alone. It is Admin.Resend.
func (r *Relay) Resend(ctx context.Context, ids ...int64) (int64, error) {
	return r.admin.Resend(ctx, ids...)
}

// DeadLetters lists dead-lettered rows in id order, with their attempts and
// last error. It is Admin.DeadLetters.
func (r *Relay) DeadLetters(ctx context.Context, q DeadLetterQuery) ([]Row, error) {
	return r.admin.DeadLetters(ctx, q)
}

// Cleanup deletes rows published more than retention ago, CleanupBatch rows
// per statement so that no statement holds locks for long, until none is
// left or ctx is done. It returns how many rows it deleted. It is
// Admin.Cleanup.
func (r *Relay) Cleanup(ctx context.Context, retention time.Duration) (int64, error) {
	return r.admin.Cleanup(ctx, retention)
}

// Stats reports pending and dead rows and the age of the oldest pending.
// It is Admin.Stats, except that with SkipDeadKeys no row counts as
// Blocked (the relay lets them pass their dead row).
func (r *Relay) Stats(ctx context.Context) (Stats, error) {
	s, err := r.admin.Stats(ctx)
	if r.cfg.SkipDeadKeys {
		s.Blocked = 0
	}
	return s, err
}

// TopicStats reports Stats per topic (pending, dead, oldest pending). It
// is Admin.TopicStats, except that with SkipDeadKeys no row counts as
// Blocked.
func (r *Relay) TopicStats(ctx context.Context) (map[string]Stats, error) {
	ts, err := r.admin.TopicStats(ctx)
	return r.policy(ts), err
}

// CountStates is TopicStats with the published rows that wait for nothing
// and the processed rows counted too (Stats.Published, Stats.Processed):
// every state of every row. It reads all published rows, so it is for
// operators (outboxctl status -all), not for metrics. It is
// Admin.CountStates.
func (r *Relay) CountStates(ctx context.Context) (map[string]Stats, error) {
	ts, err := r.admin.CountStates(ctx)
	return r.policy(ts), err
}

// policy applies the relay's dead-row policy to counts per topic: with
// SkipDeadKeys no row is blocked.
func (r *Relay) policy(ts map[string]Stats) map[string]Stats {
	if r.cfg.SkipDeadKeys {
		for k, s := range ts {
			s.Blocked = 0
			ts[k] = s
		}
	}
	return ts
}
