package dialects

import (
	"context"
	"time"
)

// InboxMessage is a message a batch records in the inbox table: the
// consumer handles it once per event id.
type InboxMessage struct {
	// EventID is what the inbox deduplicates on.
	EventID   string
	Topic     string
	Partition int
	Offset    int64
}

// InboxRecordParams is a batch of messages to record as done.
type InboxRecordParams struct {
	// Table is the inbox table.
	Table Table
	// Consumer is the consumer's name (its group): consumers deduplicate
	// apart.
	Consumer string
	// Messages are the batch's messages; their event ids are distinct.
	Messages []InboxMessage
	// Now stamps processed_at.
	Now time.Time
}

// InboxUnrecordParams names records to remove.
type InboxUnrecordParams struct {
	Table    Table
	Consumer string
	EventIDs []string
}

// InboxDeadLetter is a message the handler kept failing on, parked in the
// inbox table with its content so that it can be inspected and replayed.
type InboxDeadLetter struct {
	Consumer  string
	EventID   string
	Topic     string
	Partition int
	Offset    int64
	// Key is the message key; nil means none.
	Key   []byte
	Value []byte
	// Headers are stored as a JSON object.
	Headers   map[string]string
	Attempts  int
	LastError string
	ParkedAt  time.Time
}

// InboxDeadQuery selects a consumer's dead letters.
type InboxDeadQuery struct {
	Table    Table
	Consumer string
	// EventIDs, when not empty, restricts to these messages.
	EventIDs []string
	// Limit bounds the rows returned.
	Limit int
}

// InboxReviveParams names a dead letter to mark done again.
type InboxReviveParams struct {
	Table    Table
	Consumer string
	EventID  string
	// Now stamps processed_at.
	Now time.Time
}

// InboxCleanupParams bounds one cleanup statement.
type InboxCleanupParams struct {
	Table Table
	// Before: records of messages handled before it are deleted.
	Before time.Time
	// Limit bounds the rows one statement deletes.
	Limit int
}

// Inboxer is the inbox side of a dialect: the inbox table (one row per
// consumer and event id, "done" or "dead") and the savepoints a handler
// runs behind. q is the transaction or pool to run on; the caller decides.
type Inboxer interface {
	// InboxMigrations returns the versioned steps that create the inbox
	// table t (run with MigrateSteps; written out with NewScript).
	InboxMigrations(t Table) []Migration
	// InboxRecord records p.Messages as done, skipping those the consumer
	// recorded before, and returns the set of event ids it recorded. A
	// record made meanwhile by another transaction (a rebalance) may
	// make it fail with a duplicate key: the caller retries the batch.
	InboxRecord(ctx context.Context, q Conn, p InboxRecordParams) (map[string]bool, error)
	// InboxUnrecord removes the records of p.EventIDs (messages whose
	// handler failed, or that wait behind one).
	InboxUnrecord(ctx context.Context, q Execer, p InboxUnrecordParams) error
	// InboxPark records dl as dead in t, with its content. A record of
	// the message that exists already is left as it is.
	InboxPark(ctx context.Context, q Execer, t Table, dl InboxDeadLetter) error
	// InboxDeadLetters lists dead letters, oldest first (by parking time,
	// then event id).
	InboxDeadLetters(ctx context.Context, q Querier, p InboxDeadQuery) ([]InboxDeadLetter, error)
	// InboxRevive turns the dead record of p.EventID into a done one
	// (dropping its content) and reports whether there was one.
	InboxRevive(ctx context.Context, q Execer, p InboxReviveParams) (bool, error)
	// InboxCleanup deletes up to p.Limit done records older than
	// p.Before (dead ones are kept) and returns how many it deleted.
	InboxCleanup(ctx context.Context, q Execer, p InboxCleanupParams) (int64, error)

	// Savepoint sets savepoint name (a plain identifier) in the
	// transaction q. With release, it first releases the savepoint of
	// that name set before, in the same round trip when
	// FoldsRelease.
	Savepoint(ctx context.Context, q Execer, name string, release bool) error
	// RollbackToSavepoint undoes what the transaction did since savepoint
	// name; the savepoint stays set.
	RollbackToSavepoint(ctx context.Context, q Execer, name string) error
	// ReleaseSavepoint releases savepoint name, keeping what was done
	// since.
	ReleaseSavepoint(ctx context.Context, q Execer, name string) error
	// FoldsRelease reports whether Savepoint with release costs one
	// round trip (the database runs several statements in one Exec): a
	// caller may then defer a release to the next Savepoint (or to the
	// COMMIT, which ends the savepoints still set).
	FoldsRelease() bool
}

// InboxErrorClass is what an error of the database means to the inbox
// (Inboxer.InboxClassify).
type InboxErrorClass int

const (
	// InboxErrorOther is any other error (connection refused, server
	// gone, a constraint): an outage, the batch is retried with backoff
	// and no message loses an attempt.
	InboxErrorOther InboxErrorClass = iota
	// InboxErrorData reports data a column cannot hold (PostgreSQL
	// SQLSTATE class 22, MySQL 1264, 1265, 1292, 1366, 1367, 1406, 3140):
	// the failure of the message whose data it is, not an outage.
	InboxErrorData
	// InboxErrorRolledBack reports a transaction the database rolled back
	// or must be rolled back as a whole (a deadlock, a serialization
	// failure, a lock wait timeout, a savepoint gone with its
	// transaction): the batch is retried whole, and no message loses an
	// attempt.
	InboxErrorRolledBack
)

// String returns the class's name.
func (c InboxErrorClass) String() string {
	switch c {
	case InboxErrorData:
		return "data"
	case InboxErrorRolledBack:
		return "rolled back"
	}
	return "other"
}

// InboxClassifier is implemented by an Inboxer whose database errors the
// inbox can tell apart; a dialect without it classifies nothing
// (ClassifyInboxError returns InboxErrorOther).
type InboxClassifier interface {
	// InboxClassify returns what err (anywhere in its chain) means to the
	// inbox.
	InboxClassify(err error) InboxErrorClass
}

// ClassifyInboxError returns d's class of err: InboxErrorOther for nil
// or when d is not an InboxClassifier.
func ClassifyInboxError(d Inboxer, err error) InboxErrorClass {
	if err == nil {
		return InboxErrorOther
	}
	if c, ok := d.(InboxClassifier); ok {
		return c.InboxClassify(err)
	}
	return InboxErrorOther
}
