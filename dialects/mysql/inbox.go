package mysql

import (
	"context"
	"strings"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/inboxtext"
	"github.com/go-outbox/outbox/dialects/internal/rowscan"
)

// InboxMigrations implements dialects.Inboxer. One index on (status,
// processed_at) serves cleanup and the listing of dead letters.
func (d Dialect) InboxMigrations(t dialects.Table) []dialects.Migration {
	return []dialects.Migration{{
		Version: 1,
		Statements: []string{
			`CREATE TABLE IF NOT EXISTS ` + t.Qualified(d) + ` (
	consumer        VARCHAR(191) NOT NULL,
	event_id        VARCHAR(191) NOT NULL,
	topic           VARCHAR(249) NOT NULL,
	kafka_partition INT NOT NULL,
	kafka_offset    BIGINT NOT NULL,
	status          VARCHAR(8) NOT NULL DEFAULT 'done',
	processed_at    DATETIME(6) NOT NULL,
	attempts        INT NOT NULL DEFAULT 0,
	last_error      TEXT NULL,
	msg_key         LONGBLOB NULL,
	payload         LONGBLOB NULL,
	headers         JSON NULL,
	PRIMARY KEY (consumer, event_id),
	KEY ` + d.Quote(t.Name+"_status_idx") + ` (status, processed_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
		},
	}}
}

// InboxRecord implements dialects.Inboxer. MySQL has no RETURNING: it
// reads which ids are recorded already, then inserts the others. A
// consumer recording one of them meanwhile (a rebalance) makes the INSERT
// fail with a duplicate key, and the caller tries the batch again.
func (d Dialect) InboxRecord(ctx context.Context, q dialects.Conn, p dialects.InboxRecordParams) (map[string]bool, error) {
	fresh := make(map[string]bool, len(p.Messages))
	if len(p.Messages) == 0 {
		return fresh, nil
	}
	tq := p.Table.Qualified(d)
	var b strings.Builder
	args := make([]any, 0, 1+len(p.Messages))
	args = append(args, p.Consumer)
	b.WriteString(`SELECT event_id FROM ` + tq + ` WHERE consumer = ? AND event_id IN (`)
	for i, m := range p.Messages {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('?')
		args = append(args, m.EventID)
	}
	b.WriteByte(')')
	seen := map[string]bool{}
	rows, err := q.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, err
		}
		seen[id] = true
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	b.Reset()
	args = args[:0]
	b.WriteString(`INSERT INTO ` + tq + ` (consumer, processed_at, event_id, topic, kafka_partition, kafka_offset) VALUES `)
	n := 0
	for _, m := range p.Messages {
		if seen[m.EventID] {
			continue
		}
		if n > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?)")
		args = append(args, p.Consumer, p.Now, m.EventID, m.Topic, m.Partition, m.Offset)
		fresh[m.EventID] = true
		n++
	}
	if n == 0 {
		return fresh, nil
	}
	if _, err := q.ExecContext(ctx, b.String(), args...); err != nil {
		return nil, err
	}
	return fresh, nil
}

// InboxUnrecord implements dialects.Inboxer.
func (d Dialect) InboxUnrecord(ctx context.Context, q dialects.Execer, p dialects.InboxUnrecordParams) error {
	if len(p.EventIDs) == 0 {
		return nil
	}
	_, err := q.ExecContext(ctx, `DELETE FROM `+p.Table.Qualified(d)+` WHERE consumer = ? AND event_id IN (`+
		inboxPlaceholders(len(p.EventIDs))+`)`, inboxArgs(p.Consumer, p.EventIDs)...)
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
VALUES (`+inboxPlaceholders(12)+`) ON DUPLICATE KEY UPDATE event_id = event_id`, args...)
	return err
}

// InboxDeadLetters implements dialects.Inboxer.
func (d Dialect) InboxDeadLetters(ctx context.Context, q dialects.Querier, p dialects.InboxDeadQuery) ([]dialects.InboxDeadLetter, error) {
	s := `SELECT ` + rowscan.InboxColumns + `
FROM ` + p.Table.Qualified(d) + ` WHERE status = 'dead' AND consumer = ?`
	args := inboxArgs(p.Consumer, p.EventIDs)
	if len(p.EventIDs) > 0 {
		s += ` AND event_id IN (` + inboxPlaceholders(len(p.EventIDs)) + `)`
	}
	s += ` ORDER BY processed_at, event_id LIMIT ?`
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
	res, err := q.ExecContext(ctx, `UPDATE `+p.Table.Qualified(d)+` SET status = 'done', processed_at = ?`+
		`, msg_key = NULL, payload = NULL, headers = NULL WHERE consumer = ? AND event_id = ? AND status = 'dead'`,
		p.Now, p.Consumer, p.EventID)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// InboxCleanup implements dialects.Inboxer.
func (d Dialect) InboxCleanup(ctx context.Context, q dialects.Execer, p dialects.InboxCleanupParams) (int64, error) {
	res, err := q.ExecContext(ctx, `DELETE FROM `+p.Table.Qualified(d)+
		` WHERE status = 'done' AND processed_at < ? LIMIT ?`, p.Before, p.Limit)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// Savepoint implements dialects.Inboxer: with release, RELEASE and
// SAVEPOINT are two round trips (the driver sends one statement per
// Exec).
func (Dialect) Savepoint(ctx context.Context, q dialects.Execer, name string, release bool) error {
	if release {
		if _, err := q.ExecContext(ctx, "RELEASE SAVEPOINT "+name); err != nil {
			return err
		}
	}
	_, err := q.ExecContext(ctx, "SAVEPOINT "+name)
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

// FoldsRelease implements dialects.Inboxer: false.
func (Dialect) FoldsRelease() bool { return false }

// inboxPlaceholders returns n comma-separated "?".
func inboxPlaceholders(n int) string {
	if n <= 0 {
		return ""
	}
	return strings.Repeat("?, ", n-1) + "?"
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
