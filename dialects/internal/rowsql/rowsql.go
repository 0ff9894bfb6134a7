// Package rowsql holds the SQL over outbox rows that both dialects accept
// as written: the state predicates, the counts per state, the failed and
// unanswered rows, the acknowledgements and re-sends, and which rows are
// in a state.
package rowsql

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/rowscan"
)

// Predicates of the row states.
const (
	PendingWhere  = `published_at IS NULL AND dead_at IS NULL`
	DeadWhere     = `dead_at IS NOT NULL`
	AwaitingWhere = `processed_at IS NULL AND failed_at IS NULL AND ack_topic IS NOT NULL AND published_at IS NOT NULL`
	FailedWhere   = `failed_at IS NOT NULL`
)

// Dialect is what the statements need of a dialect.
type Dialect interface {
	// Quote quotes an identifier.
	Quote(ident string) string
	// Placeholder returns the bind variable for the n-th argument.
	Placeholder(n int) string
	// ProcessAttemptHeaders returns SQL for the headers column with its
	// "process-attempt" header set to the text of the integer SQL
	// expression expr (see Acknowledge and Resend).
	ProcessAttemptHeaders(expr string) string
}

// IDList renders ids as a comma-separated list of integers for an IN (...)
// clause (ids are integers, so this is injection-safe and avoids a bind
// variable per id).
func IDList(ids []int64) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	return b.String()
}

// Stats counts the pending and dead rows of t (Relayer.Stats).
func Stats(ctx context.Context, db *sql.DB, d Dialect, t dialects.Table) (dialects.Stats, error) {
	q := t.Qualified(d)
	var (
		s      dialects.Stats
		oldest rowscan.Time
	)
	err := db.QueryRowContext(ctx, `SELECT
	(SELECT COUNT(*) FROM `+q+` WHERE `+PendingWhere+`),
	(SELECT COUNT(*) FROM `+q+` WHERE `+DeadWhere+`),
	(SELECT MIN(created_at) FROM `+q+` WHERE `+PendingWhere+`),
	(SELECT COUNT(*) FROM `+q+` WHERE `+AwaitingWhere+`),
	(SELECT COUNT(*) FROM `+q+` WHERE `+FailedWhere+`),
	(SELECT COUNT(*) FROM `+blockedFrom(q)+`)`).
		Scan(&s.Pending, &s.Dead, &oldest, &s.Awaiting, &s.Failed, &s.Blocked)
	if err != nil {
		return s, fmt.Errorf("stats of %s: %w", t, err)
	}
	s.OldestPending = oldest.Time
	return s, nil
}

// blockedFrom is the FROM and WHERE of the pending rows behind a dead row
// of their topic and key (Stats.Blocked): driven by the dead rows (few,
// through their index), then a range of each dead key's pending rows.
func blockedFrom(q string) string {
	return q + ` o JOIN (SELECT topic, msg_key, MIN(id) AS id FROM ` + q + ` WHERE ` + DeadWhere +
		` AND msg_key IS NOT NULL GROUP BY topic, msg_key) d
	ON o.topic = d.topic AND o.msg_key = d.msg_key AND o.id > d.id
	WHERE o.published_at IS NULL AND o.dead_at IS NULL`
}

// TopicStats implements Admin.TopicStats: Stats per topic. It runs one
// GROUP BY per state, each with the exact predicate of its index
// (pending, dead, awaiting, failed), so that published rows that wait for
// nothing are never read.
func TopicStats(ctx context.Context, db *sql.DB, d Dialect, t dialects.Table) (map[string]dialects.Stats, error) {
	q := t.Qualified(d)
	out := map[string]dialects.Stats{}
	queries := []string{
		`SELECT topic, COUNT(*), MIN(created_at) FROM ` + q + ` WHERE ` + PendingWhere + ` GROUP BY topic`,
		`SELECT topic, COUNT(*), NULL FROM ` + q + ` WHERE ` + DeadWhere + ` GROUP BY topic`,
		`SELECT topic, COUNT(*), NULL FROM ` + q + ` WHERE ` + AwaitingWhere + ` GROUP BY topic`,
		`SELECT topic, COUNT(*), NULL FROM ` + q + ` WHERE ` + FailedWhere + ` GROUP BY topic`,
		`SELECT o.topic, COUNT(*), NULL FROM ` + blockedFrom(q) + ` GROUP BY o.topic`,
	}
	for qi, query := range queries {
		rows, err := db.QueryContext(ctx, query)
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", t, err)
		}
		for rows.Next() {
			var (
				topic  string
				n      int64
				oldest rowscan.Time
			)
			if err := rows.Scan(&topic, &n, &oldest); err != nil {
				rows.Close()
				return nil, fmt.Errorf("stats of %s: %w", t, err)
			}
			s := out[topic]
			switch qi {
			case 0:
				s.Pending, s.OldestPending = n, oldest.Time
			case 1:
				s.Dead = n
			case 2:
				s.Awaiting = n
			case 3:
				s.Failed = n
			case 4:
				s.Blocked = n
			}
			out[topic] = s
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", t, err)
		}
	}
	return out, nil
}

// CountDone implements Admin.CountDone: it adds to stats, per topic, the
// published rows that wait for nothing and the processed ones. It reads
// every published row: for an operator's question, not for metrics
// collected every few seconds.
func CountDone(ctx context.Context, db *sql.DB, d Dialect, t dialects.Table, stats map[string]dialects.Stats) error {
	rows, err := db.QueryContext(ctx, `SELECT topic,
	SUM(CASE WHEN processed_at IS NOT NULL THEN 1 ELSE 0 END),
	SUM(CASE WHEN ack_topic IS NULL THEN 1 ELSE 0 END)
FROM `+t.Qualified(d)+` WHERE published_at IS NOT NULL GROUP BY topic`)
	if err != nil {
		return fmt.Errorf("count published rows of %s: %w", t, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			topic          string
			processed, pub int64
		)
		if err := rows.Scan(&topic, &processed, &pub); err != nil {
			return fmt.Errorf("count published rows of %s: %w", t, err)
		}
		s := stats[topic]
		s.Processed, s.Published = processed, pub
		stats[topic] = s
	}
	return rows.Err()
}

// Failed implements Admin.FailedRows: the rows whose last process attempt
// failed, in id order.
func Failed(ctx context.Context, db *sql.DB, d Dialect, t dialects.Table, q dialects.DeadQuery) ([]dialects.Row, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	rows, err := db.QueryContext(ctx, `SELECT `+rowscan.Columns+` FROM `+t.Qualified(d)+
		` WHERE `+FailedWhere+` AND id > `+d.Placeholder(1)+` AND (`+d.Placeholder(2)+` = '' OR topic = `+d.Placeholder(3)+
		`) ORDER BY id LIMIT `+d.Placeholder(4), q.AfterID, q.Topic, q.Topic, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("failed rows of %s: %w", t, err)
	}
	return rowscan.Rows(rows, q.Limit)
}

// Unanswered implements Admin.Unanswered: up to p.Limit events published
// before p.Before that wait for an answer, oldest first (it reads the rows
// of the awaiting index only).
func Unanswered(ctx context.Context, db *sql.DB, d Dialect, p dialects.UnansweredParams) ([]dialects.Unanswered, error) {
	t, before, limit := p.Table, p.Before, p.Limit
	rows, err := db.QueryContext(ctx, `SELECT event_id, topic, process_attempts, published_at FROM `+t.Qualified(d)+
		` WHERE `+AwaitingWhere+` AND published_at < `+d.Placeholder(1)+` ORDER BY published_at, id LIMIT `+d.Placeholder(2),
		before.UTC(), limit)
	if err != nil {
		return nil, fmt.Errorf("unanswered events of %s: %w", t, err)
	}
	defer rows.Close()
	var out []dialects.Unanswered
	for rows.Next() {
		var (
			u  dialects.Unanswered
			at rowscan.Time
		)
		if err := rows.Scan(&u.EventID, &u.Topic, &u.Attempt, &at); err != nil {
			return nil, fmt.Errorf("unanswered events of %s: %w", t, err)
		}
		u.PublishedAt = at.Time
		out = append(out, u)
	}
	return out, rows.Err()
}

// Where returns the SQL predicate of state s (dialects.ErrUnknownState for
// another).
func Where(s dialects.RowState) (string, error) {
	switch s {
	case dialects.StatePending:
		return PendingWhere, nil
	case dialects.StateDead:
		return DeadWhere, nil
	case dialects.StateAwaiting:
		return AwaitingWhere, nil
	case dialects.StateFailed:
		return FailedWhere, nil
	}
	return "", fmt.Errorf("%w %q (want %s, %s, %s or %s)", dialects.ErrUnknownState, string(s),
		dialects.StatePending, dialects.StateDead, dialects.StateAwaiting, dialects.StateFailed)
}

// inStateChunk bounds the ids of one InState query.
const inStateChunk = 1000

// InState implements Admin.InState, in queries of at most 1000 ids.
func InState(ctx context.Context, db *sql.DB, d Dialect, p dialects.InStateParams) ([]int64, error) {
	where, err := Where(p.State)
	if err != nil {
		return nil, err
	}
	var found []int64
	for chunk := range slices.Chunk(p.IDs, inStateChunk) {
		rows, err := db.QueryContext(ctx, `SELECT id FROM `+p.Table.Qualified(d)+
			` WHERE `+where+` AND id IN (`+IDList(chunk)+`)`)
		if err != nil {
			return nil, fmt.Errorf("look up ids in %s: %w", p.Table, err)
		}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, fmt.Errorf("look up ids in %s: %w", p.Table, err)
			}
			found = append(found, id)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("look up ids in %s: %w", p.Table, err)
		}
	}
	return found, nil
}
