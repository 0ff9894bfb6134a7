// Package dialects defines what the outbox needs from a database: the DDL
// of the outbox table and the statements that write and (later) claim its
// rows. Each supported database implements [Dialect] in its own package
// (dialects/postgres, dialects/mysql); gormoutbox picks one from the name of
// the GORM dialector.
//
// A dialect holds no connection and no state: every method takes the
// connection or transaction to run on, so the caller decides which one (for
// capture, always the transaction of the GORM statement being captured).
package dialects

import (
	"context"
	"database/sql"
	"fmt"
	"regexp"
	"strings"
	"time"
)

// Record is one outbox row as written at capture time. The relay-side
// columns (attempts, last_error, published_at, dead_at) start empty.
type Record struct {
	// EventID is the stable identity of the event (a UUIDv7 string);
	// consumers deduplicate on it.
	EventID string
	// Topic is the Kafka topic the event goes to.
	Topic string
	// Key is the Kafka message key. Nil means no key.
	Key []byte
	// EventType names what happened, e.g. "InventoryUpdated".
	EventType string
	// AggregateType and AggregateID identify the entity the event is about.
	AggregateType string
	AggregateID   string
	// Payload is the message value, stored byte for byte.
	Payload []byte
	// Headers are stored as a JSON object and sent as Kafka headers.
	Headers map[string]string
	// Shard is a hash of Key modulo the shard count, fixed at insert.
	Shard int
	// CreatedAt is when the event was captured (UTC).
	CreatedAt time.Time
	// AvailableAt is when the relay may first publish it (UTC).
	AvailableAt time.Time
	// AckTopic, when set, is where consumers send acknowledgements of
	// this event (see Acknowledge); the row then waits for one after it
	// is published.
	AckTopic string
	// LockKey makes Insert take the lock of (Topic, Key) before the row's
	// id, held until q's transaction ends, so that rows of one key take
	// their ids — and x-sequence numbers, Row.Sequence — in commit order.
	// Set it for rows whose writers nothing else orders: explicit events,
	// and rows whose key is not the primary key of the entity written (a
	// captured write of one entity is ordered by the entity's row lock).
	// No effect without a Key.
	LockKey bool
}

// Execer runs a statement. *sql.DB, *sql.Tx, *sql.Conn and every
// gorm.ConnPool satisfy it.
type Execer interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
}

// Querier runs a query. *sql.DB, *sql.Tx, *sql.Conn and every gorm.ConnPool
// satisfy it.
type Querier interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

// Dialect is the database-specific part of the outbox.
type Dialect interface {
	// Name is the GORM dialector name this dialect serves ("postgres", "mysql").
	Name() string
	// Migrate creates or upgrades the outbox table named table. It is
	// idempotent, versioned and safe to run from several processes at once.
	Migrate(ctx context.Context, db *sql.DB, table Table) error
	// MigrateSteps brings any table of the library (the inbox, say) to
	// the last of steps, with Migrate's locking and bookkeeping: a
	// migrations table beside it records the versions applied.
	MigrateSteps(ctx context.Context, db *sql.DB, table Table, steps []Migration) error
	// SchemaVersion reports the applied migration version of table, 0 when
	// the table has never been migrated.
	SchemaVersion(ctx context.Context, db *sql.DB, table Table) (int, error)
	// Insert writes recs into table in one or more multi-row INSERTs, in
	// order, on q (the capturing transaction). Before them it takes the
	// locks of the keys of the records with LockKey (sorted, held until q
	// ends). On a *sql.DB, Insert runs in a transaction of its own.
	Insert(ctx context.Context, q Conn, table Table, recs []Record) error
	// Placeholder returns the bind variable for the n-th argument (1-based).
	Placeholder(n int) string
	// Quote quotes an identifier (a plain name, no dots).
	Quote(ident string) string
	// Relayer claims, marks, retries, dead-letters and cleans up rows.
	Relayer
	// Admin counts rows per state and lists, re-sends and acknowledges
	// them (admin.go).
	Admin
	// Inboxer keeps the inbox table and the savepoints of its handlers.
	Inboxer
	// Capable declares the database's capabilities and optional features.
	Capable
}

// Conn runs statements and queries: a transaction.
type Conn interface {
	Execer
	Querier
}

// MaxTableNameLen bounds the table name so that index names derived from it
// (name + "_pending_key_idx") stay within PostgreSQL's 63-byte limit.
const MaxTableNameLen = 44

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// Table is a validated outbox table name, optionally qualified by a schema
// (PostgreSQL) or database (MySQL): "outbox" or "events.outbox".
type Table struct {
	// Schema is the qualifier, empty when none was given.
	Schema string
	// Name is the unqualified table name.
	Name string
}

// ParseTable validates name as "table" or "schema.table", each part a plain
// identifier ([A-Za-z_][A-Za-z0-9_]*) of at most MaxTableNameLen bytes.
func ParseTable(name string) (Table, error) {
	parts := strings.Split(name, ".")
	if len(parts) > 2 {
		return Table{}, fmt.Errorf("%w %q: use \"table\" or \"schema.table\"", ErrInvalidTable, name)
	}
	for _, p := range parts {
		if !identRE.MatchString(p) {
			return Table{}, fmt.Errorf("%w %q: %q is not a plain identifier (letters, digits and _, not starting with a digit)", ErrInvalidTable, name, p)
		}
		if len(p) > MaxTableNameLen {
			return Table{}, fmt.Errorf("%w %q: %q is longer than %d bytes", ErrInvalidTable, name, p, MaxTableNameLen)
		}
	}
	if len(parts) == 2 {
		return Table{Schema: parts[0], Name: parts[1]}, nil
	}
	return Table{Name: parts[0]}, nil
}

// String returns the name as given: "schema.table" or "table".
func (t Table) String() string {
	if t.Schema == "" {
		return t.Name
	}
	return t.Schema + "." + t.Name
}

// Qualified returns the quoted, possibly schema-qualified name.
func (t Table) Qualified(d interface{ Quote(string) string }) string {
	if t.Schema == "" {
		return d.Quote(t.Name)
	}
	return d.Quote(t.Schema) + "." + d.Quote(t.Name)
}

// Sibling returns a table name in the same schema as t with suffix appended
// to its name, e.g. the migrations table "outbox_migrations".
func (t Table) Sibling(suffix string) Table {
	return Table{Schema: t.Schema, Name: t.Name + suffix}
}

// MaxInsertRows bounds the rows of one INSERT statement so that its bind
// variables stay well under the 65,535 both databases allow.
const MaxInsertRows = 1000

// Migration is one versioned step of the outbox schema. Its statements must
// be idempotent (IF NOT EXISTS and the like): on MySQL DDL is not
// transactional, so a step cut short is run again in full.
type Migration struct {
	Version    int
	Statements []string
	// Ignore, when set, reports errors that mean a statement's work is
	// already done (an index that exists, say, where the database has no
	// IF NOT EXISTS for it): a step cut short can then run again.
	Ignore func(error) bool
}

// HashKey is the 32-bit FNV-1a hash used for shards and lock ids.
func HashKey(b []byte) uint32 {
	h := uint32(2166136261)
	for _, c := range b {
		h ^= uint32(c)
		h *= 16777619
	}
	return h
}

// Script is the DDL of one table of the library — what Migrate runs on a
// fresh database — version by version, for migration tools. Applying all
// of it brings the table to its last version, recorded in its migrations
// table, so that Migrate then finds nothing to do.
type Script struct {
	// Kind says what the table is: "outbox" or "inbox".
	Kind string
	// Dialect is the database the statements are for ("postgres",
	// "mysql").
	Dialect string
	// Table is the table the script creates.
	Table Table
	// Steps are the versions in order. The statements of each step end
	// with the one recording its version; the first step begins with the
	// creation of the migrations table.
	Steps []ScriptStep
}

// ScriptStep is the DDL of one schema version.
type ScriptStep struct {
	Version    int
	Statements []string
}

// NewScript writes out steps, the migrations of table t (of kind
// "outbox", "inbox"), as MigrateSteps
// runs them on a database without t: the migrations table, then each
// step's statements and the record of its version.
func NewScript(d Dialect, kind string, t Table, steps []Migration) Script {
	s := Script{Kind: kind, Dialect: d.Name(), Table: t}
	for i, m := range steps {
		var stmts []string
		if i == 0 {
			stmts = append(stmts, d.CreateMigrationsTable(t))
		}
		stmts = append(stmts, m.Statements...)
		stmts = append(stmts, d.RecordMigration(t, m.Version))
		s.Steps = append(s.Steps, ScriptStep{Version: m.Version, Statements: stmts})
	}
	return s
}

// LatestVersion is the version the script brings its table to (0 when it
// has no step).
func (s Script) LatestVersion() int {
	if len(s.Steps) == 0 {
		return 0
	}
	return s.Steps[len(s.Steps)-1].Version
}

// String returns the whole script as SQL text: each statement ends with
// ";" on a line of its own, and each version starts with a "-- version N"
// comment. PostgreSQL function bodies are dollar-quoted and hold ";"
// themselves: psql and multi-statement drivers read them whole; tools
// that split on ";" need them marked (goose: -- +goose StatementBegin).
func (s Script) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "-- go-outbox %s table %s (%s): schema version %d, recorded in %s.\n",
		s.Kind, s.Table, s.Dialect, s.LatestVersion(), s.Table.Sibling("_migrations"))
	for _, st := range s.Steps {
		b.WriteString("\n")
		b.WriteString(st.String())
	}
	return b.String()
}

// String returns the step's statements as SQL text, after a
// "-- version N" comment.
func (st ScriptStep) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "-- version %d\n", st.Version)
	for _, stmt := range st.Statements {
		b.WriteString(stmt)
		b.WriteString(";\n")
	}
	return b.String()
}
