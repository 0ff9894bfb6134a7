package mysql

import (
	"context"
	"database/sql"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/rowsql"
)

var _ dialects.Admin = Dialect{}

// TopicStats implements dialects.Admin.
func (d Dialect) TopicStats(ctx context.Context, db *sql.DB, t dialects.Table) (map[string]dialects.Stats, error) {
	return rowsql.TopicStats(ctx, db, d, t)
}

// CountDone implements dialects.Admin.
func (d Dialect) CountDone(ctx context.Context, db *sql.DB, t dialects.Table, stats map[string]dialects.Stats) error {
	return rowsql.CountDone(ctx, db, d, t, stats)
}

// FailedRows implements dialects.Admin.
func (d Dialect) FailedRows(ctx context.Context, db *sql.DB, t dialects.Table, q dialects.DeadQuery) ([]dialects.Row, error) {
	return rowsql.Failed(ctx, db, d, t, q)
}

// Resend implements dialects.Admin.
func (d Dialect) Resend(ctx context.Context, db *sql.DB, p dialects.ResendParams) (int64, error) {
	return rowsql.Resend(ctx, db, d, p)
}

// Unanswered implements dialects.Admin.
func (d Dialect) Unanswered(ctx context.Context, db *sql.DB, p dialects.UnansweredParams) ([]dialects.Unanswered, error) {
	return rowsql.Unanswered(ctx, db, d, p)
}

// Acknowledge implements dialects.Admin.
func (d Dialect) Acknowledge(ctx context.Context, q dialects.Conn, t dialects.Table, a dialects.Ack) (dialects.AckOutcome, dialects.AckRow, error) {
	return rowsql.Acknowledge(ctx, q, d, t, a)
}

// InState implements dialects.Admin.
func (d Dialect) InState(ctx context.Context, db *sql.DB, p dialects.InStateParams) ([]int64, error) {
	return rowsql.InState(ctx, db, d, p)
}
