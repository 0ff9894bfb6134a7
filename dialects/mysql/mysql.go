// Package mysql is the MySQL dialect of the outbox (MySQL 8 and MariaDB
// 10.6+; only syntax both accept is used).
//
// The payload is a LONGBLOB (stored byte for byte) and the headers a JSON
// column. MySQL has no partial indexes, so the claim index leads with
// (published_at, dead_at): the relay's claim reads the "both NULL" range of
// it, which published rows never enter, and its cost does not grow with the
// published rows kept in the table.
package mysql

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/insert"
	"github.com/go-outbox/outbox/dialects/internal/migrate"
	"github.com/go-outbox/outbox/dialects/internal/sequence"
)

// Dialect implements dialects.Dialect for MySQL and MariaDB.
type Dialect struct{}

var _ dialects.Dialect = Dialect{}

// New returns the MySQL dialect.
func New() Dialect { return Dialect{} }

// Name implements dialects.Dialect.
func (Dialect) Name() string { return "mysql" }

// Placeholder implements dialects.Dialect.
func (Dialect) Placeholder(int) string { return "?" }

// Quote implements dialects.Dialect.
func (Dialect) Quote(ident string) string {
	return "`" + strings.ReplaceAll(ident, "`", "``") + "`"
}

// MaxKeyLen is the longest message key the msg_key column holds.
const MaxKeyLen = 1024

func migrations(d Dialect, t dialects.Table) []dialects.Migration {
	n := t.Name
	return []dialects.Migration{{
		Version: 1,
		Statements: []string{
			`CREATE TABLE IF NOT EXISTS ` + t.Qualified(d) + ` (
	id             BIGINT UNSIGNED NOT NULL AUTO_INCREMENT,
	event_id       CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	topic          VARCHAR(249) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	msg_key        VARBINARY(` + strconv.Itoa(MaxKeyLen) + `) NULL,
	event_type     VARCHAR(255) NOT NULL,
	aggregate_type VARCHAR(255) NOT NULL DEFAULT '',
	aggregate_id   VARCHAR(1024) NOT NULL DEFAULT '',
	payload        LONGBLOB NOT NULL,
	headers        JSON NOT NULL,
	shard          INT NOT NULL DEFAULT 0,
	attempts       INT NOT NULL DEFAULT 0,
	available_at   DATETIME(6) NOT NULL,
	last_error     TEXT NULL,
	created_at     DATETIME(6) NOT NULL,
	published_at   DATETIME(6) NULL,
	dead_at        DATETIME(6) NULL,
	PRIMARY KEY (id),
	UNIQUE KEY ` + d.Quote(n+"_event_id_key") + ` (event_id),
	KEY ` + d.Quote(n+"_pending_idx") + ` (published_at, dead_at, shard, id),
	KEY ` + d.Quote(n+"_pending_key_idx") + ` (topic, msg_key, published_at, dead_at, id),
	KEY ` + d.Quote(n+"_dead_idx") + ` (dead_at, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
		},
	}, {
		// The claim reads each held shard's pending range in id order and
		// filters on available_at, and the order guard looks for pending
		// rows of a key that are not due: with available_at in both
		// indexes neither needs a row lookup. Each new index replaces the
		// old one it extends.
		Version: 2,
		Statements: []string{
			`ALTER TABLE ` + t.Qualified(d) + ` ADD INDEX ` + d.Quote(n+"_claim_idx") +
				` (published_at, dead_at, shard, id, available_at)`,
			`ALTER TABLE ` + t.Qualified(d) + ` DROP INDEX ` + d.Quote(n+"_pending_idx"),
			`ALTER TABLE ` + t.Qualified(d) + ` ADD INDEX ` + d.Quote(n+"_key_idx") +
				` (topic, msg_key, published_at, dead_at, id, available_at)`,
			`ALTER TABLE ` + t.Qualified(d) + ` DROP INDEX ` + d.Quote(n+"_pending_key_idx"),
		},
		Ignore: ignoreDone,
	}, {
		// Acknowledgements: rows that ask for one (ack_topic) wait after
		// publication until a consumer answers: processed, or re-sent
		// (process_attempts) until failed. One index serves both states
		// without being touched when the relay marks rows published (it
		// has no published_at): failed rows are its failed_at range; rows
		// waiting for an answer are in its (NULL, NULL, not NULL) range,
		// with only the pending rows that ask for one beside them.
		Version: 3,
		Statements: []string{
			`ALTER TABLE ` + t.Qualified(d) + ` ADD COLUMN ack_topic VARCHAR(249) CHARACTER SET ascii COLLATE ascii_bin NULL`,
			`ALTER TABLE ` + t.Qualified(d) + ` ADD COLUMN process_attempts INT NOT NULL DEFAULT 1`,
			`ALTER TABLE ` + t.Qualified(d) + ` ADD COLUMN processed_at DATETIME(6) NULL`,
			`ALTER TABLE ` + t.Qualified(d) + ` ADD COLUMN failed_at DATETIME(6) NULL`,
			`ALTER TABLE ` + t.Qualified(d) + ` ADD INDEX ` + d.Quote(n+"_ack_idx") +
				` (failed_at, processed_at, ack_topic, topic, id)`,
		},
		Ignore: ignoreDone,
	}, {
		// x-sequence: a row's number is its id, or the one Replay gave it
		// (seq); the keys table holds the table's source (the random
		// number under the empty topic and key) and the rows Insert locks
		// for Record.LockKey.
		Version: 4,
		Statements: []string{
			`ALTER TABLE ` + t.Qualified(d) + ` ADD COLUMN seq BIGINT NULL`,
			`CREATE TABLE IF NOT EXISTS ` + sequence.Table(t).Qualified(d) + ` (
	topic   VARCHAR(249) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
	msg_key VARBINARY(` + strconv.Itoa(MaxKeyLen) + `) NOT NULL,
	seq     BIGINT NOT NULL,
	PRIMARY KEY (topic, msg_key)
) ENGINE=InnoDB`,
			// The source: a random number that tells this table's
			// numbers from another outbox's (x-sequence-source).
			// (IGNORE: a second run keeps the first number, with the
			// INSERT privilege alone.)
			`INSERT IGNORE INTO ` + sequence.Table(t).Qualified(d) + ` (topic, msg_key, seq)
VALUES ('', '', 1 + FLOOR(RAND() * 9007199254740990))`,
		},
		Ignore: ignoreDone,
	}, dueIndexStep(d, t)}
}

// dueIndexStep replaces the claim index (published_at, dead_at, shard, id,
// available_at) with the due index (published_at, dead_at, shard,
// available_at, id): the claim reads each held shard's due rows in
// (available_at, id) order, so rows that are not due (delayed by
// Event.NotBefore, backing off after a failed publication, parked behind
// an earlier row of their key) lie past the end of the range it reads and
// are never scanned (docs/architecture.md, "Delayed rows out of the
// claim").
func dueIndexStep(d Dialect, t dialects.Table) dialects.Migration {
	return dialects.Migration{
		Version: 5,
		Statements: []string{
			`ALTER TABLE ` + t.Qualified(d) + ` ADD INDEX ` + d.Quote(t.Name+"_due_idx") +
				` (published_at, dead_at, shard, available_at, id)`,
			`ALTER TABLE ` + t.Qualified(d) + ` DROP INDEX ` + d.Quote(t.Name+"_claim_idx"),
		},
		Ignore: ignoreDone,
	}
}

// ignoreDone reports errors that mean a migration statement's work is
// already done: 1060 duplicate column, 1061 duplicate key name, 1091 can't
// drop (does not exist).
func ignoreDone(err error) bool {
	return isErrorNumber(err, 1060, 1061, 1091)
}

// LatestVersion is the schema version Migrate brings a table to.
const LatestVersion = 5

func migrationsTable(d Dialect, t dialects.Table) string {
	return t.Sibling("_migrations").Qualified(d)
}

var _ dialects.Capable = Dialect{}

// OutboxMigrations implements dialects.Capable: the steps Migrate runs.
func (d Dialect) OutboxMigrations(t dialects.Table) []dialects.Migration { return migrations(d, t) }

// CreateMigrationsTable implements dialects.Capable.
func (d Dialect) CreateMigrationsTable(t dialects.Table) string {
	return `CREATE TABLE IF NOT EXISTS ` + migrationsTable(d, t) +
		` (version INT NOT NULL PRIMARY KEY, applied_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)) ENGINE=InnoDB`
}

// RecordMigration implements dialects.Capable.
func (d Dialect) RecordMigration(t dialects.Table, version int) string {
	return recordMigration(d, t, strconv.Itoa(version))
}

// recordMigration records the version given as the SQL expression v.
func recordMigration(d Dialect, t dialects.Table, v string) string {
	return `INSERT INTO ` + migrationsTable(d, t) + ` (version) VALUES (` + v + `)`
}

// lockName is the GET_LOCK name that serialises concurrent migrations of one
// table of database (named locks are server-wide; names are limited to 64
// characters).
func lockName(database string, t dialects.Table) string {
	return "gormoutbox:migrate:" + tableHash(database, t)
}

// Migrate implements dialects.Dialect. MySQL DDL commits implicitly, so
// Migrate serialises concurrent runs with GET_LOCK held on one dedicated
// connection (advisory locks belong to a session; taking one through the
// pool would lock a random connection) and every step is idempotent.
func (d Dialect) Migrate(ctx context.Context, db *sql.DB, t dialects.Table) error {
	return d.MigrateSteps(ctx, db, t, migrations(d, t))
}

// MigrateSteps implements dialects.Dialect: the versioned steps of table t
// (the outbox or another table of the library, such as the inbox) run
// under GET_LOCK on one connection, recorded in t's own migrations table.
// Each step must be idempotent (MySQL DDL commits implicitly).
func (d Dialect) MigrateSteps(ctx context.Context, db *sql.DB, t dialects.Table, steps []dialects.Migration) (err error) {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", t, err)
	}
	defer conn.Close()
	database, err := currentDatabase(ctx, conn)
	if err != nil {
		return fmt.Errorf("migrate %s: %w", t, err)
	}
	lock := lockName(database, t)
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, 60)`, lock).Scan(&got); err != nil {
		return fmt.Errorf("migrate %s: lock: %w", t, err)
	}
	if !got.Valid || got.Int64 != 1 {
		return fmt.Errorf("migrate %s: lock %q not granted within 60s", t, lock)
	}
	defer func() {
		// A fresh context: the lock must be released even when ctx is done.
		_, rerr := conn.ExecContext(context.WithoutCancel(ctx), `DO RELEASE_LOCK(?)`, lock)
		err = errors.Join(err, rerr)
	}()
	if _, err := conn.ExecContext(ctx, d.CreateMigrationsTable(t)); err != nil {
		return fmt.Errorf("migrate %s: %w", t, err)
	}
	var cur int
	if err := conn.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM `+migrationsTable(d, t)).Scan(&cur); err != nil {
		return fmt.Errorf("migrate %s: read version: %w", t, err)
	}
	if _, err := migrate.Apply(ctx, conn, cur, steps, recordMigration(d, t, "?")); err != nil {
		return fmt.Errorf("migrate %s: %w", t, err)
	}
	return nil
}

// SchemaVersion implements dialects.Dialect.
func (d Dialect) SchemaVersion(ctx context.Context, db *sql.DB, t dialects.Table) (int, error) {
	mt := t.Sibling("_migrations")
	var n int
	err := db.QueryRowContext(ctx, `SELECT COUNT(*) FROM information_schema.tables
WHERE table_schema = COALESCE(NULLIF(?, ''), DATABASE()) AND table_name = ?`, mt.Schema, mt.Name).Scan(&n)
	if err != nil || n == 0 {
		return 0, err
	}
	var v int
	err = db.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM `+migrationsTable(d, t)).Scan(&v)
	return v, err
}

// Insert implements dialects.Dialect.
func (d Dialect) Insert(ctx context.Context, q dialects.Conn, t dialects.Table, recs []dialects.Record) error {
	for i := range recs {
		if len(recs[i].Key) > MaxKeyLen {
			return fmt.Errorf("event %s: message key is %d bytes, over the %d the outbox table holds",
				recs[i].EventID, len(recs[i].Key), MaxKeyLen)
		}
	}
	return insert.Chunked(ctx, d, d, q, t, recs)
}
