package postgres

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/inboxtext"
	"github.com/go-outbox/outbox/dialects/internal/rowscan"
)

// InboxMigrations implements dialects.Inboxer. Partial indexes cover the
// done records (cleanup) and the dead ones (listing) apart.
func (d Dialect) InboxMigrations(t dialects.Table) []dialects.Migration {
	q, n := t.Qualified(d), t.Name
	return []dialects.Migration{{
		Version: 1,
		Statements: []string{
			`CREATE TABLE IF NOT EXISTS ` + q + ` (
	consumer        TEXT        NOT NULL,
	event_id        TEXT        NOT NULL,
	topic           TEXT        NOT NULL,
	kafka_partition INTEGER     NOT NULL,
	kafka_offset    BIGINT      NOT NULL,
	status          TEXT        NOT NULL DEFAULT 'done',
	processed_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
	attempts        INTEGER     NOT NULL DEFAULT 0,
	last_error      TEXT,
	msg_key         BYTEA,
	payload         BYTEA,
	headers         JSONB,
	PRIMARY KEY (consumer, event_id)
)`,
			`CREATE INDEX IF NOT EXISTS ` + d.Quote(n+"_done_idx") + ` ON ` + q +
				` (processed_at) WHERE status = 'done'`,
			`CREATE INDEX IF NOT EXISTS ` + d.Quote(n+"_dead_idx") + ` ON ` + q +
				` (consumer, processed_at) WHERE status = 'dead'`,
		},
	}}
}

// InboxRecord implements dialects.Inboxer: one INSERT … ON CONFLICT DO
// NOTHING RETURNING the event ids it inserted.
func (d Dialect) InboxRecord(ctx context.Context, q dialects.Conn, p dialects.InboxRecordParams) (map[string]bool, error) {
	fresh := make(map[string]bool, len(p.Messages))
	if len(p.Messages) == 0 {
		return fresh, nil
	}
	var b strings.Builder
	args := make([]any, 0, 2+4*len(p.Messages))
	args = append(args, p.Consumer, p.Now)
	b.WriteString(`INSERT INTO ` + p.Table.Qualified(d) + ` (consumer, processed_at, event_id, topic, kafka_partition, kafka_offset) VALUES `)
	for i, m := range p.Messages {
		if i > 0 {
			b.WriteString(", ")
		}
		n := len(args)
		fmt.Fprintf(&b, "($1, $2, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4)
		args = append(args, m.EventID, m.Topic, m.Partition, m.Offset)
	}
	b.WriteString(` ON CONFLICT DO NOTHING RETURNING event_id`)
	rows, err := q.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		fresh[id] = true
	}
	return fresh, rows.Err()
}

// InboxUnrecord implements dialects.Inboxer.
func (d Dialect) InboxUnrecord(ctx context.Context, q dialects.Execer, p dialects.InboxUnrecordParams) error {
	if len(p.EventIDs) == 0 {
		return nil
	}
	_, err := q.ExecContext(ctx, `DELETE FROM `+p.Table.Qualified(d)+` WHERE consumer = $1 AND event_id IN (`+
		inboxPlaceholders(2, len(p.EventIDs)+1)+`)`, inboxArgs(p.Consumer, p.EventIDs)...)
	return err
}

// InboxPark implements dialects.Inboxer. Headers whose name or value is
// not valid UTF-8 or holds a NUL are stored in base64 (InboxDeadLetters
// gives them back as they were); the last error is made valid text.
func (d Dialect) InboxPark(ctx context.Context, q dialects.Execer, t dialects.Table, dl dialects.InboxDeadLetter) error {
	args, err := inboxtext.ParkArgs(dl)
	if err != nil {
		return err
	}
	_, err = q.ExecContext(ctx, `INSERT INTO `+t.Qualified(d)+` (`+inboxtext.ParkColumns+`)
VALUES (`+inboxPlaceholders(1, 12)+`) ON CONFLICT DO NOTHING`, args...)
	return err
}

// InboxDeadLetters implements dialects.Inboxer.
func (d Dialect) InboxDeadLetters(ctx context.Context, q dialects.Querier, p dialects.InboxDeadQuery) ([]dialects.InboxDeadLetter, error) {
	s := `SELECT ` + rowscan.InboxColumns + `
FROM ` + p.Table.Qualified(d) + ` WHERE status = 'dead' AND consumer = $1`
	args := inboxArgs(p.Consumer, p.EventIDs)
	if len(p.EventIDs) > 0 {
		s += ` AND event_id IN (` + inboxPlaceholders(2, len(p.EventIDs)+1) + `)`
	}
	s += ` ORDER BY processed_at, event_id LIMIT ` + d.Placeholder(len(args)+1)
	args = append(args, p.Limit)
	rows, err := q.QueryContext(ctx, s, args...)
	if err != nil {
		return nil, err
	}
	out, err := rowscan.InboxDeadLetters(rows)
	for i := range out {
		out[i].Headers = inboxtext.DecodeHeaders(out[i].Headers)
	}
	return out, err
}

// InboxRevive implements dialects.Inboxer.
func (d Dialect) InboxRevive(ctx context.Context, q dialects.Execer, p dialects.InboxReviveParams) (bool, error) {
	res, err := q.ExecContext(ctx, `UPDATE `+p.Table.Qualified(d)+` SET status = 'done', processed_at = $1`+
		`, msg_key = NULL, payload = NULL, headers = NULL WHERE consumer = $2 AND event_id = $3 AND status = 'dead'`,
		p.Now, p.Consumer, p.EventID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// InboxCleanup implements dialects.Inboxer. PostgreSQL's DELETE has no
// LIMIT: the rows are picked by ctid, skipping those locked.
func (d Dialect) InboxCleanup(ctx context.Context, q dialects.Execer, p dialects.InboxCleanupParams) (int64, error) {
	tq := p.Table.Qualified(d)
	res, err := q.ExecContext(ctx, `DELETE FROM `+tq+` WHERE ctid = ANY (ARRAY(SELECT ctid FROM `+tq+
		` WHERE status = 'done' AND processed_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))`, p.Before, p.Limit)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Savepoint implements dialects.Inboxer: with release, RELEASE and
// SAVEPOINT go as one statement text (PostgreSQL runs several statements
// in one simple-protocol Exec without arguments).
func (Dialect) Savepoint(ctx context.Context, q dialects.Execer, name string, release bool) error {
	stmt := "SAVEPOINT " + name
	if release {
		stmt = "RELEASE SAVEPOINT " + name + "; " + stmt
	}
	_, err := q.ExecContext(ctx, stmt)
	return err
}

// RollbackToSavepoint implements dialects.Inboxer.
func (Dialect) RollbackToSavepoint(ctx context.Context, q dialects.Execer, name string) error {
	_, err := q.ExecContext(ctx, "ROLLBACK TO SAVEPOINT "+name)
	return err
}

// ReleaseSavepoint implements dialects.Inboxer.
func (Dialect) ReleaseSavepoint(ctx context.Context, q dialects.Execer, name string) error {
	_, err := q.ExecContext(ctx, "RELEASE SAVEPOINT "+name)
	return err
}

// FoldsRelease implements dialects.Inboxer: true.
func (Dialect) FoldsRelease() bool { return true }

// inboxPlaceholders returns "$from, …, $to".
func inboxPlaceholders(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		if i > from {
			b.WriteString(", ")
		}
		b.WriteByte('$')
		b.WriteString(strconv.Itoa(i))
	}
	return b.String()
}

// inboxArgs returns consumer followed by ids, as bind arguments.
func inboxArgs(consumer string, ids []string) []any {
	args := make([]any, 0, 2+len(ids))
	args = append(args, consumer)
	for _, id := range ids {
		args = append(args, id)
	}
	return args
}
