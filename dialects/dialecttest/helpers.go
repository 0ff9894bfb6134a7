package dialecttest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/rowscan"
)

// shards is the shard count of the suite's outbox tables.
const shards = 4

// outboxEnv is one case's database, with a migrated outbox table.
type outboxEnv struct {
	t     testing.TB
	ctx   context.Context
	d     dialects.Dialect
	db    *sql.DB
	table dialects.Table
	// now is the case's clock: rows are due relative to it, and every
	// call that takes a time is given one derived from it.
	now time.Time
}

// newOutboxEnv opens a fresh database for t and migrates an outbox table in it.
func newOutboxEnv(t testing.TB, h Harness) *outboxEnv {
	t.Helper()
	e := bareOutboxEnv(t, h)
	if err := e.d.Migrate(e.ctx, e.db, e.table); err != nil {
		t.Fatalf("Migrate %s: %v", e.table, err)
	}
	return e
}

// bareOutboxEnv is newOutboxEnv without the migration.
func bareOutboxEnv(t testing.TB, h Harness) *outboxEnv {
	t.Helper()
	return &outboxEnv{
		t:     t,
		ctx:   context.Background(),
		d:     h.Dialect,
		db:    h.Open(t),
		table: dialects.Table{Name: "outbox"},
		// Microseconds: what both databases keep.
		now: time.Now().UTC().Truncate(time.Millisecond),
	}
}

// newEventID returns a random UUID (version 4) string.
func newEventID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// rec returns a record of topic and key (nil: none), due a second before
// the case's clock.
func (e *outboxEnv) rec(topic string, key []byte) dialects.Record {
	shard := 0
	if key != nil {
		shard = int(dialects.HashKey(key) % shards)
	}
	return dialects.Record{
		EventID:       newEventID(),
		Topic:         topic,
		Key:           key,
		EventType:     "Tested",
		AggregateType: "Thing",
		AggregateID:   "1",
		Payload:       []byte(`{"n":1}`),
		Shard:         shard,
		CreatedAt:     e.now.Add(-time.Minute),
		AvailableAt:   e.now.Add(-time.Second),
	}
}

// insert writes recs and returns their ids, in order.
func (e *outboxEnv) insert(recs ...dialects.Record) []int64 {
	e.t.Helper()
	before := e.maxID()
	if err := e.d.Insert(e.ctx, e.db, e.table, recs); err != nil {
		e.t.Fatalf("Insert %d records: %v", len(recs), err)
	}
	var ids []int64
	for _, r := range e.rows() {
		if r.ID > before {
			ids = append(ids, r.ID)
		}
	}
	if len(ids) != len(recs) {
		e.t.Fatalf("Insert of %d records added %d rows", len(recs), len(ids))
	}
	return ids
}

// keyed inserts n rows of topic and key and returns their ids.
func (e *outboxEnv) keyed(topic, key string, n int) []int64 {
	e.t.Helper()
	recs := make([]dialects.Record, n)
	for i := range recs {
		var k []byte
		if key != "" {
			k = []byte(key)
		}
		recs[i] = e.rec(topic, k)
	}
	return e.insert(recs...)
}

// outboxRow is a row as the suite reads it back: the relay's view of it and
// the acknowledgement columns the relay does not read.
type outboxRow struct {
	dialects.Row
	AckTopic    string
	ProcessedAt *time.Time
}

// rows reads every row of the outbox table, in id order (SQL both
// dialects accept: the suite checks what the dialect's methods did, not
// how).
func (e *outboxEnv) rows() []outboxRow {
	e.t.Helper()
	q := e.table.Qualified(e.d)
	rs, err := e.db.QueryContext(e.ctx, `SELECT `+rowscan.Columns+` FROM `+q+` ORDER BY id`)
	if err != nil {
		e.t.Fatalf("read %s: %v", e.table, err)
	}
	all, err := rowscan.Rows(rs, 16)
	if err != nil {
		e.t.Fatalf("read %s: %v", e.table, err)
	}
	extra, err := e.db.QueryContext(e.ctx, `SELECT id, ack_topic, processed_at FROM `+q+` ORDER BY id`)
	if err != nil {
		e.t.Fatalf("read %s: %v", e.table, err)
	}
	defer extra.Close()
	out := make([]outboxRow, 0, len(all))
	for i := 0; extra.Next(); i++ {
		var (
			id  int64
			ack sql.NullString
			at  rowscan.Time
		)
		if err := extra.Scan(&id, &ack, &at); err != nil {
			e.t.Fatalf("read %s: %v", e.table, err)
		}
		if i >= len(all) || all[i].ID != id {
			e.t.Fatalf("read %s: rows changed between two reads", e.table)
		}
		s := outboxRow{Row: all[i], AckTopic: ack.String}
		if at.Valid {
			tm := at.Time
			s.ProcessedAt = &tm
		}
		out = append(out, s)
	}
	if err := extra.Err(); err != nil {
		e.t.Fatalf("read %s: %v", e.table, err)
	}
	return out
}

// row reads the row of id.
func (e *outboxEnv) row(id int64) outboxRow {
	e.t.Helper()
	for _, r := range e.rows() {
		if r.ID == id {
			return r
		}
	}
	e.t.Fatalf("row %d is not in %s", id, e.table)
	return outboxRow{}
}

// has reports whether row id is in the table.
func (e *outboxEnv) has(id int64) bool {
	e.t.Helper()
	for _, r := range e.rows() {
		if r.ID == id {
			return true
		}
	}
	return false
}

func (e *outboxEnv) maxID() int64 {
	e.t.Helper()
	var id sql.NullInt64
	if err := e.db.QueryRowContext(e.ctx, `SELECT MAX(id) FROM `+e.table.Qualified(e.d)).Scan(&id); err != nil {
		e.t.Fatalf("read %s: %v", e.table, err)
	}
	return id.Int64
}

// open starts a pass over every shard (unless o says otherwise), closed
// when the case ends.
func (e *outboxEnv) open(o dialects.ClaimOptions) dialects.Pass {
	e.t.Helper()
	if o.Shards == 0 {
		o.Shards = shards
	}
	p, err := e.d.Open(e.ctx, e.db, e.table, o)
	if err != nil {
		e.t.Fatalf("Open(%+v): %v", o, err)
	}
	e.t.Cleanup(func() { _ = p.Close() })
	return p
}

// claim runs one claim on p at at.
func (e *outboxEnv) claim(p dialects.Pass, at time.Time, limit int) []dialects.Row {
	e.t.Helper()
	rows, err := p.Claim(e.ctx, at, limit)
	if err != nil {
		e.t.Fatalf("Claim(limit %d): %v", limit, err)
	}
	if len(rows) > limit {
		e.t.Fatalf("Claim(limit %d) returned %d rows", limit, len(rows))
	}
	return rows
}

// claimAll claims, on a pass of its own, everything due at at (up to
// 1000 rows), and closes the pass without finishing.
func (e *outboxEnv) claimAll(at time.Time) []int64 {
	e.t.Helper()
	p := e.open(dialects.ClaimOptions{})
	defer p.Close()
	return idsOf(e.claim(p, at, 1000))
}

// publish claims everything due at the case's clock on a pass of its own,
// marks it published at at, and returns the ids.
func (e *outboxEnv) publish(at time.Time) []int64 {
	e.t.Helper()
	p := e.open(dialects.ClaimOptions{})
	defer p.Close()
	rows := e.claim(p, e.now, 1000)
	if len(rows) == 0 {
		return nil
	}
	if err := p.Finish(e.ctx, dialects.Outcome{Now: at, Published: idsOf(rows)}); err != nil {
		e.t.Fatalf("Finish: %v", err)
	}
	return idsOf(rows)
}

// kill dead-letters rows (which must be due at the case's clock) at at.
func (e *outboxEnv) kill(at time.Time, want ...int64) {
	e.t.Helper()
	p := e.open(dialects.ClaimOptions{})
	defer p.Close()
	rows := e.claim(p, e.now, 1000)
	o := dialects.Outcome{Now: at}
	for _, r := range rows {
		if slices.Contains(want, r.ID) {
			o.Retries = append(o.Retries, dialects.Retry{ID: r.ID, Attempts: r.Attempts + 1, Dead: true, Error: "refused"})
			o.Keys = append(o.Keys, dialects.TopicKey{Topic: r.Topic, Key: r.Key})
		}
	}
	if len(o.Retries) != len(want) {
		e.t.Fatalf("kill %v: claimed %v", want, idsOf(rows))
	}
	if err := p.Finish(e.ctx, o); err != nil {
		e.t.Fatalf("Finish: %v", err)
	}
}

// ids returns the ids of rows.
func idsOf(rows []dialects.Row) []int64 {
	out := make([]int64, len(rows))
	for i, r := range rows {
		out[i] = r.ID
	}
	return out
}

// sameTime compares times at the microsecond both databases keep.
func sameTime(a, b time.Time) bool {
	return a.Truncate(time.Microsecond).Equal(b.Truncate(time.Microsecond))
}

// outboxCase runs f as a parallel subtest named name.
func outboxCase(t *testing.T, name string, f func(t *testing.T)) {
	t.Run(name, func(t *testing.T) {
		t.Parallel()
		f(t)
	})
}
