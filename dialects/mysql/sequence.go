package mysql

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/sequence"
)

// Bump implements sequence.Bumper. One counter (a one-row capture, a
// replayed key) is one statement: the upsert hands its new value back
// through LAST_INSERT_ID(expr), which the server returns as the
// statement's insert id. More are upserted in one statement (in the
// order given, sorted by the caller) and read back with a plain read,
// which sees the transaction's own writes and takes no lock.
func (d Dialect) Bump(ctx context.Context, q dialects.Conn, t dialects.Table, keys []sequence.Key) ([]int64, error) {
	s := sequence.Table(t).Qualified(d)
	if len(keys) == 1 {
		k := keys[0]
		res, err := q.ExecContext(ctx, `INSERT INTO `+s+` (topic, msg_key, seq) VALUES (?, ?, LAST_INSERT_ID(?))
ON DUPLICATE KEY UPDATE seq = LAST_INSERT_ID(seq + VALUES(seq))`, k.Topic, k.Key, k.N)
		if err != nil {
			return nil, err
		}
		v, err := res.LastInsertId()
		if err != nil {
			return nil, err
		}
		if v < k.N {
			return nil, fmt.Errorf("counter of topic %q key %q: the server returned %d after adding %d", k.Topic, k.Key, v, k.N)
		}
		return []int64{v}, nil
	}
	var b strings.Builder
	args := make([]any, 0, 3*len(keys))
	b.WriteString(`INSERT INTO ` + s + ` (topic, msg_key, seq) VALUES `)
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?)")
		args = append(args, k.Topic, k.Key, k.N)
	}
	b.WriteString(` ON DUPLICATE KEY UPDATE seq = seq + VALUES(seq)`)
	if _, err := q.ExecContext(ctx, b.String(), args...); err != nil {
		return nil, err
	}
	b.Reset()
	args = args[:0]
	b.WriteString(`SELECT topic, msg_key, seq FROM ` + s + ` WHERE (topic, msg_key) IN (`)
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?)")
		args = append(args, k.Topic, k.Key)
	}
	b.WriteString(")")
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
