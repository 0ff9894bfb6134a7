package dialecttest

import (
	"context"
	"database/sql"
	"maps"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// runInbox runs the inbox cases: the inbox table (migrate, record, skip,
// un-record, park, dead letters, replay, cleanup) and the savepoints a
// handler runs behind (inbox_savepoint.go).
func runInbox(t *testing.T, h Harness) {
	t.Run("Migrate", func(t *testing.T) { inboxMigrate(t, h) })
	t.Run("Record", func(t *testing.T) { inboxRecord(t, h) })
	t.Run("Unrecord", func(t *testing.T) { inboxUnrecord(t, h) })
	t.Run("Park", func(t *testing.T) { inboxPark(t, h) })
	t.Run("DeadLetters", func(t *testing.T) { inboxDeadLetters(t, h) })
	t.Run("Revive", func(t *testing.T) { inboxRevive(t, h) })
	t.Run("Cleanup", func(t *testing.T) { inboxCleanup(t, h) })
	t.Run("Savepoints", func(t *testing.T) { inboxSavepoints(t, h) })
	t.Run("FoldsRelease", func(t *testing.T) { inboxFoldsRelease(t, h) })
	t.Run("Hostile", func(t *testing.T) { runInboxHostile(t, h) })
}

// inboxT0 is the suite's clock: microseconds, as both databases keep.
func inboxT0() time.Time { return time.Date(2026, 3, 1, 12, 0, 0, 123456000, time.UTC) }

// inboxEnv is a migrated inbox table on a fresh database.
type inboxEnv struct {
	h     Harness
	d     dialects.Dialect
	db    *sql.DB
	table dialects.Table
	ctx   context.Context
}

func newInboxEnv(t *testing.T, h Harness) *inboxEnv {
	t.Helper()
	e := &inboxEnv{h: h, d: h.Dialect, db: h.Open(t), table: dialects.Table{Name: "consumed"}, ctx: context.Background()}
	if err := e.d.MigrateSteps(e.ctx, e.db, e.table, e.d.InboxMigrations(e.table)); err != nil {
		t.Fatalf("migrate the inbox table: %v", err)
	}
	return e
}

// msgs returns messages of topic "t" with the event ids given, offsets in
// order.
func inboxMsgs(ids ...string) []dialects.InboxMessage {
	ms := make([]dialects.InboxMessage, len(ids))
	for i, id := range ids {
		ms[i] = dialects.InboxMessage{EventID: id, Topic: "t", Partition: i % 3, Offset: int64(100 + i)}
	}
	return ms
}

// record records ids for consumer at now in its own transaction and
// returns the fresh ids, sorted.
func (e *inboxEnv) record(t *testing.T, consumer string, now time.Time, ids ...string) []string {
	t.Helper()
	tx, err := e.db.BeginTx(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	fresh, err := e.d.InboxRecord(e.ctx, tx, dialects.InboxRecordParams{Table: e.table, Consumer: consumer, Messages: inboxMsgs(ids...), Now: now})
	if err != nil {
		t.Fatalf("record %v for %s: %v", ids, consumer, err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return inboxSet(fresh)
}

func inboxSet(m map[string]bool) []string {
	var out []string
	for id, ok := range m {
		if ok {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// count counts the rows of the inbox table with status ("" for all).
func (e *inboxEnv) count(t *testing.T, status string) int {
	t.Helper()
	q := `SELECT COUNT(*) FROM ` + e.table.Qualified(e.d)
	var args []any
	if status != "" {
		q += ` WHERE status = ` + e.d.Placeholder(1)
		args = append(args, status)
	}
	var n int
	if err := e.db.QueryRowContext(e.ctx, q, args...).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func (e *inboxEnv) dead(t *testing.T, consumer string, limit int, ids ...string) []dialects.InboxDeadLetter {
	t.Helper()
	dl, err := e.d.InboxDeadLetters(e.ctx, e.db, dialects.InboxDeadQuery{Table: e.table, Consumer: consumer, EventIDs: ids, Limit: limit})
	if err != nil {
		t.Fatalf("dead letters of %s: %v", consumer, err)
	}
	return dl
}

func (e *inboxEnv) park(t *testing.T, dl dialects.InboxDeadLetter) {
	t.Helper()
	if err := e.d.InboxPark(e.ctx, e.db, e.table, dl); err != nil {
		t.Fatalf("park %s: %v", dl.EventID, err)
	}
}

func inboxLetter(consumer, id string, at time.Time) dialects.InboxDeadLetter {
	return dialects.InboxDeadLetter{Consumer: consumer, EventID: id, Topic: "t", Partition: 2, Offset: 7,
		Key: []byte("k-" + id), Value: []byte("v-" + id), Headers: map[string]string{"event-id": id},
		Attempts: 10, LastError: "handler failed on " + id, ParkedAt: at}
}

func deadIDs(dl []dialects.InboxDeadLetter) []string {
	var out []string
	for _, d := range dl {
		out = append(out, d.EventID)
	}
	return out
}

// Migrate is idempotent and versioned: the second run finds nothing to
// do, and SchemaVersion reports the last step.
func inboxMigrate(t *testing.T, h Harness) {
	ctx := context.Background()
	d, db := h.Dialect, h.Open(t)
	table := dialects.Table{Name: "consumed"}
	steps := d.InboxMigrations(table)
	if len(steps) == 0 {
		t.Fatal("InboxMigrations returned no step")
	}
	last := steps[len(steps)-1].Version
	if v, err := d.SchemaVersion(ctx, db, table); err != nil || v != 0 {
		t.Fatalf("SchemaVersion before Migrate = %d, %v; want 0", v, err)
	}
	for i := range 2 {
		if err := d.MigrateSteps(ctx, db, table, steps); err != nil {
			t.Fatalf("migrate #%d: %v", i+1, err)
		}
		if v, err := d.SchemaVersion(ctx, db, table); err != nil || v != last {
			t.Fatalf("SchemaVersion after migrate #%d = %d, %v; want %d", i+1, v, err, last)
		}
	}
	// Concurrent runs wait for each other.
	other := dialects.Table{Name: "consumed_too"}
	errs := make(chan error, 3)
	for range 3 {
		go func() { errs <- d.MigrateSteps(ctx, db, other, d.InboxMigrations(other)) }()
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent migrate: %v", err)
		}
	}
	// The table holds what the inbox writes.
	e := &inboxEnv{h: h, d: d, db: db, table: other, ctx: ctx}
	if got := e.record(t, "c", inboxT0(), "a"); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("record on the migrated table: fresh %v", got)
	}
}

// Record returns the ids it recorded: not those the consumer recorded in
// an earlier batch, but those another consumer did.
func inboxRecord(t *testing.T, h Harness) {
	e := newInboxEnv(t, h)
	if got := e.record(t, "c1", inboxT0()); len(got) != 0 {
		t.Fatalf("empty batch: fresh %v", got)
	}
	if got := e.record(t, "c1", inboxT0(), "a", "b", "c"); !slices.Equal(got, []string{"a", "b", "c"}) {
		t.Fatalf("first batch: fresh %v, want [a b c]", got)
	}
	// Duplicates and new ids in one batch: only the new are fresh.
	if got := e.record(t, "c1", inboxT0(), "b", "d", "a", "e"); !slices.Equal(got, []string{"d", "e"}) {
		t.Fatalf("second batch: fresh %v, want [d e]", got)
	}
	if got := e.record(t, "c1", inboxT0(), "a", "b", "c", "d", "e"); len(got) != 0 {
		t.Fatalf("all duplicates: fresh %v, want none", got)
	}
	// Consumers deduplicate apart.
	if got := e.record(t, "c2", inboxT0(), "a", "z"); !slices.Equal(got, []string{"a", "z"}) {
		t.Fatalf("other consumer: fresh %v, want [a z]", got)
	}
	if n := e.count(t, "done"); n != 7 {
		t.Fatalf("%d done records, want 7", n)
	}
	// A rolled-back batch records nothing.
	tx, err := e.db.BeginTx(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.d.InboxRecord(e.ctx, tx, dialects.InboxRecordParams{Table: e.table, Consumer: "c1", Messages: inboxMsgs("f"), Now: inboxT0()}); err != nil {
		t.Fatal(err)
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if got := e.record(t, "c1", inboxT0(), "f"); !slices.Equal(got, []string{"f"}) {
		t.Fatalf("after a rolled-back record: fresh %v, want [f]", got)
	}
	// A large batch (the inbox's BatchSize goes up to 1,000).
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = "big-" + time.Duration(i).String()
	}
	if got := e.record(t, "c3", inboxT0(), ids...); len(got) != len(ids) {
		t.Fatalf("batch of %d: %d fresh", len(ids), len(got))
	}
}

// Unrecord removes the records of a failed message and those behind it,
// in the batch's transaction: they are fresh again.
func inboxUnrecord(t *testing.T, h Harness) {
	e := newInboxEnv(t, h)
	e.record(t, "c2", inboxT0(), "a")
	tx, err := e.db.BeginTx(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	fresh, err := e.d.InboxRecord(e.ctx, tx, dialects.InboxRecordParams{Table: e.table, Consumer: "c1", Messages: inboxMsgs("a", "b", "c"), Now: inboxT0()})
	if err != nil || len(fresh) != 3 {
		t.Fatalf("record: %v, %v", fresh, err)
	}
	if err := e.d.InboxUnrecord(e.ctx, tx, dialects.InboxUnrecordParams{Table: e.table, Consumer: "c1", EventIDs: []string{"b", "c"}}); err != nil {
		t.Fatal(err)
	}
	if err := e.d.InboxUnrecord(e.ctx, tx, dialects.InboxUnrecordParams{Table: e.table, Consumer: "c1"}); err != nil {
		t.Fatalf("unrecord of no id: %v", err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := e.record(t, "c1", inboxT0(), "a", "b", "c"); !slices.Equal(got, []string{"b", "c"}) {
		t.Fatalf("after unrecord: fresh %v, want [b c]", got)
	}
	// Another consumer's record of the same id stays.
	if got := e.record(t, "c2", inboxT0(), "a"); len(got) != 0 {
		t.Fatalf("c2's record of a is gone: fresh %v", got)
	}
}

// Park keeps the message's content, attempts and last error; a record
// that exists (done or dead) is left as it is.
func inboxPark(t *testing.T, h Harness) {
	e := newInboxEnv(t, h)
	want := inboxLetter("c1", "p1", inboxT0())
	e.park(t, want)
	noKey := inboxLetter("c1", "p2", inboxT0().Add(time.Second))
	noKey.Key, noKey.Headers, noKey.LastError = nil, nil, ""
	e.park(t, noKey)
	// Parked again (another process, say): the first content stays.
	again := inboxLetter("c1", "p1", inboxT0().Add(time.Hour))
	again.Attempts, again.LastError, again.Value = 3, "other", []byte("other")
	e.park(t, again)
	// A message recorded done is not parked over.
	e.record(t, "c1", inboxT0(), "done1")
	e.park(t, inboxLetter("c1", "done1", inboxT0()))

	got := e.dead(t, "c1", 10)
	if len(got) != 2 {
		t.Fatalf("dead letters %v, want p1 and p2", deadIDs(got))
	}
	if !inboxLetterEqual(got[0], want) {
		t.Errorf("dead letter\n%+v\nwant\n%+v", got[0], want)
	}
	noKey.Headers = map[string]string{}
	if !inboxLetterEqual(got[1], noKey) || got[1].Key != nil {
		t.Errorf("dead letter without key\n%+v\nwant\n%+v", got[1], noKey)
	}
	if n := e.count(t, "done"); n != 1 {
		t.Errorf("%d done records, want 1 (done1)", n)
	}
	// A parked message is a record: recording it again is a duplicate.
	if got := e.record(t, "c1", inboxT0(), "p1", "new"); !slices.Equal(got, []string{"new"}) {
		t.Errorf("record after park: fresh %v, want [new]", got)
	}
}

func inboxLetterEqual(a, b dialects.InboxDeadLetter) bool {
	return a.Consumer == b.Consumer && a.EventID == b.EventID && a.Topic == b.Topic && a.Partition == b.Partition &&
		a.Offset == b.Offset && string(a.Key) == string(b.Key) && string(a.Value) == string(b.Value) &&
		maps.Equal(a.Headers, b.Headers) && a.Attempts == b.Attempts && a.LastError == b.LastError &&
		a.ParkedAt.Equal(b.ParkedAt)
}

// DeadLetters lists a consumer's parked messages oldest first, up to the
// limit or those asked for.
func inboxDeadLetters(t *testing.T, h Harness) {
	e := newInboxEnv(t, h)
	if got := e.dead(t, "c1", 10); len(got) != 0 {
		t.Fatalf("dead letters of an empty table: %v", deadIDs(got))
	}
	// Parked out of order; two at the same time are ordered by id.
	for _, p := range []struct {
		id string
		at time.Duration
	}{{"d3", 3}, {"d1", 1}, {"d5", 5}, {"d2b", 2}, {"d2a", 2}, {"d4", 4}} {
		e.park(t, inboxLetter("c1", p.id, inboxT0().Add(p.at*time.Minute)))
	}
	e.park(t, inboxLetter("c2", "other", inboxT0()))
	e.record(t, "c1", inboxT0(), "done1")

	all := []string{"d1", "d2a", "d2b", "d3", "d4", "d5"}
	if got := deadIDs(e.dead(t, "c1", 100)); !slices.Equal(got, all) {
		t.Fatalf("dead letters %v, want %v", got, all)
	}
	if got := deadIDs(e.dead(t, "c1", 2)); !slices.Equal(got, all[:2]) {
		t.Fatalf("limit 2: %v, want %v", got, all[:2])
	}
	if got := deadIDs(e.dead(t, "c1", 100, "d4", "d1", "done1", "other", "nope")); !slices.Equal(got, []string{"d1", "d4"}) {
		t.Fatalf("by ids: %v, want [d1 d4]", got)
	}
	if got := deadIDs(e.dead(t, "c1", 1, "d4", "d1")); !slices.Equal(got, []string{"d1"}) {
		t.Fatalf("by ids, limit 1: %v, want [d1]", got)
	}
	if got := deadIDs(e.dead(t, "c2", 100)); !slices.Equal(got, []string{"other"}) {
		t.Fatalf("c2's dead letters: %v, want [other]", got)
	}
}

// Revive (the replay of a parked message) turns the dead record into a
// done one, in the caller's transaction.
func inboxRevive(t *testing.T, h Harness) {
	e := newInboxEnv(t, h)
	e.park(t, inboxLetter("c1", "p1", inboxT0()))
	e.park(t, inboxLetter("c1", "p2", inboxT0()))
	e.park(t, inboxLetter("c2", "p1", inboxT0()))
	e.record(t, "c1", inboxT0(), "done1")
	revive := func(q dialects.Execer, consumer, id string) bool {
		t.Helper()
		ok, err := e.d.InboxRevive(e.ctx, q, dialects.InboxReviveParams{Table: e.table, Consumer: consumer, EventID: id, Now: inboxT0().Add(time.Hour)})
		if err != nil {
			t.Fatalf("revive %s of %s: %v", id, consumer, err)
		}
		return ok
	}
	// Rolled back: still parked.
	tx, err := e.db.BeginTx(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !revive(tx, "c1", "p1") {
		t.Fatal("revive of a parked message in a transaction: false")
	}
	if err := tx.Rollback(); err != nil {
		t.Fatal(err)
	}
	if got := deadIDs(e.dead(t, "c1", 10)); !slices.Equal(got, []string{"p1", "p2"}) {
		t.Fatalf("after a rolled-back revive: %v, want [p1 p2]", got)
	}
	if !revive(e.db, "c1", "p1") {
		t.Fatal("revive of a parked message: false")
	}
	if revive(e.db, "c1", "p1") || revive(e.db, "c1", "done1") || revive(e.db, "c1", "nope") {
		t.Fatal("revive of a message that is not parked: true")
	}
	if got := deadIDs(e.dead(t, "c1", 10)); !slices.Equal(got, []string{"p2"}) {
		t.Fatalf("after revive: %v, want [p2]", got)
	}
	if got := deadIDs(e.dead(t, "c2", 10)); !slices.Equal(got, []string{"p1"}) {
		t.Fatalf("c2's dead letters after c1's revive: %v, want [p1]", got)
	}
	// The revived message is done: a redelivery is a duplicate, and
	// cleanup removes it in its time.
	if got := e.record(t, "c1", inboxT0(), "p1"); len(got) != 0 {
		t.Fatalf("record after revive: fresh %v", got)
	}
	if n := e.count(t, "done"); n != 2 {
		t.Fatalf("%d done records, want 2", n)
	}
	n, err := e.d.InboxCleanup(e.ctx, e.db, dialects.InboxCleanupParams{Table: e.table, Before: inboxT0().Add(time.Hour + time.Second), Limit: 10})
	if err != nil || n != 2 {
		t.Fatalf("cleanup after revive: %d, %v; want 2", n, err)
	}
}

// Cleanup deletes done records older than the cutoff, at most the limit
// per call, and keeps parked ones.
func inboxCleanup(t *testing.T, h Harness) {
	e := newInboxEnv(t, h)
	var old, recent []string
	for i := range 7 {
		old = append(old, "old-"+time.Duration(i).String())
		recent = append(recent, "new-"+time.Duration(i).String())
	}
	e.record(t, "c1", inboxT0(), old[:4]...)
	e.record(t, "c2", inboxT0().Add(time.Minute), old[4:]...)
	e.record(t, "c1", inboxT0().Add(2*time.Hour), recent...)
	e.park(t, inboxLetter("c1", "parked", inboxT0()))
	cutoff := inboxT0().Add(time.Hour)
	clean := func(limit int) int64 {
		t.Helper()
		n, err := e.d.InboxCleanup(e.ctx, e.db, dialects.InboxCleanupParams{Table: e.table, Before: cutoff, Limit: limit})
		if err != nil {
			t.Fatalf("cleanup: %v", err)
		}
		return n
	}
	if got := []int64{clean(3), clean(3), clean(3), clean(3)}; !slices.Equal(got, []int64{3, 3, 1, 0}) {
		t.Fatalf("cleanup by 3: deleted %v, want [3 3 1 0]", got)
	}
	if n := e.count(t, "done"); n != len(recent) {
		t.Fatalf("%d done records left, want %d", n, len(recent))
	}
	if got := deadIDs(e.dead(t, "c1", 10)); !slices.Equal(got, []string{"parked"}) {
		t.Fatalf("dead letters after cleanup: %v, want [parked]", got)
	}
	// Cleaned up records are gone: the messages are fresh again.
	if got := e.record(t, "c1", inboxT0(), old[0], recent[0]); !slices.Equal(got, []string{old[0]}) {
		t.Fatalf("record after cleanup: fresh %v, want [%s]", got, old[0])
	}
}
