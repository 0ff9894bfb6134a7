package inbox

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/mysql"
	"github.com/go-outbox/outbox/dialects/postgres"
)

// Row states of the inbox table.
const (
	statusDone = "done"
	statusDead = "dead"
)

// MaxIDLen bounds consumer names and event ids (the inbox's primary key).
const MaxIDLen = 191

// store is the SQL of the inbox table for one database.
type store struct {
	d     dialects.Dialect
	table dialects.Table
	q     string // quoted, qualified table name
	pg    bool
}

func newStore(db *gorm.DB, table string) (*store, error) {
	return newStoreFor(db.Dialector.Name(), table)
}

// newStoreFor is newStore for the GORM dialector name driver.
func newStoreFor(driver, table string) (*store, error) {
	t, err := dialects.ParseTable(table)
	if err != nil {
		return nil, fmt.Errorf("%w: Table: %v", ErrInvalidConfig, err)
	}
	s := &store{table: t}
	switch driver {
	case "postgres", "pgx":
		s.d, s.pg = postgres.New(), true
	case "mysql":
		s.d = mysql.New()
	default:
		return nil, fmt.Errorf("%w: database %q is not supported (postgres, mysql)", ErrInvalidConfig, driver)
	}
	s.q = t.Qualified(s.d)
	return s, nil
}

func (s *store) ph(n int) string { return s.d.Placeholder(n) }

func (s *store) migrations() []dialects.Migration {
	n := s.table.Name
	if s.pg {
		return []dialects.Migration{{
			Version: 1,
			Statements: []string{
				`CREATE TABLE IF NOT EXISTS ` + s.q + ` (
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
				`CREATE INDEX IF NOT EXISTS ` + s.d.Quote(n+"_done_idx") + ` ON ` + s.q +
					` (processed_at) WHERE status = 'done'`,
				`CREATE INDEX IF NOT EXISTS ` + s.d.Quote(n+"_dead_idx") + ` ON ` + s.q +
					` (consumer, processed_at) WHERE status = 'dead'`,
			},
		}}
	}
	return []dialects.Migration{{
		Version: 1,
		Statements: []string{
			`CREATE TABLE IF NOT EXISTS ` + s.q + ` (
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
	KEY ` + s.d.Quote(n+"_status_idx") + ` (status, processed_at)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
		},
	}}
}

// claim records the messages of a batch in the inbox as done, skipping
// the ones recorded before, and returns the event ids it recorded.
// ids[i] is the event id of ms[i]; they are distinct.
func (s *store) claim(ctx context.Context, tx gorm.ConnPool, consumer string, ms []*Message, now time.Time) (map[string]bool, error) {
	fresh := make(map[string]bool, len(ms))
	if len(ms) == 0 {
		return fresh, nil
	}
	if s.pg {
		var b strings.Builder
		args := make([]any, 0, 1+4*len(ms)+1)
		args = append(args, consumer, now)
		b.WriteString(`INSERT INTO ` + s.q + ` (consumer, processed_at, event_id, topic, kafka_partition, kafka_offset) VALUES `)
		for i, m := range ms {
			if i > 0 {
				b.WriteString(", ")
			}
			n := len(args)
			fmt.Fprintf(&b, "($1, $2, $%d, $%d, $%d, $%d)", n+1, n+2, n+3, n+4)
			args = append(args, m.EventID, m.Topic, m.Partition, m.Offset)
		}
		b.WriteString(` ON CONFLICT DO NOTHING RETURNING event_id`)
		rows, err := tx.QueryContext(ctx, b.String(), args...)
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
	// MySQL has no RETURNING: read which ids are recorded already, then
	// insert the others. A consumer recording one of them meanwhile (a
	// rebalance) makes the INSERT fail with a duplicate key, and the
	// batch is tried again.
	var b strings.Builder
	args := make([]any, 0, 1+len(ms))
	args = append(args, consumer)
	b.WriteString(`SELECT event_id FROM ` + s.q + ` WHERE consumer = ? AND event_id IN (`)
	for i, m := range ms {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('?')
		args = append(args, m.EventID)
	}
	b.WriteByte(')')
	seen := map[string]bool{}
	rows, err := tx.QueryContext(ctx, b.String(), args...)
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
	b.WriteString(`INSERT INTO ` + s.q + ` (consumer, processed_at, event_id, topic, kafka_partition, kafka_offset) VALUES `)
	n := 0
	for _, m := range ms {
		if seen[m.EventID] {
			continue
		}
		if n > 0 {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?)")
		args = append(args, consumer, now, m.EventID, m.Topic, m.Partition, m.Offset)
		fresh[m.EventID] = true
		n++
	}
	if n == 0 {
		return fresh, nil
	}
	if _, err := tx.ExecContext(ctx, b.String(), args...); err != nil {
		return nil, err
	}
	return fresh, nil
}

// unclaim removes the records of ids (messages whose handler failed, or
// that wait behind one).
func (s *store) unclaim(ctx context.Context, tx gorm.ConnPool, consumer string, ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	var b strings.Builder
	args := make([]any, 0, 1+len(ids))
	args = append(args, consumer)
	b.WriteString(`DELETE FROM ` + s.q + ` WHERE consumer = ` + s.ph(1) + ` AND event_id IN (`)
	for i, id := range ids {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(s.ph(i + 2))
		args = append(args, id)
	}
	b.WriteByte(')')
	_, err := tx.ExecContext(ctx, b.String(), args...)
	return err
}

// park records m as dead, with its content, so that it can be inspected and
// replayed. A record of m that exists already is left as it is.
func (s *store) park(ctx context.Context, db *sql.DB, consumer string, m *Message, attempts int, lastErr string, now time.Time) error {
	h, err := encodeHeaders(m)
	if err != nil {
		return err
	}
	var key any
	if m.Key != nil {
		key = m.Key
	}
	q := `INSERT INTO ` + s.q + ` (consumer, event_id, topic, kafka_partition, kafka_offset, status, processed_at, attempts, last_error, msg_key, payload, headers)
VALUES (` + s.phs(1, 12) + `)`
	if s.pg {
		q += ` ON CONFLICT DO NOTHING`
	} else {
		q += ` ON DUPLICATE KEY UPDATE event_id = event_id`
	}
	_, err = db.ExecContext(ctx, q, consumer, m.EventID, m.Topic, m.Partition, m.Offset, statusDead, now,
		attempts, lastErr, key, m.Value, h)
	return err
}

func (s *store) phs(from, to int) string {
	var b strings.Builder
	for i := from; i <= to; i++ {
		if i > from {
			b.WriteString(", ")
		}
		b.WriteString(s.ph(i))
	}
	return b.String()
}

func encodeHeaders(m *Message) (string, error) {
	h := make(map[string]string, len(m.Headers))
	for _, x := range m.Headers {
		h[x.Key] = string(x.Value)
	}
	b, err := json.Marshal(h)
	return string(b), err
}

// DeadLetter is a message the handler kept failing on, parked in the
// inbox table.
type DeadLetter struct {
	Consumer  string
	EventID   string
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   map[string]string
	Attempts  int
	LastError string
	ParkedAt  time.Time
}

// dead lists the consumer's parked messages, oldest first: up to limit, or
// those of ids when ids is not empty.
func (s *store) dead(ctx context.Context, db *sql.DB, consumer string, limit int, ids ...string) ([]DeadLetter, error) {
	q := `SELECT consumer, event_id, topic, kafka_partition, kafka_offset, msg_key, payload, headers,
	attempts, COALESCE(last_error, ''), processed_at
FROM ` + s.q + ` WHERE status = '` + statusDead + `' AND consumer = ` + s.ph(1)
	args := []any{consumer}
	if len(ids) > 0 {
		q += ` AND event_id IN (` + s.phs(2, len(ids)+1) + `)`
		for _, id := range ids {
			args = append(args, id)
		}
	}
	q += ` ORDER BY processed_at, event_id LIMIT ` + s.ph(len(args)+1)
	args = append(args, limit)
	rows, err := db.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []DeadLetter
	for rows.Next() {
		var (
			dl DeadLetter
			h  []byte
			at dialects.Time
		)
		if err := rows.Scan(&dl.Consumer, &dl.EventID, &dl.Topic, &dl.Partition, &dl.Offset, &dl.Key, &dl.Value, &h,
			&dl.Attempts, &dl.LastError, &at); err != nil {
			return nil, err
		}
		dl.ParkedAt = at.Time
		if len(h) > 0 {
			if err := json.Unmarshal(h, &dl.Headers); err != nil {
				return nil, fmt.Errorf("inbox: headers of dead letter %s: %w", dl.EventID, err)
			}
		}
		out = append(out, dl)
	}
	return out, rows.Err()
}

// revive turns the dead record of id into a done one, in tx.
func (s *store) revive(ctx context.Context, tx gorm.ConnPool, consumer, id string, now time.Time) (bool, error) {
	res, err := tx.ExecContext(ctx, `UPDATE `+s.q+` SET status = '`+statusDone+`', processed_at = `+s.ph(1)+
		`, msg_key = NULL, payload = NULL, headers = NULL WHERE consumer = `+s.ph(2)+` AND event_id = `+s.ph(3)+
		` AND status = '`+statusDead+`'`, now, consumer, id)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

func (s *store) cleanup(ctx context.Context, db *sql.DB, before time.Time, limit int) (int64, error) {
	var q string
	if s.pg {
		q = `DELETE FROM ` + s.q + ` WHERE ctid = ANY (ARRAY(SELECT ctid FROM ` + s.q +
			` WHERE status = 'done' AND processed_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))`
	} else {
		q = `DELETE FROM ` + s.q + ` WHERE status = 'done' AND processed_at < ? LIMIT ?`
	}
	res, err := db.ExecContext(ctx, q, before, limit)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}
