package dialects

import (
	"context"
	"database/sql"
	"strconv"
	"time"
)

// Capabilities declares how a database (with the driver and GORM
// dialector the library runs it through) differs from the others where the
// code above the seam must know it: capture decides from these fields, not
// from the dialect's Name. The zero value is the cautious choice for every
// field: read back what cannot be known, refuse what cannot be told apart.
type Capabilities struct {
	// ReturnsDefaults reports that GORM's INSERT of a struct ends with a
	// RETURNING of every column that has a database default, so that the
	// struct holds the row as committed after the insert (PostgreSQL).
	// When false, capture reads the row back when a database default is
	// still zero in the struct.
	ReturnsDefaults bool

	// TimePrecision is the precision at which the database stores every
	// time value (PostgreSQL: a microsecond), 0 when it depends on the
	// column (MySQL's DATETIME(fsp)).
	TimePrecision time.Duration

	// TimesTruncated reports that a time value written is stored as the Go
	// value truncated to TimePrecision (pgx sends whole microseconds,
	// cutting the rest), so that an event can show the committed value
	// without reading it back. When false (a column that rounds, or whose
	// precision is not known), capture reads written times back.
	TimesTruncated bool

	// ConsecutiveInsertIDs reports that the driver gives the generated key
	// of a multi-row INSERT as LastInsertId, the first row's, the others
	// following it one by one (MySQL's auto increment); GORM then writes
	// LastInsertId, +1, … into the rows in order. When false the
	// generated key comes back only from RETURNING.
	ConsecutiveInsertIDs bool

	// UpsertCount is how the database counts the rows an upsert affected.
	UpsertCount UpsertCount

	// Notify reports that the database can notify a listener at the
	// commit of every transaction that wrote outbox rows (PostgreSQL's
	// NOTIFY, sent by the outbox table's trigger, which SetNotify turns
	// on and off). A CommitListener receives them. When false, SetNotify
	// returns ErrUnsupported and there is nothing to listen to.
	Notify bool

	// LocksShards reports that the dialect's relay passes lock the shards
	// they claim from, and so read ClaimOptions.ShardLocks (MySQL, with
	// GET_LOCK). When false the dialect shares rows among relays another
	// way (PostgreSQL: FOR UPDATE SKIP LOCKED) and ignores ShardLocks.
	LocksShards bool

	// TransactionalDDL reports that schema changes run inside a
	// transaction and roll back with it (PostgreSQL), so a migration
	// script can be applied in one transaction; when false (MySQL) each
	// DDL statement commits by itself and a script cut short leaves what
	// it created.
	TransactionalDDL bool
}

// UpsertCount says how a database counts the rows affected by an upsert
// (INSERT … ON CONFLICT / ON DUPLICATE KEY UPDATE).
type UpsertCount int

const (
	// UpsertCountsRows: every row the statement inserted or updated counts
	// one, whether the update changed it or not (PostgreSQL's ON CONFLICT
	// DO UPDATE). With DO NOTHING the count GORM reports is that of the
	// rows it was given, which tells nothing.
	UpsertCountsRows UpsertCount = iota
	// UpsertCountsChanges: an inserted row counts one, a changed row two,
	// an unchanged row none (one with the client flag CLIENT_FOUND_ROWS)
	// (MySQL's and MariaDB's ON DUPLICATE KEY UPDATE). With RETURNING
	// (MariaDB) the count is that of the rows returned, one per row given,
	// and GORM writes each returned key into its struct.
	UpsertCountsChanges
)

// String returns the name of the constant.
func (c UpsertCount) String() string {
	switch c {
	case UpsertCountsRows:
		return "UpsertCountsRows"
	case UpsertCountsChanges:
		return "UpsertCountsChanges"
	}
	return "UpsertCount(" + strconv.Itoa(int(c)) + ")"
}

// Capable is the part of Dialect that declares what the database can do,
// with the optional features those declarations gate and the DDL of the
// outbox written out for migration tools.
type Capable interface {
	// Capabilities declares how the database differs from the others.
	Capabilities() Capabilities
	// SetNotify turns the commit notifications of outbox table t on or
	// off, only when they are not already so. A dialect without them
	// (Capabilities().Notify false) returns ErrUnsupported.
	SetNotify(ctx context.Context, db *sql.DB, t Table, on bool) error
	// OutboxMigrations returns the versioned steps Migrate runs on the
	// outbox table t.
	OutboxMigrations(t Table) []Migration
	// CreateMigrationsTable returns the statement that creates the
	// migrations table of t (idempotent), which MigrateSteps runs first.
	CreateMigrationsTable(t Table) string
	// RecordMigration returns the statement that records version as
	// applied in the migrations table of t, as MigrateSteps does after
	// each step.
	RecordMigration(t Table, version int) string
}

// ListenParams are the parameters of CommitListener.Listen.
type ListenParams struct {
	// Table is the outbox table whose commits are listened to.
	Table Table
	// DB is the pool the listening connection is taken from, when DSN is
	// empty.
	DB *sql.DB
	// DSN, when set, is the connection string the listener opens its
	// connections from, instead of taking them from DB.
	DSN string
	// Notify is called after every commit that wrote rows to Table, and
	// once after a reconnection, for what may have been missed.
	Notify func()
	// OnError, when not nil, hears of connection trouble, after which the
	// listener reconnects.
	OnError func(error)
}

// CommitListener receives the commit notifications of a database whose
// Capabilities have Notify (PostgreSQL: package
// dialects/postgres/pgxlisten, which needs pgx). It is given explicitly to
// whatever listens (gormoutbox.ListenOptions.Listener), so that a program
// that does not listen does not link its driver.
type CommitListener interface {
	// Listen blocks until ctx is done, calling p.Notify after every commit
	// that wrote rows to p.Table, and returns nil then; it returns at once
	// an error when it cannot listen at all.
	Listen(ctx context.Context, p ListenParams) error
	// CheckDSN reports whether dsn is a connection string Listen can use.
	CheckDSN(dsn string) error
}
