package postgres

import (
	"context"
	"database/sql"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/sequence"
)

// LockKeys implements sequence.Locker with transaction-scoped advisory
// locks, one per key (sequence.LockID), taken in the order given: nothing
// is written, and the locks go with the transaction (a transaction pooler
// keeps them on the server connection until the end of the transaction).
func (d Dialect) LockKeys(ctx context.Context, q dialects.Conn, t dialects.Table, keys []sequence.Key) error {
	ids := make([]int64, len(keys))
	for i, k := range keys {
		ids[i] = sequence.LockID(t, k)
	}
	// The ids are locked in the order of keys (the sorted order every
	// writer uses), whatever their numeric order.
	_, err := q.ExecContext(ctx, `SELECT pg_advisory_xact_lock(l) FROM unnest($1::bigint[]) WITH ORDINALITY AS u(l, o) ORDER BY o`, ids)
	return err
}

// SequenceSource implements dialects.Relayer.
func (d Dialect) SequenceSource(ctx context.Context, db *sql.DB, t dialects.Table) (int64, error) {
	return sequence.Source(ctx, db, d, t)
}
