// Package sequence numbers outbox rows per (topic, key): the counters
// live in the outbox table's "_sequences" sibling, one row per key, and
// each dialect bumps them in its own statement (Bumper). This package
// plans which counters a batch of records needs, turns the counters'
// new values into the records' numbers, and renumbers replayed rows.
package sequence

import (
	"bytes"
	"cmp"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/rowsql"
)

// Suffix names the counters' table beside the outbox table.
const Suffix = "_sequences"

// Table is the counters' table of outbox table t.
func Table(t dialects.Table) dialects.Table { return t.Sibling(Suffix) }

// Key is one counter to bump: N numbers wanted for (Topic, Key).
type Key struct {
	Topic string
	Key   []byte
	N     int64
}

// Plan is what a batch of records needs: the counters, sorted by topic
// and key (every writer locks them in this one order, so two writers
// cannot deadlock on them), and for each record the counter it draws
// from (-1 for none) and its place among that counter's records (1…N).
type Plan struct {
	Keys []Key
	Of   []int
	Nth  []int64
}

// Needs reports whether r takes a number.
func Needs(r *dialects.Record) bool { return r.Key != nil && !r.NoSequence }

// NewPlan plans recs; Plan.Keys is empty when no record takes a number.
func NewPlan(recs []dialects.Record) Plan {
	p := Plan{Of: make([]int, len(recs)), Nth: make([]int64, len(recs))}
	for i := range recs {
		p.Of[i] = -1
		r := &recs[i]
		if !Needs(r) {
			continue
		}
		// Few distinct keys per batch in most services; a linear search
		// over the last ones is cheaper than a map for small batches.
		k := -1
		for j := len(p.Keys) - 1; j >= 0; j-- {
			if p.Keys[j].Topic == r.Topic && bytes.Equal(p.Keys[j].Key, r.Key) {
				k = j
				break
			}
			if len(p.Keys)-j > 8 {
				k = p.find(r)
				break
			}
		}
		if k < 0 {
			p.Keys = append(p.Keys, Key{Topic: r.Topic, Key: r.Key})
			k = len(p.Keys) - 1
		}
		p.Keys[k].N++
		p.Of[i], p.Nth[i] = k, p.Keys[k].N
	}
	if len(p.Keys) > 1 {
		order := make([]int, len(p.Keys))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int { return Compare(p.Keys[a], p.Keys[b]) })
		sorted := make([]Key, len(p.Keys))
		where := make([]int, len(p.Keys))
		for to, from := range order {
			sorted[to], where[from] = p.Keys[from], to
		}
		p.Keys = sorted
		for i, k := range p.Of {
			if k >= 0 {
				p.Of[i] = where[k]
			}
		}
	}
	return p
}

func (p *Plan) find(r *dialects.Record) int {
	for j := range p.Keys {
		if p.Keys[j].Topic == r.Topic && bytes.Equal(p.Keys[j].Key, r.Key) {
			return j
		}
	}
	return -1
}

// Compare orders counters by topic, then key bytes.
func Compare(a, b Key) int {
	if c := cmp.Compare(a.Topic, b.Topic); c != 0 {
		return c
	}
	return bytes.Compare(a.Key, b.Key)
}

// Numbers turns the counters' values after the bump (last[k], in
// Plan.Keys order) into each record's number, 0 for records without one.
func (p Plan) Numbers(last []int64) []int64 {
	seqs := make([]int64, len(p.Of))
	for i, k := range p.Of {
		if k >= 0 {
			seqs[i] = last[k] - p.Keys[k].N + p.Nth[i]
		}
	}
	return seqs
}

// Bumper is the dialect's statement that adds N to each counter (creating
// it at N), locking its row until q's transaction ends, and returns the
// counters' new values in the order of keys.
type Bumper interface {
	Bump(ctx context.Context, q dialects.Conn, t dialects.Table, keys []Key) ([]int64, error)
}

// Dialect is what Renumber needs of a dialect.
type Dialect interface {
	Quote(ident string) string
	Placeholder(n int) string
}

// Renumber gives new numbers to the replayed rows ids (now pending again,
// in tx) whose key has gone past them, and to the pending rows of those
// keys after them, in id order, after the key's last number. A key has
// gone past a replayed row numbered s when some number after s is held by
// no pending or dead row: a row numbered after it was published (or
// deleted) — which ClaimOptions.SkipDeadKeys allows. A key that has not
// (its later rows wait behind the dead one, the default) keeps its
// numbers: a consumer has applied none of them.
func Renumber(ctx context.Context, tx *sql.Tx, d Dialect, t dialects.Table, ids []int64) error {
	q, s := t.Qualified(d), Table(t).Qualified(d)
	rows, err := tx.QueryContext(ctx, `SELECT k.topic, k.msg_key, k.id FROM (
	SELECT topic, msg_key, MIN(id) AS id, MIN(seq) AS s FROM `+q+`
	WHERE id IN (`+rowsql.IDList(ids)+`) AND seq IS NOT NULL AND msg_key IS NOT NULL
	GROUP BY topic, msg_key) k
JOIN `+s+` c ON c.topic = k.topic AND c.msg_key = k.msg_key
WHERE c.seq - k.s > (SELECT COUNT(*) FROM `+q+` o WHERE o.topic = k.topic AND o.msg_key = k.msg_key
	AND o.published_at IS NULL AND o.seq > k.s)`)
	if err != nil {
		return fmt.Errorf("renumber replayed rows: %w", err)
	}
	type gone struct {
		key Key
		id  int64
	}
	var keys []gone
	for rows.Next() {
		var g gone
		if err := rows.Scan(&g.key.Topic, &g.key.Key, &g.id); err != nil {
			rows.Close()
			return fmt.Errorf("renumber replayed rows: %w", err)
		}
		keys = append(keys, g)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("renumber replayed rows: %w", err)
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("renumber replayed rows: %w", err)
	}
	// In the writers' order of counters (see Plan).
	slices.SortFunc(keys, func(a, b gone) int { return Compare(a.key, b.key) })
	for _, g := range keys {
		if err := renumberKey(ctx, tx, d, t, g.key, g.id); err != nil {
			return err
		}
	}
	return nil
}

// renumberKey numbers the pending rows of key from id on after the key's
// last number.
func renumberKey(ctx context.Context, tx *sql.Tx, d Dialect, t dialects.Table, key Key, from int64) error {
	q := t.Qualified(d)
	rows, err := tx.QueryContext(ctx, `SELECT id FROM `+q+` WHERE topic = `+d.Placeholder(1)+
		` AND msg_key = `+d.Placeholder(2)+` AND id >= `+d.Placeholder(3)+
		` AND `+rowsql.PendingWhere+` AND seq IS NOT NULL ORDER BY id FOR UPDATE`, key.Topic, key.Key, from)
	if err != nil {
		return fmt.Errorf("renumber replayed rows of key %q: %w", key.Key, err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return fmt.Errorf("renumber replayed rows of key %q: %w", key.Key, err)
		}
		ids = append(ids, id)
	}
	if err := rows.Close(); err != nil {
		return fmt.Errorf("renumber replayed rows of key %q: %w", key.Key, err)
	}
	if len(ids) == 0 {
		return nil
	}
	// The counter exists (the rows took numbers from it): an UPDATE, which
	// an operator's role may run with UPDATE alone, then a read of it.
	n := int64(len(ids))
	s, where := Table(t).Qualified(d), ` WHERE topic = `+d.Placeholder(2)+` AND msg_key = `+d.Placeholder(3)
	if _, err := tx.ExecContext(ctx, `UPDATE `+s+` SET seq = seq + `+d.Placeholder(1)+where, n, key.Topic, key.Key); err != nil {
		return fmt.Errorf("renumber replayed rows of key %q: %w", key.Key, err)
	}
	var last int64
	if err := tx.QueryRowContext(ctx, `SELECT seq FROM `+s+` WHERE topic = `+d.Placeholder(1)+
		` AND msg_key = `+d.Placeholder(2), key.Topic, key.Key).Scan(&last); err != nil {
		return fmt.Errorf("renumber replayed rows of key %q: %w", key.Key, err)
	}
	var b strings.Builder
	b.WriteString(`UPDATE ` + q + ` SET seq = CASE id`)
	first := last - n + 1
	for i, id := range ids {
		b.WriteString(" WHEN " + strconv.FormatInt(id, 10) + " THEN " + strconv.FormatInt(first+int64(i), 10))
	}
	b.WriteString(` END WHERE id IN (` + rowsql.IDList(ids) + `)`)
	if _, err := tx.ExecContext(ctx, b.String()); err != nil {
		return fmt.Errorf("renumber replayed rows of key %q: %w", key.Key, err)
	}
	return nil
}

// InTx runs f on q, or, when q is a *sql.DB, in a transaction of its own:
// the counters' bump and the rows' insert must commit together.
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

// ScanLast reads rows of (topic, msg_key, seq), one per counter of keys
// (sorted by Compare), and returns the values in the order of keys.
func ScanLast(rows *sql.Rows, keys []Key) ([]int64, error) {
	defer rows.Close()
	last := make([]int64, len(keys))
	seen := 0
	for rows.Next() {
		var k Key
		var v int64
		if err := rows.Scan(&k.Topic, &k.Key, &v); err != nil {
			return nil, err
		}
		i, ok := slices.BinarySearchFunc(keys, k, Compare)
		if !ok {
			return nil, fmt.Errorf("counter of topic %q key %q: not asked for", k.Topic, k.Key)
		}
		last[i] = v
		seen++
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if seen != len(keys) {
		return nil, fmt.Errorf("%d counters read back, want %d", seen, len(keys))
	}
	return last, nil
}

// Source reads the source of t's counters: the random number Migrate
// stored under the empty topic and key (no Kafka topic is empty), 0 when
// there is none (a table not migrated to the counters' version).
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
