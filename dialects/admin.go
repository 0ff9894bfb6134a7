package dialects

import (
	"context"
	"database/sql"
	"time"
)

// Admin is the side of a dialect that reads and changes outbox rows
// outside the relay's passes: the counts per state an operator asks for,
// the failed rows and their re-send, the acknowledgements of consumers, and
// which rows are in a given state. (Stats, DeadLetters, Replay and Cleanup
// are the Relayer's.)
type Admin interface {
	// TopicStats is Stats per topic (pending, dead, awaiting, failed, the
	// oldest pending). It reads the rows of those states only, through
	// their indexes.
	TopicStats(ctx context.Context, db *sql.DB, t Table) (map[string]Stats, error)
	// CountDone adds to stats, per topic, the published rows that wait for
	// nothing and the processed ones (Stats.Published, Stats.Processed).
	// It reads every published row: for an operator, not for metrics.
	CountDone(ctx context.Context, db *sql.DB, t Table, stats map[string]Stats) error
	// FailedRows lists, in id order, the rows whose last process attempt
	// a consumer answered FAILED; q selects them as for DeadLetters.
	FailedRows(ctx context.Context, db *sql.DB, t Table, q DeadQuery) ([]Row, error)
	// Resend puts failed rows back in the queue for one more process
	// attempt and returns how many it put back (ErrNoIDs when p.IDs is
	// empty).
	Resend(ctx context.Context, db *sql.DB, p ResendParams) (int64, error)
	// Unanswered lists events that asked for an answer and have none yet,
	// published before p.Before, oldest first.
	Unanswered(ctx context.Context, db *sql.DB, p UnansweredParams) ([]Unanswered, error)
	// Acknowledge applies a consumer's answer to the row of its event, on
	// q (a transaction): the row is read FOR UPDATE and its state says what
	// to do. An event not in the table is ErrNoRow.
	Acknowledge(ctx context.Context, q Conn, t Table, a Ack) (AckOutcome, AckRow, error)
	// InState returns those of p.IDs that are rows of t in state p.State,
	// in no particular order.
	InState(ctx context.Context, db *sql.DB, p InStateParams) ([]int64, error)
}

// ResendParams are the parameters of Admin.Resend.
type ResendParams struct {
	// Table is the outbox table.
	Table Table
	// Now is when the rows are due again.
	Now time.Time
	// IDs are the rows to put back; those that are not failed are left
	// alone.
	IDs []int64
}

// UnansweredParams are the parameters of Admin.Unanswered.
type UnansweredParams struct {
	// Table is the outbox table.
	Table Table
	// Before bounds the publication time of the events listed.
	Before time.Time
	// Limit bounds the events listed.
	Limit int
}

// RowState is a state of an outbox row, as operators see it.
type RowState string

// Row states InState can look for.
const (
	// StatePending rows are neither published nor dead.
	StatePending RowState = "pending"
	// StateDead rows were dead-lettered by the relay.
	StateDead RowState = "dead"
	// StateAwaiting rows are published and wait for a consumer's answer.
	StateAwaiting RowState = "awaiting_ack"
	// StateFailed rows were answered FAILED on their last process attempt.
	StateFailed RowState = "failed"
)

// InStateParams are the parameters of Admin.InState.
type InStateParams struct {
	// Table is the outbox table.
	Table Table
	// State is the state looked for.
	State RowState
	// IDs are the row ids asked about.
	IDs []int64
}
