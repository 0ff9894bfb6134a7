package dialects

import (
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

// Unanswered is an event that asked for an answer and has none yet.
type Unanswered struct {
	EventID     string
	Topic       string
	Attempt     int
	PublishedAt time.Time
}
