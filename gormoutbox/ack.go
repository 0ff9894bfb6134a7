package gormoutbox

import (
	"context"
	"errors"
	"fmt"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
)

// Acknowledgements: an event can ask its consumers to answer whether they
// processed it (the "ack" tag setting, or Event.AckTopic). Its outbox row
// then does not end at publication: it waits for the answer, which moves
// it to processed (SUCCESS), or sends it again (FAILED) until
// the process attempts run out, when it is failed and the AckHooks hear of
// it. Package ack has the consumer's Reply and the producer's Tracker
// that calls Acknowledge.
//
// Row states, as outboxctl and the metrics show them: pending (not yet
// published), published (sent; waiting for an answer if one was asked),
// processed, failed, dead (not deliverable to Kafka).

// Headers of events that ask for acknowledgements.
const (
	// HeaderAckTopic names the topic consumers send acknowledgements to.
	HeaderAckTopic = "ack-topic"
	// HeaderProcessAttempt numbers the sends of the event for processing:
	// "1", then "2" for the first re-send after a FAILED answer, and so on.
	HeaderProcessAttempt = "process-attempt"
)

// AckStatus is a consumer's answer.
type AckStatus string

// Answers.
const (
	AckSuccess AckStatus = "SUCCESS"
	AckFailed  AckStatus = "FAILED"
)

// AckEventType is the event type of acknowledgements.
const AckEventType = "Acknowledged"

// Ack is an acknowledgement, the JSON payload of the events consumers send
// back.
type Ack struct {
	// EventID is the event answered.
	EventID string `json:"event_id"`
	// Status is SUCCESS or FAILED.
	Status AckStatus `json:"status"`
	// Attempt is the process attempt answered (the event's
	// "process-attempt" header).
	Attempt int `json:"attempt"`
	// Consumer names who answers (its consumer group).
	Consumer string `json:"consumer,omitempty"`
	// Reason says why processing failed.
	Reason string `json:"reason,omitempty"`
}

// AckOutcome is what Acknowledge did with an answer.
type AckOutcome = dialects.AckOutcome

// Outcomes of Acknowledge.
const (
	// AckIgnored: no row waits for this answer (unknown event, no answer
	// asked, already processed or failed, or an answer to an earlier
	// attempt). AckResult.Why says which.
	AckIgnored = dialects.AckIgnored
	// AckProcessed: the row is processed.
	AckProcessed = dialects.AckProcessed
	// AckResent: the row is pending again, for the next process attempt.
	AckResent = dialects.AckResent
	// AckGaveUp: the last process attempt failed; the row is failed.
	AckGaveUp = dialects.AckGaveUp
)

// AckResult is what Acknowledge did, and the event it concerned.
type AckResult struct {
	Ack     Ack
	Outcome AckOutcome
	// Why an answer was ignored.
	Why string
	// The event's row (zero when the event is unknown).
	ID                         int64
	Topic, Key, EventType      string
	AggregateType, AggregateID string
	// Attempts is the event's process attempt after the answer (the
	// attempt now on its way for AckResent).
	Attempts int
}

// AckHook is implemented by hooks that want to hear of acknowledgements
// (hooks.Slog, hooks.OTel). OnAck runs after the transaction that applied
// the answer commits, once per answer; an AckGaveUp result is the
// notification that an event could not be processed.
type AckHook interface {
	OnAck(ctx context.Context, r AckResult)
}

// Acknowledge applies a consumer's answer to the event's outbox row, in tx
// (a transaction, normally the inbox's, which deduplicates the answers):
// SUCCESS marks it processed; FAILED sends it again with the next
// "process-attempt", or marks it failed when attempt maxAttempts failed.
// Answers no row waits for are ignored (AckResult.Why); an unknown event is
// ErrUnknownEvent.
func Acknowledge(tx *gorm.DB, a Ack, maxAttempts int) (AckResult, error) {
	r := AckResult{Ack: a}
	p, err := from(tx)
	if err != nil {
		return r, err
	}
	if !inTransaction(tx.Statement.ConnPool) {
		return r, fmt.Errorf("%w: call Acknowledge with the *gorm.DB of a transaction", ErrNoTransaction)
	}
	switch {
	case a.EventID == "" || !uuidRE.MatchString(a.EventID):
		return r, fmt.Errorf("%w: event id %q is not a UUID", ErrInvalidAck, a.EventID)
	case a.Status != AckSuccess && a.Status != AckFailed:
		return r, fmt.Errorf("%w: event %s: status %q (want %s or %s)", ErrInvalidAck, a.EventID, a.Status, AckSuccess, AckFailed)
	case a.Attempt < 1:
		return r, fmt.Errorf("%w: event %s: attempt %d", ErrInvalidAck, a.EventID, a.Attempt)
	case maxAttempts < 1:
		return r, fmt.Errorf("%w: maxAttempts %d", ErrInvalidAck, maxAttempts)
	}
	ctx := tx.Statement.Context
	out, row, err := p.dialect.Acknowledge(ctx, tx.Statement.ConnPool, p.table, dialects.Ack{
		EventID: a.EventID, Success: a.Status == AckSuccess, Attempt: a.Attempt, Reason: a.Reason,
		MaxAttempts: maxAttempts, Now: p.cfg.Now().UTC(),
	})
	if errors.Is(err, dialects.ErrNoRow) {
		return r, fmt.Errorf("%w: %s", ErrUnknownEvent, a.EventID)
	}
	if err != nil {
		return r, fmt.Errorf("gormoutbox: acknowledge %s: %w", a.EventID, err)
	}
	r.Outcome, r.Why, r.ID, r.Topic, r.Key, r.EventType = out, row.Why, row.ID, row.Topic, string(row.Key), row.EventType
	r.AggregateType, r.AggregateID, r.Attempts = row.AggregateType, row.AggregateID, row.Attempts
	if out == AckResent {
		p.wakeLater()
	}
	return r, nil
}

// Unanswered is an event that asked for an answer and has none yet.
type Unanswered = dialects.Unanswered

// ListUnanswered returns up to limit events of db's outbox (the plugin's
// table) that were published before before and still wait for an answer,
// oldest first. ack.Tracker.Expire treats them as failed attempts.
func ListUnanswered(ctx context.Context, db *gorm.DB, before time.Time, limit int) ([]Unanswered, error) {
	p, err := from(db)
	if err != nil {
		return nil, err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("gormoutbox: unanswered events: %w", err)
	}
	if limit <= 0 {
		limit = 100
	}
	return p.dialect.Unanswered(ctx, sqlDB, dialects.UnansweredParams{Table: p.table, Before: before, Limit: limit})
}
