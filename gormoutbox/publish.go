package gormoutbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
)

// Event is a domain event of your own, written with Publish. Use it for
// business events that span several tables or that no single row change
// expresses ("OrderPlaced", "StockReserved").
type Event struct {
	// ID is the event id consumers deduplicate on. Optional: a UUIDv7 is
	// generated when empty. When set it must be a UUID.
	ID string
	// Topic is the Kafka topic. Required.
	Topic string
	// Key is the Kafka message key; events with the same key reach Kafka
	// in outbox id order, numbered by x-sequence (HeaderSequence). Empty
	// means no key (no order, no number, spread over partitions). Publish
	// locks the key (until the transaction ends) before the event takes
	// its id, so events of one key from concurrent transactions take
	// their ids in commit order and are published in it: the later
	// transaction waits for the earlier to end.
	Key string
	// Type names the event, e.g. "OrderPlaced". Required.
	Type string
	// AggregateType and AggregateID identify the entity the event is about.
	// Optional.
	AggregateType string
	AggregateID   string
	// Payload is the message value: []byte and json.RawMessage are sent as
	// they are, a string as its bytes, anything else encoded as JSON.
	Payload any
	// ContentType is sent as the "content-type" header. Default
	// "application/json" for JSON-encoded payloads and json.RawMessage,
	// "application/octet-stream" for []byte and string.
	ContentType string
	// Headers are extra Kafka headers.
	Headers map[string]string
	// AckTopic, when set, asks consumers to acknowledge the event on this
	// topic (see Acknowledge): the row then waits after publication for
	// an answer.
	AckTopic string
	// NotBefore, when later than the write, delays the event: the relay
	// publishes it no earlier (by the relay's clock). Later events of the
	// same key wait for it, so the key's order is kept. Zero (or a time
	// already past) means at once.
	NotBefore time.Time
}

var uuidRE = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)

// Publish writes events to the outbox in tx, the transaction of the
// business writes they belong to, so that they are committed (and later
// sent) if and only if the transaction commits.
//
// tx must be a transaction (db.Transaction's argument or db.Begin()'s
// result): outside one, Publish returns ErrNoTransaction and writes
// nothing, since an event written apart from its business writes is the
// dual write the outbox exists to prevent. Every event is checked before
// any is written; an invalid one fails the call with ErrInvalidEvent,
// naming it by its position, and one whose payload is over
// Config.MaxPayloadBytes with a *PayloadTooLargeError (ErrPayloadTooLarge).
func Publish(tx *gorm.DB, events ...Event) error {
	p, err := from(tx)
	if err != nil {
		return err
	}
	if len(events) == 0 {
		return nil
	}
	if tx.Error != nil {
		return fmt.Errorf("gormoutbox: Publish on a failed statement: %w", tx.Error)
	}
	if !inTransaction(tx.Statement.ConnPool) {
		return fmt.Errorf("%w: call Publish with the *gorm.DB of a transaction (db.Transaction(func(tx *gorm.DB) error { ... }))", ErrNoTransaction)
	}
	ctx := tx.Statement.Context
	now := p.cfg.Now().UTC()
	recs := make([]dialects.Record, len(events))
	for i := range events {
		r, err := p.eventRecord(ctx, &events[i], now)
		if err != nil {
			return fmt.Errorf("%w: event %d (type %q, topic %q): %v", ErrInvalidEvent, i, events[i].Type, events[i].Topic, err)
		}
		if len(r.Payload) > p.cfg.MaxPayloadBytes {
			return &PayloadTooLargeError{Event: fmt.Sprintf("event %d (type %q, topic %q)", i, events[i].Type, events[i].Topic),
				Size: len(r.Payload), Limit: p.cfg.MaxPayloadBytes}
		}
		recs[i] = r
	}
	if tx.Statement.DryRun {
		return nil
	}
	if err := p.dialect.Insert(ctx, tx.Statement.ConnPool, p.table, recs); err != nil {
		return fmt.Errorf("gormoutbox: publish: %w", err)
	}
	p.wakeLater() // tx is the caller's: its commit is not seen
	return nil
}

func (p *Plugin) eventRecord(ctx context.Context, e *Event, now time.Time) (dialects.Record, error) {
	if e.Topic == "" {
		return dialects.Record{}, errors.New("no Topic given")
	}
	if !validTopic(e.Topic) {
		return dialects.Record{}, fmt.Errorf("topic %q is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])", e.Topic)
	}
	if e.Type == "" {
		return dialects.Record{}, errors.New("no Type given")
	}
	if len(e.Key) > MaxKeyLen {
		return dialects.Record{}, fmt.Errorf("key is %d bytes, over the limit of %d", len(e.Key), MaxKeyLen)
	}
	id := e.ID
	if id == "" {
		id = p.ids.New()
	} else if !uuidRE.MatchString(id) {
		return dialects.Record{}, fmt.Errorf("event id %q is not a UUID", id)
	}
	var payload []byte
	ct := "application/json"
	switch v := e.Payload.(type) {
	case nil:
		payload = []byte("null")
	case json.RawMessage:
		if !json.Valid(v) {
			return dialects.Record{}, errors.New("payload is a json.RawMessage that is not valid JSON")
		}
		payload = v
	case []byte:
		payload, ct = v, "application/octet-stream"
	case string:
		payload, ct = []byte(v), "application/octet-stream"
	default:
		b, err := json.Marshal(v)
		if err != nil {
			return dialects.Record{}, fmt.Errorf("%w: payload %T: %v", ErrEncodePayload, v, err)
		}
		payload = b
	}
	if e.ContentType != "" {
		ct = e.ContentType
	}
	h := p.headers(ctx, ct, "")
	for k, v := range e.Headers {
		if k == "" {
			return dialects.Record{}, errors.New("a header has an empty name")
		}
		h[k] = v
	}
	if e.AckTopic != "" {
		if !validTopic(e.AckTopic) {
			return dialects.Record{}, fmt.Errorf("ack topic %q is not a valid Kafka topic name", e.AckTopic)
		}
		h[HeaderAckTopic] = e.AckTopic
		h[HeaderProcessAttempt] = "1"
	}
	var key []byte
	if e.Key != "" {
		key = []byte(e.Key)
	}
	shardKey := key
	if shardKey == nil {
		shardKey = []byte(id)
	}
	return dialects.Record{
		EventID:       id,
		Topic:         e.Topic,
		Key:           key,
		EventType:     e.Type,
		AggregateType: e.AggregateType,
		AggregateID:   e.AggregateID,
		Payload:       payload,
		Headers:       h,
		Shard:         p.shard(shardKey),
		CreatedAt:     now,
		AvailableAt:   notBefore(now, e.NotBefore),
		AckTopic:      e.AckTopic,
		LockKey:       true, // writers of an explicit key share no row lock
	}, nil
}

// notBefore is when an event written at now and delayed to at may first
// be published: the later of the two, in UTC.
func notBefore(now, at time.Time) time.Time {
	if at.After(now) {
		return at.UTC()
	}
	return now
}
