// Package inbox is the consumer side of the outbox: it reads Kafka topics
// with a kafka-go consumer group and runs a handler for each message inside
// a GORM transaction that also records the message's event id in an inbox
// table. A message recorded before (a redelivery: at-least-once delivery
// sends some messages twice) is skipped, so the handler's database writes
// happen once per event. The group's offsets are committed only after the
// transaction commits.
//
//	c, err := inbox.New(db, func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
//		return tx.Save(&Copy{...}).Error // and gormoutbox.Publish(tx, ...) for events of your own
//	}, inbox.Config{Brokers: brokers, GroupID: "orders", Topics: []string{"inventory"}})
//	if err := c.Migrate(ctx); err != nil { ... }
//	err = c.Run(ctx) // until ctx is cancelled
//
// Several messages share one transaction (Config.BatchSize), each handler
// behind its own savepoint: a failing handler is undone alone. Its message
// is retried with backoff, and the later messages of its partition wait
// (per-key order: a key lives in one partition); after Config.MaxAttempts
// the message is parked as a dead letter in the inbox table and the
// partition moves on. Nothing is dropped silently. Broker and database
// outages pause the consumer; they do not end Run. Config.Workers handles
// disjoint sets of partitions concurrently.
//
// A message may carry an x-sequence header (HeaderSequence): a number per
// key of its topic from its producer (an outbox table), named by the
// x-sequence-source header (HeaderSequenceSource), increasing in the order
// the producer publishes, the same on every redelivery of an event. Any
// consumer may drop a message not newer than the last it applied for its
// key and source. The inbox skips, without touching the database, a
// message numbered within what committed for its key, partition and source
// in this process (from the first number it saw to the highest): the
// event-id record stays the source of truth, the numbers, kept in memory
// (Config.SequenceKeys), only spare it the round trip. Messages without a
// source are deduplicated by event id alone. Config.IgnoreSequence turns
// the check off.
//
// Package ack builds acknowledgements (SUCCESS / FAILED answers to the
// producing service) on top of the inbox.
package inbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"unicode/utf8"

	kafkago "github.com/segmentio/kafka-go"
	"gorm.io/gorm"
)

// Header names the inbox reads.
const (
	// HeaderEventID carries the event id (gormoutbox sends it).
	HeaderEventID = "event-id"
	// HeaderProcessAttempt numbers re-sends of an event that a consumer
	// answered FAILED to (see package ack): a re-send is a new delivery to
	// process, so it is deduplicated apart from the first.
	HeaderProcessAttempt = "process-attempt"
	// HeaderSequence carries a message's number among its key's messages of
	// its topic: the decimal text of a positive int64, strictly increasing
	// per key in the order the producer publishes, the same on every
	// redelivery of an event. A consumer may drop a message not newer than
	// the last it applied for its key; the inbox skips such a message
	// without a database round trip (see Config.IgnoreSequence). Messages
	// without a key or from older producers have none.
	HeaderSequence = "x-sequence"
	// HeaderSequenceSource names the numbering an x-sequence comes from (an
	// outbox table): numbers are compared only within one source, and a
	// number without one is not used.
	HeaderSequenceSource = "x-sequence-source"
)

// Message is a Kafka message handed to the handler.
type Message struct {
	kafkago.Message
	// EventID is what the inbox deduplicates on (Config.EventID).
	EventID string
	// Attempt counts the handler's runs on this message in this process,
	// from 1.
	Attempt int
	// Consumer is the consumer's name (its GroupID).
	Consumer string

	seq       int64  // the x-sequence the inbox checks, 0 for none
	seqSource string // and its source
}

// Header returns the value of the first header called name, "" if none.
func (m *Message) Header(name string) string {
	for _, h := range m.Headers {
		if h.Key == name {
			return string(h.Value)
		}
	}
	return ""
}

// Handler processes one message. tx is the inbox's transaction (behind a
// savepoint of this message): write through it, and publish events with
// gormoutbox.Publish(tx, ...) so that they commit with the inbox record.
// With Config.Workers > 1, handlers of different partitions run
// concurrently.
// Returning an error undoes the handler's writes; the message is retried.
// The handler must not commit or roll back tx.
type Handler func(ctx context.Context, tx *gorm.DB, m *Message) error

// DefaultEventID is the event-id header (with "#n" appended for the n-th
// process attempt of a re-sent event, n ≥ 2), or "topic/partition/offset"
// for messages without one or with an empty one. An id the inbox table
// cannot store as it is (over MaxIDLen bytes, not valid UTF-8, holding a
// NUL byte, or ending in a space, which MySQL compares as if absent) is
// replaced by "sha256:" and the hex SHA-256 of its bytes: a
// stable id (every redelivery gets the same), while the raw value stays in
// the message's headers (and in the dead-letter row if it is parked).
func DefaultEventID(m *Message) string {
	id := m.Header(HeaderEventID)
	if id == "" {
		return offsetID(m)
	} else if a := m.Header(HeaderProcessAttempt); a != "" && a != "1" {
		id += "#" + a
	}
	return storableID(m, id)
}

// offsetID is the id of a message without one: "topic/partition/offset".
func offsetID(m *Message) string {
	return m.Topic + "/" + strconv.Itoa(m.Partition) + "/" + strconv.FormatInt(m.Offset, 10)
}

// storableID returns id if the inbox table can store it; the
// "topic/partition/offset" of m for an empty one; else "sha256:" and the
// hex SHA-256 of id. It applies to what Config.EventID returns too.
func storableID(m *Message, id string) string {
	if id == "" {
		id = offsetID(m)
	}
	// A trailing space is hashed too: MySQL's PAD SPACE collations compare
	// "x " equal to "x", so such an id would meet the record of its twin.
	if len(id) > MaxIDLen || !utf8.ValidString(id) || strings.IndexByte(id, 0) >= 0 || strings.HasSuffix(id, " ") {
		sum := sha256.Sum256([]byte(id))
		id = "sha256:" + hex.EncodeToString(sum[:])
	}
	return id
}
