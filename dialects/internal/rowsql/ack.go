package rowsql

import (
	"context"
	"database/sql"
	"fmt"

	"github.com/go-outbox/outbox/dialects"
)

// ackState is the part of a row Acknowledge decides on.
type ackState struct {
	row         dialects.AckRow
	ackTopic    sql.NullString
	published   bool
	processed   bool
	failed      bool
	procAttempt int
}

// ackSelect reads the row of an event FOR UPDATE.
func ackSelect(ctx context.Context, q dialects.Querier, d Dialect, t dialects.Table, eventID string) (ackState, error) {
	var st ackState
	var key []byte
	rows, err := q.QueryContext(ctx, `SELECT id, topic, msg_key, event_type, aggregate_type, aggregate_id, ack_topic,
	process_attempts, published_at IS NOT NULL, processed_at IS NOT NULL, failed_at IS NOT NULL
FROM `+t.Qualified(d)+` WHERE event_id = `+d.Placeholder(1)+` FOR UPDATE`, eventID)
	if err != nil {
		return st, err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return st, err
		}
		return st, dialects.ErrNoRow
	}
	var isPub, isProc, isFailed bool
	if err := rows.Scan(&st.row.ID, &st.row.Topic, &key, &st.row.EventType, &st.row.AggregateType, &st.row.AggregateID,
		&st.ackTopic, &st.procAttempt, &isPub, &isProc, &isFailed); err != nil {
		return st, err
	}
	st.row.Key = key
	st.published, st.processed, st.failed = isPub, isProc, isFailed
	st.row.Attempts = st.procAttempt
	return st, rows.Err()
}

// decide returns what acknowledgement a does to a row in state st.
func decide(a dialects.Ack, st ackState) (dialects.AckOutcome, string) {
	switch {
	case !st.ackTopic.Valid:
		return dialects.AckIgnored, "the event asked for no acknowledgement"
	case st.processed:
		return dialects.AckIgnored, "already processed"
	case st.failed:
		return dialects.AckIgnored, "already failed"
	case a.Attempt != st.procAttempt:
		return dialects.AckIgnored, fmt.Sprintf("answer to attempt %d; the row is at attempt %d", a.Attempt, st.procAttempt)
	case a.Success:
		return dialects.AckProcessed, ""
	case a.Attempt >= a.MaxAttempts:
		return dialects.AckGaveUp, ""
	}
	return dialects.AckResent, ""
}

// resendSet is the SET list that puts a row back to pending for its next
// process attempt. The headers come first: MySQL assigns left to right
// (PostgreSQL reads the old row throughout), so both compute them from the
// attempt before the increment.
func resendSet(d Dialect) string {
	return `headers = ` + d.ProcessAttemptHeaders("process_attempts + 1") +
		`, process_attempts = process_attempts + 1, published_at = NULL, attempts = 0`
}

// Acknowledge implements Admin.Acknowledge: it applies a consumer's answer
// to the row of its event, on q (a transaction): the row is read FOR
// UPDATE and its state decides what to do. An event not in the table is
// dialects.ErrNoRow.
func Acknowledge(ctx context.Context, q dialects.Conn, d Dialect, t dialects.Table, a dialects.Ack) (dialects.AckOutcome, dialects.AckRow, error) {
	st, err := ackSelect(ctx, q, d, t, a.EventID)
	if err != nil {
		return dialects.AckIgnored, st.row, err
	}
	out, why := decide(a, st)
	st.row.Why = why
	tq, p := t.Qualified(d), d.Placeholder
	switch out {
	case dialects.AckProcessed:
		_, err = q.ExecContext(ctx, `UPDATE `+tq+` SET processed_at = `+p(1)+` WHERE id = `+p(2), a.Now.UTC(), st.row.ID)
	case dialects.AckGaveUp:
		_, err = q.ExecContext(ctx, `UPDATE `+tq+` SET failed_at = `+p(1)+`, last_error = `+p(2)+` WHERE id = `+p(3),
			a.Now.UTC(), a.Reason, st.row.ID)
	case dialects.AckResent:
		st.row.Attempts = a.Attempt + 1 // the row is locked at attempt a.Attempt
		_, err = q.ExecContext(ctx, `UPDATE `+tq+` SET `+resendSet(d)+`, available_at = `+p(1)+`, last_error = `+p(2)+
			` WHERE id = `+p(3), a.Now.UTC(), a.Reason, st.row.ID)
	}
	return out, st.row, err
}

// Resend implements Admin.Resend: it puts failed rows (whose last process
// attempt was answered FAILED) back in the queue for one more process
// attempt, due at p.Now, and returns how many it put back.
func Resend(ctx context.Context, db *sql.DB, d Dialect, p dialects.ResendParams) (int64, error) {
	t, now, ids := p.Table, p.Now, p.IDs
	if len(ids) == 0 {
		return 0, dialects.ErrNoIDs
	}
	res, err := db.ExecContext(ctx, `UPDATE `+t.Qualified(d)+` SET `+resendSet(d)+`, failed_at = NULL, available_at = `+
		d.Placeholder(1)+` WHERE id IN (`+IDList(ids)+`) AND failed_at IS NOT NULL`, now.UTC())
	if err != nil {
		return 0, fmt.Errorf("resend on %s: %w", t, err)
	}
	return res.RowsAffected()
}
