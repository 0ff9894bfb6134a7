package dialecttest

import (
	"context"
	"database/sql"
	"slices"
	"strconv"
	"testing"

	"github.com/go-outbox/outbox/dialects"
)

// inboxSavepointName is the savepoint the inbox sets before each handler.
const inboxSavepointName = "inbox_msg"

// inboxWrites is a table a handler writes to, beside the inbox table.
type inboxWrites struct {
	e *inboxEnv
	q string
}

func newInboxWrites(t *testing.T, e *inboxEnv) *inboxWrites {
	t.Helper()
	w := &inboxWrites{e: e, q: dialects.Table{Name: "handler_writes"}.Qualified(e.d)}
	if _, err := e.db.ExecContext(e.ctx, `CREATE TABLE `+w.q+` (id INT NOT NULL PRIMARY KEY)`); err != nil {
		t.Fatal(err)
	}
	return w
}

func (w *inboxWrites) insert(t *testing.T, q dialects.Execer, id int) {
	t.Helper()
	if _, err := q.ExecContext(w.e.ctx, `INSERT INTO `+w.q+` (id) VALUES (`+strconv.Itoa(id)+`)`); err != nil {
		t.Fatalf("insert %d: %v", id, err)
	}
}

func (w *inboxWrites) ids(t *testing.T) []int {
	t.Helper()
	rows, err := w.e.db.QueryContext(w.e.ctx, `SELECT id FROM `+w.q+` ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []int
	for rows.Next() {
		var id int
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// Savepoints undo one handler's writes alone: the batch's record and the
// other handlers' writes commit.
func inboxSavepoints(t *testing.T, h Harness) {
	e := newInboxEnv(t, h)
	w := newInboxWrites(t, e)
	d, ctx := e.d, e.ctx
	tx, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	// The batch records its messages, then runs each handler behind the
	// savepoint.
	fresh, err := d.InboxRecord(ctx, tx, dialects.InboxRecordParams{Table: e.table, Consumer: "c1", Messages: inboxMsgs("m1", "m2", "m3", "m4"), Now: inboxT0()})
	must("record", err)
	if len(fresh) != 4 {
		t.Fatalf("record: fresh %v", inboxSet(fresh))
	}
	w.insert(t, tx, 1) // before any savepoint

	// m1 succeeds: released.
	must("savepoint m1", d.Savepoint(ctx, tx, inboxSavepointName, false))
	w.insert(t, tx, 10)
	must("release m1", d.ReleaseSavepoint(ctx, tx, inboxSavepointName))

	// m2 fails: rolled back to the savepoint, then released; its record
	// goes too.
	must("savepoint m2", d.Savepoint(ctx, tx, inboxSavepointName, false))
	w.insert(t, tx, 20)
	w.insert(t, tx, 21)
	must("rollback to m2", d.RollbackToSavepoint(ctx, tx, inboxSavepointName))
	must("release m2", d.ReleaseSavepoint(ctx, tx, inboxSavepointName))
	must("unrecord m2", d.InboxUnrecord(ctx, tx, dialects.InboxUnrecordParams{Table: e.table, Consumer: "c1", EventIDs: []string{"m2"}}))

	// m3 succeeds, its release left for the next savepoint (m4's), which
	// releases it first; m4 fails and is undone alone.
	must("savepoint m3", d.Savepoint(ctx, tx, inboxSavepointName, false))
	w.insert(t, tx, 30)
	must("savepoint m4 releasing m3's", d.Savepoint(ctx, tx, inboxSavepointName, true))
	w.insert(t, tx, 40)
	must("rollback to m4", d.RollbackToSavepoint(ctx, tx, inboxSavepointName))
	// A savepoint rolled back to stays set: the handler of a retry may
	// use it again.
	w.insert(t, tx, 41)
	must("rollback to m4 again", d.RollbackToSavepoint(ctx, tx, inboxSavepointName))
	// Its release too may ride with the next savepoint; the commit ends
	// the one still set.
	must("savepoint after m4", d.Savepoint(ctx, tx, inboxSavepointName, true))
	w.insert(t, tx, 50)
	must("commit", tx.Commit())

	if got, want := w.ids(t), []int{1, 10, 30, 50}; !slices.Equal(got, want) {
		t.Fatalf("committed writes %v, want %v", got, want)
	}
	if got := e.record(t, "c1", inboxT0(), "m1", "m2", "m3", "m4"); !slices.Equal(got, []string{"m2"}) {
		t.Fatalf("after the batch: fresh %v, want [m2] (the only one unrecorded)", got)
	}

	// A savepoint does not outlive a release: rolling back to it fails,
	// and the transaction can be rolled back whole.
	tx2, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx2.Rollback()
	must("savepoint", d.Savepoint(ctx, tx2, inboxSavepointName, false))
	must("release", d.ReleaseSavepoint(ctx, tx2, inboxSavepointName))
	if err := d.RollbackToSavepoint(ctx, tx2, inboxSavepointName); err == nil {
		t.Fatal("rollback to a released savepoint: no error")
	}
}

// countingExecer counts the statements sent through it.
type countingExecer struct {
	tx *sql.Tx
	n  int
}

func (c *countingExecer) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	c.n++
	return c.tx.ExecContext(ctx, query, args...)
}

// FoldsRelease is true to its word: a Savepoint that releases the one
// before is one round trip when the dialect says so.
func inboxFoldsRelease(t *testing.T, h Harness) {
	e := newInboxEnv(t, h)
	w := newInboxWrites(t, e)
	tx, err := e.db.BeginTx(e.ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	c := &countingExecer{tx: tx}
	if err := e.d.Savepoint(e.ctx, c, inboxSavepointName, false); err != nil {
		t.Fatal(err)
	}
	w.insert(t, tx, 1)
	c.n = 0
	if err := e.d.Savepoint(e.ctx, c, inboxSavepointName, true); err != nil {
		t.Fatal(err)
	}
	if e.d.FoldsRelease() && c.n != 1 {
		t.Errorf("FoldsRelease, but Savepoint with release sent %d statements", c.n)
	}
	w.insert(t, tx, 2)
	if err := e.d.RollbackToSavepoint(e.ctx, c, inboxSavepointName); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := w.ids(t); !slices.Equal(got, []int{1}) {
		t.Fatalf("writes %v, want [1]", got)
	}
}
