package dialects

import (
	"context"
	"database/sql"
	"time"
)

// Row is one outbox row as the relay reads it.
type Row struct {
	// ID is the outbox row id (relay order).
	ID      int64
	EventID string
	Topic   string
	// Key is the message key; nil means none.
	Key           []byte
	EventType     string
	AggregateType string
	AggregateID   string
	Payload       []byte
	// Headers may be shared between rows read together: do not modify.
	Headers map[string]string
	Shard   int
	// Attempts counts failed publications so far.
	Attempts    int
	AvailableAt time.Time
	CreatedAt   time.Time
	// LastError is the error of the last failed publication, "" if none.
	LastError string
	// PublishedAt and DeadAt are set on published and dead-lettered rows.
	PublishedAt *time.Time
	DeadAt      *time.Time
	// ProcessAttempts is the send for processing the row stands for (1,
	// then more for re-sends after FAILED answers; see Acknowledge).
	ProcessAttempts int
	// FailedAt is set on rows whose last process attempt was answered
	// FAILED.
	FailedAt *time.Time
	// Sequence is the row's x-sequence number: its id, or the number
	// Replay gave it (above every id handed out before). The rows of a key
	// take their ids in commit order (Record.LockKey) and are published in
	// id order, so the numbers of a key rise in publication order, and a
	// row keeps its number on every publication. 0 for a row without a
	// key.
	Sequence int64
	// Invalid, when set, says why the row cannot be published as stored
	// (written by hand, by an older version or by another program):
	// headers that are not a JSON object of strings, a topic that is not a
	// valid Kafka topic name, a NULL payload, a key over the limit. The
	// error names the row and the column ("outbox row 42: column headers:
	// …"); the columns it concerns may be empty or partial. The relay
	// dead-letters such a row at once, alone.
	Invalid error
}

// Retry is the new state of a row whose publication failed.
type Retry struct {
	ID int64
	// Attempts is the new number of failed attempts.
	Attempts int
	// AvailableAt is when the row may be tried again.
	AvailableAt time.Time
	// Dead dead-letters the row now (AvailableAt is then ignored).
	Dead bool
	// Error is kept in last_error.
	Error string
}

// Outcome is what became of a claimed batch.
type Outcome struct {
	// Now stamps published_at and dead_at.
	Now time.Time
	// Published rows were written to the broker.
	Published []int64
	// Delete removes published rows instead of marking them.
	Delete bool
	// Retries are rows that failed, in id order. A retry that is not dead
	// also pushes back the later pending rows of its topic and key to its
	// AvailableAt, so that they do not fill the next claims only to be
	// held back by the order guard.
	Retries []Retry
	// Keys holds the topic and key of each retry, same index.
	Keys []TopicKey
}

// TopicKey is the unit of ordering: a topic and a message key.
type TopicKey struct {
	Topic string
	Key   []byte
}

// ClaimOptions tune a relay pass. Every dialect reads Shards, ShardMod
// and ShardRem; ShardLocks only concerns the dialects that lock shards
// (Capabilities.LocksShards), and the others ignore it.
type ClaimOptions struct {
	// Shards is the table's shard count (the plugin's Config.Shards).
	Shards int
	// ShardMod and ShardRem, when ShardMod > 1, restrict the pass to the
	// shards s with s % ShardMod == ShardRem: the passes of one relay's
	// workers take disjoint keys.
	ShardMod, ShardRem int
	// ShardLocks bound the shard locks of a pass, for the dialects that
	// lock shards.
	ShardLocks ShardLocks
	// MaxBytes, when positive, bounds the payload bytes of one claim as
	// well as its rows: a claim returns the rows, in id order, while the
	// running sum of their payload lengths stays within MaxBytes — and
	// always its first row, however large — so that a backlog of large
	// rows is read a few at a time. The rows cut off are left untouched.
	// Every dialect reads it. 0 means no bound.
	MaxBytes int64
	// TxTimeout, when positive, bounds how long a claim may hold its rows
	// (claim, publish, finish): a dialect whose claim is a transaction
	// held open while publishing sets the server's own timeouts for it
	// (PostgreSQL: idle_in_transaction_session_timeout and
	// statement_timeout, SET LOCAL), so that a hung relay cannot hold row
	// locks and the vacuum horizon indefinitely.
	TxTimeout time.Duration
	// SkipDeadKeys lets rows go past a dead-lettered row of their topic
	// and key. By default a dead row blocks its key: Claim holds back
	// (and parks until BlockedRecheck from now) the later rows of a key
	// that has a dead row, until the dead row is replayed or deleted.
	SkipDeadKeys bool
	// BlockedRecheck is how long a row blocked behind a dead row of its
	// key is parked before a claim looks at it again (default 1 minute).
	// Replay makes the blocked rows of a replayed row's key due at once.
	BlockedRecheck time.Duration
	// Conn, when set, is the connection the pass runs on instead of
	// connections of the pool: the caller holds it between passes (so
	// that a relay does not depend on the application's idle pool) and
	// closes it; Close of the pass leaves it open. A pass whose Close
	// fails leaves it marked bad (closing it then discards it).
	Conn *sql.Conn
}

// ShardLocks tune the passes of a dialect that takes a lock per shard
// (Capabilities.LocksShards, MySQL): relays share the table by shards, each pass
// holding the shards it locked.
type ShardLocks struct {
	// Max bounds the shard locks one pass holds; 0 means every free
	// shard.
	Max int
	// Wait is how long a pass that finds every shard held waits for one
	// (a standby relay takes over within Wait of the holder's death); 0
	// means it does not wait.
	Wait time.Duration
}

// Pass is one relay pass: a sequence of claims, each followed by Finish.
// It is not safe for concurrent use.
type Pass interface {
	// Claim returns up to limit rows due at now, in id order, such that no
	// returned row has an earlier pending row of the same topic and key
	// outside the returned set: publishing them in order keeps each key's
	// order. The rows stay claimed (no other relay can take them) until
	// Finish or Close.
	Claim(ctx context.Context, now time.Time, limit int) ([]Row, error)
	// Finish records what became of the last claim and releases its rows.
	Finish(ctx context.Context, o Outcome) error
	// Close ends the pass; a claim not finished is released untouched.
	Close() error
}

// A Forker is a Pass that can claim the next batch while its own previous
// claim is still open (its batch being published): Fork returns a second
// pass over the same table and options, tied to this one. A claim of
// either treats the rows of the other's open claim as claimed before its
// own — a row whose previous pending row of its key is in the other's
// open claim is returned, not held back — and Finish and Close of each
// pass act on its own claim only.
//
// The caller must then publish the two passes' batches one after the
// other, in the order of their claims, and hold back (leave out of
// Outcome.Published and Outcome.Retries) the rows of the later batch
// whose topic and key did not all get published in the earlier one.
//
// conn, when not nil, is the connection the fork runs on (as
// ClaimOptions.Conn).
type Forker interface {
	Pass
	Fork(conn *sql.Conn) Pass
}

// DeadQuery selects dead-lettered rows.
type DeadQuery struct {
	// Topic restricts to one topic when set.
	Topic string
	// AfterID pages: rows with a larger id only.
	AfterID int64
	// Limit bounds the rows returned (default 100).
	Limit int
}

// Stats are counts over the outbox table.
type Stats struct {
	// Pending rows: neither published nor dead.
	Pending int64
	// Dead rows (dead-lettered, not replayed).
	Dead int64
	// OldestPending is the created_at of the oldest pending row, zero if none.
	OldestPending time.Time
	// Awaiting rows are published and wait for a consumer's
	// acknowledgement (rows that asked for one).
	Awaiting int64
	// Failed rows were answered FAILED on their last process attempt.
	Failed int64
	// Blocked rows are pending rows behind a dead row of their topic and
	// key (counted in Pending too): the relay holds them back until the
	// dead row is replayed or deleted, unless RelayConfig.SkipDeadKeys.
	Blocked int64
	// Published rows that wait for nothing, and Processed rows
	// (acknowledged): filled only by CountDone, which reads them all.
	Published, Processed int64
}

// Relayer is the relay side of a dialect.
type Relayer interface {
	// Open starts a relay pass over table.
	Open(ctx context.Context, db *sql.DB, t Table, o ClaimOptions) (Pass, error)
	// Replay puts dead-lettered rows back: attempts 0, due at now.
	// It returns how many rows it put back. The replayed rows and the
	// pending rows of their keys after them take new numbers
	// (Row.Sequence), in id order, above every id handed out so far: rows
	// of the key may have been published past a dead one
	// (ClaimOptions.SkipDeadKeys), and the replayed row must not look
	// older than what a consumer applied.
	Replay(ctx context.Context, db *sql.DB, t Table, now time.Time, ids []int64) (int64, error)
	// DeadLetters lists dead-lettered rows in id order.
	DeadLetters(ctx context.Context, db *sql.DB, t Table, q DeadQuery) ([]Row, error)
	// Cleanup deletes up to limit rows published before before and returns
	// how many it deleted.
	Cleanup(ctx context.Context, db *sql.DB, t Table, before time.Time, limit int) (int64, error)
	// Stats counts pending and dead rows.
	Stats(ctx context.Context, db *sql.DB, t Table) (Stats, error)
	// SequenceSource returns the number that tells t's x-sequence numbers
	// (Row.Sequence) from those of any other outbox table: random, stored
	// once by Migrate, 0 before the schema version that stores it.
	SequenceSource(ctx context.Context, db *sql.DB, t Table) (int64, error)
}
