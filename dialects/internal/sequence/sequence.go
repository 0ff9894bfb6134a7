// Package sequence keeps the x-sequence numbers of outbox rows right: a
// row's number is its id (Row.Sequence) unless Replay renumbered it, so
// the numbers of a key rise in the order the relay publishes as long as
// the rows of a key take their ids in commit order. Captured writes of an
// entity do (its row lock orders them); for the other rows Insert takes a
// lock per (topic, key) before the ids (Record.LockKey) — planned here,
// taken by each dialect in its own way (Locker). The package also reads
// the table's source (the random number that tells its numbers from
// another outbox table's) and renumbers replayed rows.
package sequence

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/rowsql"
)

// Suffix names the table beside the outbox table that holds the source
// (under the empty topic and key) and, on MySQL, the key locks.
const Suffix = "_keys"

// Table is the keys table of outbox table t.
func Table(t dialects.Table) dialects.Table { return t.Sibling(Suffix) }

// Key is one (topic, key) to lock.
type Key struct {
	Topic string
	Key   []byte
}

// Compare orders keys by topic, then key bytes: every writer locks its
// keys in this one order, so two writers cannot deadlock on them.
func Compare(a, b Key) int {
	if c := cmp.Compare(a.Topic, b.Topic); c != 0 {
		return c
	}
	return bytes.Compare(a.Key, b.Key)
}

// Keys returns the distinct keys of the records that ask for a key lock
// (Record.LockKey, with a Key), sorted; nil when none does.
func Keys(recs []dialects.Record) []Key {
	var keys []Key
	for i := range recs {
		r := &recs[i]
		if r.LockKey && r.Key != nil {
			keys = append(keys, Key{Topic: r.Topic, Key: r.Key})
		}
	}
	if len(keys) < 2 {
		return keys
	}
	slices.SortFunc(keys, Compare)
	return slices.CompactFunc(keys, func(a, b Key) bool { return Compare(a, b) == 0 })
}

// LockID is the 64-bit lock number of key in outbox table t (PostgreSQL's
// advisory locks): FNV-1a over the table's name, the topic and the key.
// Two keys that share a number only wait for each other.
func LockID(t dialects.Table, k Key) int64 {
	h := uint64(14695981039346656037)
	add := func(b []byte) {
		for _, c := range b {
			h ^= uint64(c)
			h *= 1099511628211
		}
		h ^= 0xff // separator
		h *= 1099511628211
	}
	add([]byte(t.String()))
	add([]byte(k.Topic))
	add(k.Key)
	return int64(h)
}

// Locker is the dialect's statement that takes the locks of keys (sorted)
// until q's transaction ends.
type Locker interface {
	LockKeys(ctx context.Context, q dialects.Conn, t dialects.Table, keys []Key) error
}

// InTx runs f on q, or, when q is a *sql.DB, in a transaction of its own:
// a key lock is held until its transaction ends, so it must be the
// insert's.
func InTx(ctx context.Context, q dialects.Conn, f func(q dialects.Conn) error) error {
	db, ok := q.(*sql.DB)
	if !ok {
		return f(q)
	}
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := f(tx); err != nil {
		_ = tx.Rollback()
		return err
	}
	return tx.Commit()
}

// Dialect is what Source and Renumber need of a dialect.
type Dialect interface {
	Quote(ident string) string
	Placeholder(n int) string
}

// Source reads the source of t's numbers: the random number Migrate
// stored under the empty topic and key of the keys table (no Kafka topic
// is empty), 0 when there is none (a table not migrated that far).
func Source(ctx context.Context, db *sql.DB, d Dialect, t dialects.Table) (int64, error) {
	var v int64
	err := db.QueryRowContext(ctx, `SELECT seq FROM `+Table(t).Qualified(d)+` WHERE topic = `+d.Placeholder(1)+
		` AND msg_key = `+d.Placeholder(2), "", []byte{}).Scan(&v)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sequence source of %s: %w", t, err)
	}
	return v, nil
}

// Renumber gives the replayed rows ids (pending again, in tx) and the
// pending rows of their keys after them new numbers, in id order, above
// every id the table has handed out. A replayed row may have been passed
// by later rows of its key (RelayConfig.SkipDeadKeys), which a consumer
// has applied: its old number would make it look stale. The rows that
// waited behind it (the default) keep their order. The numbers are drawn
// from the table's own id sequence, by inserting and deleting as many
// placeholder rows in tx (never visible to anyone): a row captured later
// takes a higher id, so a higher number.
func Renumber(ctx context.Context, tx *sql.Tx, d Dialect, t dialects.Table, ids []int64) error {
	q := t.Qualified(d)
	rows, err := tx.QueryContext(ctx, `SELECT o.id FROM `+q+` o
WHERE o.`+strings.ReplaceAll(rowsql.PendingWhere, " AND ", " AND o.")+` AND o.msg_key IS NOT NULL
	AND EXISTS (SELECT 1 FROM `+q+` r WHERE r.id IN (`+rowsql.IDList(ids)+`)
		AND r.topic = o.topic AND r.msg_key = o.msg_key AND r.id <= o.id)
ORDER BY o.id FOR UPDATE`)
	if err != nil {
		return fmt.Errorf("renumber replayed rows: %w", err)
	}
	var renumber []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("renumber replayed rows: %w", err)
		}
		renumber = append(renumber, id)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("renumber replayed rows: %w", err)
	}
	if len(renumber) == 0 {
		return nil
	}
	nums, err := draw(ctx, tx, d, t, len(renumber))
	if err != nil {
		return fmt.Errorf("renumber replayed rows: %w", err)
	}
	var b strings.Builder
	b.WriteString(`UPDATE ` + q + ` SET seq = CASE id`)
	for i, id := range renumber {
		b.WriteString(" WHEN " + strconv.FormatInt(id, 10) + " THEN " + strconv.FormatInt(nums[i], 10))
	}
	b.WriteString(` END WHERE id IN (` + rowsql.IDList(renumber) + `)`)
	if _, err := tx.ExecContext(ctx, b.String()); err != nil {
		return fmt.Errorf("renumber replayed rows: %w", err)
	}
	return nil
}

// draw takes n new ids of t's id sequence, in increasing order, through
// placeholder rows inserted and deleted in tx.
func draw(ctx context.Context, tx *sql.Tx, d Dialect, t dialects.Table, n int) ([]int64, error) {
	q := t.Qualified(d)
	far := time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)
	var b strings.Builder
	b.WriteString(`INSERT INTO ` + q + ` (event_id, topic, event_type, payload, headers, available_at, created_at) VALUES `)
	args := make([]any, 0, 4*n)
	next := func(v any) string {
		args = append(args, v)
		return d.Placeholder(len(args))
	}
	placeholders := make([]string, 0, n)
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteString(", ")
		}
		id := placeholderID()
		b.WriteString("(" + next(id) + ", '', '', " + next([]byte{}) + ", '{}', " + next(far) + ", " + next(far) + ")")
		placeholders = append(placeholders, "'"+id+"'")
	}
	stmt := b.String()
	if _, err := tx.ExecContext(ctx, stmt, args...); err != nil {
		return nil, fmt.Errorf("draw %d numbers: %w", n, err)
	}
	in := strings.Join(placeholders, ", ")
	rows, err := tx.QueryContext(ctx, `SELECT id FROM `+q+` WHERE event_id IN (`+in+`) ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("draw %d numbers: %w", n, err)
	}
	var nums []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return nil, fmt.Errorf("draw %d numbers: %w", n, err)
		}
		nums = append(nums, id)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("draw %d numbers: %w", n, err)
	}
	if len(nums) != n {
		return nil, fmt.Errorf("draw %d numbers: read back %d", n, len(nums))
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM `+q+` WHERE id IN (`+rowsql.IDList(nums)+`)`); err != nil {
		return nil, fmt.Errorf("draw %d numbers: %w", n, err)
	}
	return nums, nil
}

// placeholderID is a random UUID (version 4) text for a placeholder row.
func placeholderID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
