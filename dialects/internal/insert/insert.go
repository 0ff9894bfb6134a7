// Package insert builds the multi-row INSERT of outbox records both
// dialects run.
package insert

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/headers"
	"github.com/go-outbox/outbox/dialects/internal/sequence"
)

// ColumnList lists the outbox columns written at capture, in the order of
// Args.
const ColumnList = "event_id, topic, msg_key, event_type, aggregate_type, aggregate_id, " +
	"payload, headers, shard, available_at, created_at, ack_topic"

// numColumns is the number of columns in ColumnList.
const numColumns = 12

// Dialect is what the statement needs of a dialect.
type Dialect interface {
	// Quote quotes an identifier.
	Quote(ident string) string
	// Placeholder returns the bind variable for the n-th argument.
	Placeholder(n int) string
}

// SQL builds "INSERT INTO table (cols) VALUES (...), (...)" for n rows
// with d's placeholders.
func SQL(d Dialect, table dialects.Table, n int) string {
	var b strings.Builder
	b.Grow(64 + n*numColumns*5)
	b.WriteString("INSERT INTO ")
	b.WriteString(table.Qualified(d))
	b.WriteString(" (")
	b.WriteString(ColumnList)
	b.WriteString(") VALUES ")
	arg := 1
	for r := 0; r < n; r++ {
		if r > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('(')
		for i := 0; i < numColumns; i++ {
			if i > 0 {
				b.WriteString(", ")
			}
			b.WriteString(d.Placeholder(arg))
			arg++
		}
		b.WriteByte(')')
	}
	return b.String()
}

// Args flattens recs into bind arguments in ColumnList order.
func Args(recs []dialects.Record) ([]any, error) {
	args := make([]any, 0, len(recs)*numColumns)
	var he headers.Encoder
	for i := range recs {
		r := &recs[i]
		h, err := he.Encode(r.Headers)
		if err != nil {
			return nil, fmt.Errorf("encode headers of event %s: %w", r.EventID, err)
		}
		var key any
		if r.Key != nil {
			key = r.Key
		}
		var ack any
		if r.AckTopic != "" {
			ack = r.AckTopic
		}
		args = append(args, r.EventID, r.Topic, key, r.EventType, r.AggregateType, r.AggregateID,
			r.Payload, h, r.Shard, r.AvailableAt, r.CreatedAt, ack)
	}
	return args, nil
}

// Chunked writes recs into table on q in INSERTs of at most
// dialects.MaxInsertRows rows, in order, after taking the locks of the
// keys that ask for one with l (dialects.Dialect.Insert).
func Chunked(ctx context.Context, d Dialect, l sequence.Locker, q dialects.Conn, table dialects.Table, recs []dialects.Record) error {
	return sequence.InTx(ctx, q, func(q dialects.Conn) error {
		if keys := sequence.Keys(recs); len(keys) > 0 {
			if err := l.LockKeys(ctx, q, table, keys); err != nil {
				return fmt.Errorf("insert %d outbox rows into %s: lock their keys: %w", len(recs), table, err)
			}
		}
		for len(recs) > 0 {
			n := min(len(recs), dialects.MaxInsertRows)
			args, err := Args(recs[:n])
			if err != nil {
				return err
			}
			if _, err := q.ExecContext(ctx, SQL(d, table, n), args...); err != nil {
				return fmt.Errorf("insert %d outbox rows into %s: %w", n, table, err)
			}
			recs = recs[n:]
		}
		return nil
	})
}
