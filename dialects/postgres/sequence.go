package postgres

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/sequence"
)

// Bump implements sequence.Bumper: one upsert of every counter, in the
// order given (sorted by the caller), returning the new values.
func (d Dialect) Bump(ctx context.Context, q dialects.Conn, t dialects.Table, keys []sequence.Key) ([]int64, error) {
	var b strings.Builder
	args := make([]any, 0, 3*len(keys))
	b.WriteString(`INSERT INTO ` + sequence.Table(t).Qualified(d) + ` AS c (topic, msg_key, seq) VALUES `)
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "($%d, $%d, $%d)", 3*i+1, 3*i+2, 3*i+3)
		args = append(args, k.Topic, k.Key, k.N)
	}
	b.WriteString(` ON CONFLICT (topic, msg_key) DO UPDATE SET seq = c.seq + EXCLUDED.seq RETURNING topic, msg_key, seq`)
	rows, err := q.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return nil, err
	}
	return sequence.ScanLast(rows, keys)
}

// SequenceSource implements dialects.Relayer.
func (d Dialect) SequenceSource(ctx context.Context, db *sql.DB, t dialects.Table) (int64, error) {
	return sequence.Source(ctx, db, d, t)
}
