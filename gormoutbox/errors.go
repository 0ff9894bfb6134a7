package gormoutbox

import (
	"errors"
	"fmt"

	"github.com/go-outbox/outbox/dialects/postgres"
)

// Errors returned by the plugin and the relay. Each error carries a message
// that names the model, field, option or value at fault; test for the kind
// with errors.Is, and read the fields of a TagError or an UncapturedError
// with errors.As.
var (
	// ErrUnsupportedDialect: the GORM dialector is not PostgreSQL or MySQL,
	// or the database lacks a feature asked for (commit notifications on
	// MySQL).
	ErrUnsupportedDialect = errors.New("gormoutbox: unsupported dialect")
	// ErrInvalidConfig: a Config field has a value the plugin cannot use.
	ErrInvalidConfig = errors.New("gormoutbox: invalid config")
	// ErrInvalidTag: a model's outbox tags are wrong (unknown setting,
	// missing topic, key field that does not exist, ...). The error is a
	// *TagError.
	ErrInvalidTag = errors.New("gormoutbox: invalid outbox tag")
	// ErrInvalidEvent: an event given to Publish is incomplete or malformed.
	ErrInvalidEvent = errors.New("gormoutbox: invalid event")
	// ErrPayloadTooLarge: an event's payload is over Config.MaxPayloadBytes;
	// the write (or Publish) was refused and nothing was written. The
	// error is a *PayloadTooLargeError.
	ErrPayloadTooLarge = errors.New("gormoutbox: payload too large")
	// ErrEncodePayload: an entity or event payload cannot be encoded.
	ErrEncodePayload = errors.New("gormoutbox: cannot encode payload")
	// ErrNoTransaction: Publish was called outside a transaction.
	ErrNoTransaction = errors.New("gormoutbox: not in a transaction")
	// ErrUncapturedWrite: the write to a tagged model is of a kind the
	// plugin cannot capture; it was refused so that no committed change
	// goes without its event. The error is an *UncapturedError, whose
	// message says how to proceed.
	ErrUncapturedWrite = errors.New("gormoutbox: write cannot be captured")
	// ErrNotRegistered: the plugin is not registered on this *gorm.DB.
	ErrNotRegistered = errors.New("gormoutbox: plugin not registered (call db.Use(gormoutbox.New(...)) first)")
	// ErrListenerNotLinked: Relay.ListenWith on PostgreSQL without a
	// ListenOptions.Listener. The LISTEN implementation needs pgx and is a
	// package of its own, so that a service on MySQL does not link pgx:
	//
	//	gormoutbox.ListenOptions{Listener: pgxlisten.New()} // github.com/go-outbox/outbox/dialects/postgres/pgxlisten
	ErrListenerNotLinked = errors.New(`gormoutbox: LISTEN needs pgx: set ListenOptions.Listener to pgxlisten.New() (package "github.com/go-outbox/outbox/dialects/postgres/pgxlisten")`)
)

// Errors of the relay's hooks and publishers: they tell the relay what
// became of a message.
var (
	// ErrDeadLetter, wrapped in an error a BeforePublish hook returns,
	// dead-letters the message at once instead of retrying it.
	ErrDeadLetter = errors.New("gormoutbox: dead-lettered by a hook")
	// ErrMessageTooLarge: the broker (or the client's batch limit) cannot
	// take the message; retrying cannot help, so it is dead-lettered at
	// once.
	ErrMessageTooLarge = errors.New("gormoutbox: message too large")
	// ErrInvalidRow: an outbox row cannot be published as stored (headers
	// that are not a JSON object of strings, an invalid topic, a NULL
	// payload, a key over MaxKeyLen: see Row.Invalid); it is dead-lettered
	// at once, alone, with an error naming the row and the column.
	ErrInvalidRow = errors.New("gormoutbox: outbox row cannot be published as stored")
	// ErrHeldBack: the message was not sent because an earlier message of
	// its key failed; it is left as it was, with no attempt counted.
	ErrHeldBack = errors.New("gormoutbox: held back behind a failed message of the same key")
	// ErrBrokerUnavailable: the message was not written because of the
	// broker or the network (connection refused, timeouts, no leader, not
	// enough replicas, metadata or authentication failing…), not because
	// of the message. A Publisher wraps such errors in it; the relay then
	// counts no attempt: it backs off as a whole and keeps the rows
	// pending, however long the outage.
	ErrBrokerUnavailable = errors.New("gormoutbox: broker unavailable")
	// ErrUnknownTopic: the broker does not know the message's topic. The
	// relay treats it as ErrBrokerUnavailable (a topic being created, a
	// cluster starting) for RelayConfig.UnknownTopicGrace after the topic
	// first failed so, then as a failure of the message.
	ErrUnknownTopic = errors.New("gormoutbox: unknown topic")
)

// Errors of acknowledgements (Acknowledge, ack.Tracker).
var (
	// ErrUnknownEvent: Acknowledge found no outbox row with the event id
	// (it was never written here, or cleaned up).
	ErrUnknownEvent = errors.New("gormoutbox: no outbox row for the acknowledged event")
	// ErrInvalidAck reports an acknowledgement that cannot be applied.
	ErrInvalidAck = errors.New("gormoutbox: invalid acknowledgement")
)

// ErrTransactionPooler: Relay.ListenWith was given a connection that goes
// through a connection pooler in transaction or statement pooling mode
// (PgBouncer's pool_mode = transaction, and the like), where LISTEN cannot
// work: LISTEN is session state, and such a pooler hands the server
// connection to other clients after every transaction. Give ListenWith a
// ListenOptions.DSN that reaches PostgreSQL without the pooler (or through
// a pool in session mode). It is the listener's own error, hence its
// message without the "gormoutbox:" prefix.
var ErrTransactionPooler = postgres.ErrTransactionPooler

// TagError reports a model whose outbox tags are wrong, from db.Use (with
// Config.Models), Plugin.Validate or the model's first write. It wraps
// ErrInvalidTag.
type TagError struct {
	// Model is the Go type name of the model.
	Model string
	// Field is the Go name of the field whose tag is wrong, empty when the
	// problem is in the model's own tag (the embedded Source's).
	Field string
	// Problem says what is wrong, e.g. "key field does not exist".
	Problem string
}

// tagError builds a *TagError naming the model (and field).
func tagError(model, field, format string, args ...any) error {
	return &TagError{Model: model, Field: field, Problem: fmt.Sprintf(format, args...)}
}

// Error implements error: "gormoutbox: invalid outbox tag: model M field
// F: problem".
func (e *TagError) Error() string {
	where := "model " + e.Model
	if e.Field != "" {
		where += " field " + e.Field
	}
	return ErrInvalidTag.Error() + ": " + where + ": " + e.Problem
}

// Unwrap returns ErrInvalidTag, so that errors.Is(err, ErrInvalidTag)
// holds.
func (e *TagError) Unwrap() error { return ErrInvalidTag }

// UncapturedError reports a write to a tagged model that the plugin cannot
// capture and refused, so that no committed change goes without its
// event. It wraps ErrUncapturedWrite.
type UncapturedError struct {
	// Model is the Go type name of the model written.
	Model string
	// Op is the operation refused: "create", "update" or "delete".
	Op string
	// Reason says what makes the write uncapturable, as the message words
	// it after "<op> of <model>", e.g. "without a WHERE clause".
	Reason string
	// WayOut says how to write it so that it is captured.
	WayOut string
}

// uncaptured builds the *UncapturedError of a refused write.
func uncaptured(model string, o op, why, wayOut string) error {
	return &UncapturedError{Model: model, Op: o.String(), Reason: why, WayOut: wayOut}
}

// Error implements error: what was refused, why, the way out, and the
// explicit opt-out (gormoutbox.Skip).
func (e *UncapturedError) Error() string {
	return fmt.Sprintf("%s: %s of %s %s; %s, or opt out explicitly with db.Clauses(gormoutbox.Skip(\"reason\"))",
		ErrUncapturedWrite, e.Op, e.Model, e.Reason, e.WayOut)
}

// Unwrap returns ErrUncapturedWrite, so that errors.Is(err,
// ErrUncapturedWrite) holds.
func (e *UncapturedError) Unwrap() error { return ErrUncapturedWrite }

// invalidRowError is the error of a row the relay cannot publish as
// stored: its message is the dialect's (naming the row and the column) and
// it matches ErrInvalidRow.
type invalidRowError struct{ err error }

func (e invalidRowError) Error() string        { return e.err.Error() }
func (e invalidRowError) Unwrap() error        { return e.err }
func (e invalidRowError) Is(target error) bool { return target == ErrInvalidRow }

// PayloadTooLargeError reports an event whose payload is over
// Config.MaxPayloadBytes: the captured write or the Publish call was
// refused in the caller's transaction, and nothing was written. It wraps
// ErrPayloadTooLarge.
type PayloadTooLargeError struct {
	// Model is the Go type name of the model written; empty for Publish.
	Model string
	// Event names the event: the row's primary key for a captured write
	// ("row 42"), its position, type and topic for Publish.
	Event string
	// Size is the payload's size and Limit Config.MaxPayloadBytes, in
	// bytes.
	Size, Limit int
}

// Error implements error: "gormoutbox: payload too large: model M row 42:
// payload is N bytes, over Config.MaxPayloadBytes (L)".
func (e *PayloadTooLargeError) Error() string {
	where := e.Event
	if e.Model != "" {
		where = "model " + e.Model + " " + where
	}
	return fmt.Sprintf("%s: %s: payload is %d bytes, over Config.MaxPayloadBytes (%d)",
		ErrPayloadTooLarge, where, e.Size, e.Limit)
}

// Unwrap returns ErrPayloadTooLarge, so that errors.Is(err,
// ErrPayloadTooLarge) holds.
func (e *PayloadTooLargeError) Unwrap() error { return ErrPayloadTooLarge }
