package mysql

import (
	"context"
	"database/sql"
	"strings"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/sequence"
)

// LockKeys implements sequence.Locker: one upsert of the keys' rows in the
// keys table, in the order given. A duplicate key takes the existing row's
// exclusive lock (a primary-key duplicate: the record only, no gap), a new
// key the new row's; either is held until the transaction ends.
func (d Dialect) LockKeys(ctx context.Context, q dialects.Conn, t dialects.Table, keys []sequence.Key) error {
	var b strings.Builder
	args := make([]any, 0, 2*len(keys))
	b.WriteString(`INSERT INTO ` + sequence.Table(t).Qualified(d) + ` (topic, msg_key, seq) VALUES `)
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, 0)")
		args = append(args, k.Topic, k.Key)
	}
	b.WriteString(` ON DUPLICATE KEY UPDATE seq = 0`)
	_, err := q.ExecContext(ctx, b.String(), args...)
	return err
}

// SequenceSource implements dialects.Relayer.
func (d Dialect) SequenceSource(ctx context.Context, db *sql.DB, t dialects.Table) (int64, error) {
	return sequence.Source(ctx, db, d, t)
}
