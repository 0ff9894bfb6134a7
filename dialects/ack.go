package dialects

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Ack is a consumer's answer about one event.
type Ack struct {
	// EventID is the event answered.
	EventID string
	// Success tells processed (true) from failed (false).
	Success bool
	// Attempt is the process attempt answered (the event's
	// "process-attempt" header); answers to an earlier attempt than the
	// row's are stale and ignored.
	Attempt int
	// Reason is kept in last_error for failures.
	Reason string
	// MaxAttempts bounds the process attempts: a failure of attempt
	// MaxAttempts gives up (the row is marked failed).
	MaxAttempts int
	// Now stamps processed_at / failed_at / available_at.
	Now time.Time
}

// AckOutcome is what Acknowledge did.
type AckOutcome int

// Outcomes of Acknowledge.
const (
	// AckIgnored: no row awaits this answer (unknown event, no
	// acknowledgement asked, already processed or failed, or a stale
	// attempt).
	AckIgnored AckOutcome = iota
	// AckProcessed: the row is processed.
	AckProcessed
	// AckResent: the row is pending again, for attempt Attempt+1.
	AckResent
	// AckGaveUp: the last attempt failed; the row is failed.
	AckGaveUp
)

func (o AckOutcome) String() string {
	switch o {
	case AckProcessed:
		return "processed"
	case AckResent:
		return "resent"
	case AckGaveUp:
		return "gave_up"
	}
	return "ignored"
}

// AckRow describes the row an acknowledgement was applied to.
type AckRow struct {
	ID            int64
	Topic         string
	Key           []byte
	EventType     string
	AggregateType string
	AggregateID   string
	// Attempts is the row's process attempt after the acknowledgement.
	Attempts int
	// Why tells why an acknowledgement was ignored.
	Why string
}

// ErrNoRow is returned by Acknowledge when the event is not in the table.
var ErrNoRow = errors.New("no outbox row with this event id")

// AckState is the part of a row Acknowledge decides on.
type AckState struct {
	Row         AckRow
	AckTopic    sql.NullString
	Published   bool
	Processed   bool
	Failed      bool
	ProcAttempt int
}

// AckSelect reads the row of an event FOR UPDATE (both dialects).
func AckSelect(ctx context.Context, q Querier, d interface {
	Quote(string) string
	Placeholder(int) string
}, t Table, eventID string) (AckState, error) {
	var st AckState
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
		return st, ErrNoRow
	}
	var isPub, isProc, isFailed bool
	if err := rows.Scan(&st.Row.ID, &st.Row.Topic, &key, &st.Row.EventType, &st.Row.AggregateType, &st.Row.AggregateID,
		&st.AckTopic, &st.ProcAttempt, &isPub, &isProc, &isFailed); err != nil {
		return st, err
	}
	st.Row.Key = key
	st.Published, st.Processed, st.Failed = isPub, isProc, isFailed
	st.Row.Attempts = st.ProcAttempt
	return st, rows.Err()
}

// Decide returns what an acknowledgement does to a row in state st.
func (a Ack) Decide(st AckState) (AckOutcome, string) {
	switch {
	case !st.AckTopic.Valid:
		return AckIgnored, "the event asked for no acknowledgement"
	case st.Processed:
		return AckIgnored, "already processed"
	case st.Failed:
		return AckIgnored, "already failed"
	case a.Attempt != st.ProcAttempt:
		return AckIgnored, fmt.Sprintf("answer to attempt %d; the row is at attempt %d", a.Attempt, st.ProcAttempt)
	case a.Success:
		return AckProcessed, ""
	case a.Attempt >= a.MaxAttempts:
		return AckGaveUp, ""
	}
	return AckResent, ""
}

// Unanswered is an event that asked for an answer and has none yet.
type Unanswered struct {
	EventID     string
	Topic       string
	Attempt     int
	PublishedAt time.Time
}

// QueryUnanswered implements Admin.Unanswered for both dialects: up to
// p.Limit events published before p.Before that wait for an answer,
// oldest first (SQL both dialects accept; it reads the rows of the
// awaiting index only).
func QueryUnanswered(ctx context.Context, db *sql.DB, d interface {
	Quote(string) string
	Placeholder(int) string
}, p UnansweredParams) ([]Unanswered, error) {
	t, before, limit := p.Table, p.Before, p.Limit
	rows, err := db.QueryContext(ctx, `SELECT event_id, topic, process_attempts, published_at FROM `+t.Qualified(d)+
		` WHERE `+AwaitingWhere+` AND published_at < `+d.Placeholder(1)+` ORDER BY published_at, id LIMIT `+d.Placeholder(2),
		before.UTC(), limit)
	if err != nil {
		return nil, fmt.Errorf("unanswered events of %s: %w", t, err)
	}
	defer rows.Close()
	var out []Unanswered
	for rows.Next() {
		var (
			u  Unanswered
			at Time
		)
		if err := rows.Scan(&u.EventID, &u.Topic, &u.Attempt, &at); err != nil {
			return nil, fmt.Errorf("unanswered events of %s: %w", t, err)
		}
		u.PublishedAt = at.Time
		out = append(out, u)
	}
	return out, rows.Err()
}

// resendSet is the SET list that puts a row back to pending for its next
// process attempt. The headers come first: MySQL assigns left to right
// (PostgreSQL reads the old row throughout), so both compute them from the
// attempt before the increment.
func resendSet(d Dialect) string {
	return `headers = ` + d.ProcessAttemptHeaders("process_attempts + 1") +
		`, process_attempts = process_attempts + 1, published_at = NULL, attempts = 0`
}

// Acknowledge implements Admin.Acknowledge for both dialects: it applies
// a consumer's answer to the row of its event, on q (a transaction): the
// row is read FOR UPDATE and a.Decide says what to do. An event not in the
// table is ErrNoRow.
func Acknowledge(ctx context.Context, q Conn, d Dialect, t Table, a Ack) (AckOutcome, AckRow, error) {
	st, err := AckSelect(ctx, q, d, t, a.EventID)
	if err != nil {
		return AckIgnored, st.Row, err
	}
	out, why := a.Decide(st)
	st.Row.Why = why
	tq, p := t.Qualified(d), d.Placeholder
	switch out {
	case AckProcessed:
		_, err = q.ExecContext(ctx, `UPDATE `+tq+` SET processed_at = `+p(1)+` WHERE id = `+p(2), a.Now.UTC(), st.Row.ID)
	case AckGaveUp:
		_, err = q.ExecContext(ctx, `UPDATE `+tq+` SET failed_at = `+p(1)+`, last_error = `+p(2)+` WHERE id = `+p(3),
			a.Now.UTC(), a.Reason, st.Row.ID)
	case AckResent:
		st.Row.Attempts = a.Attempt + 1 // the row is locked at attempt a.Attempt
		_, err = q.ExecContext(ctx, `UPDATE `+tq+` SET `+resendSet(d)+`, available_at = `+p(1)+`, last_error = `+p(2)+
			` WHERE id = `+p(3), a.Now.UTC(), a.Reason, st.Row.ID)
	}
	return out, st.Row, err
}

// Resend implements Admin.Resend for both dialects: it puts failed rows
// (whose last process attempt was answered FAILED) back in the queue for
// one more process attempt, due at p.Now, and returns how many it put
// back.
func Resend(ctx context.Context, db *sql.DB, d Dialect, p ResendParams) (int64, error) {
	t, now, ids := p.Table, p.Now, p.IDs
	if len(ids) == 0 {
		return 0, ErrNoIDs
	}
	res, err := db.ExecContext(ctx, `UPDATE `+t.Qualified(d)+` SET `+resendSet(d)+`, failed_at = NULL, available_at = `+
		d.Placeholder(1)+` WHERE id IN (`+IDList(ids)+`) AND failed_at IS NOT NULL`, now.UTC())
	if err != nil {
		return 0, fmt.Errorf("resend on %s: %w", t, err)
	}
	return res.RowsAffected()
}
