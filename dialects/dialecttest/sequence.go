package dialecttest

import (
	"slices"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// runSequence checks the x-sequence numbers (Row.Sequence), the key locks
// Insert takes (Record.LockKey) and how Replay renumbers.
func runSequence(t *testing.T, h Harness) {
	runSequenceSource(t, h)

	outboxCase(t, "NumberIsTheID", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		locked := e.rec("a", []byte("y"))
		locked.LockKey = true
		e.insert(e.rec("a", []byte("x")), locked, e.rec("a", nil), e.rec("a", []byte("")))
		for _, r := range e.rows() {
			want := r.ID
			if r.Key == nil {
				want = 0
			}
			if r.Sequence != want {
				t.Errorf("row %d (key %q): sequence %d, want %d", r.ID, r.Key, r.Sequence, want)
			}
		}
	})

	// A writer of a locked key waits for the transaction that holds it:
	// the rows of a key take their ids in commit order. Without LockKey,
	// or for another key, nothing waits.
	outboxCase(t, "LockKeyOrdersWriters", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		lockedRec := func(key string) dialects.Record {
			r := e.rec("t", []byte(key))
			r.LockKey = true
			return r
		}
		tx1, err := e.db.BeginTx(e.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx1.Rollback() }()
		if err := e.d.Insert(e.ctx, tx1, e.table, []dialects.Record{lockedRec("k")}); err != nil {
			t.Fatal(err)
		}
		insertAlone := func(r dialects.Record) <-chan error {
			done := make(chan error, 1)
			go func() {
				tx, err := e.db.BeginTx(e.ctx, nil)
				if err != nil {
					done <- err
					return
				}
				if err := e.d.Insert(e.ctx, tx, e.table, []dialects.Record{r}); err != nil {
					_ = tx.Rollback()
					done <- err
					return
				}
				done <- tx.Commit()
			}()
			return done
		}
		for _, r := range []dialects.Record{e.rec("t", []byte("k")), lockedRec("other")} {
			select {
			case err := <-insertAlone(r):
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(10 * time.Second):
				t.Fatalf("an insert of key %q (LockKey %t) waited for another key's lock", r.Key, r.LockKey)
			}
		}
		waiting := insertAlone(lockedRec("k"))
		select {
		case err := <-waiting:
			t.Fatalf("a second writer of locked key k went ahead of the first's commit (err %v)", err)
		case <-time.After(300 * time.Millisecond):
		}
		if err := tx1.Commit(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-waiting:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the second writer of key k still waits after the first committed")
		}
		var ks []int64
		for _, r := range e.rows() {
			if string(r.Key) == "k" {
				ks = append(ks, r.Sequence)
			}
		}
		if len(ks) != 3 || !slices.IsSorted(ks) {
			t.Fatalf("numbers of key k in id order: %v", ks)
		}
	})

	// Replay numbers the replayed row and the pending rows of its key
	// after it anew, in id order, above every id so far: a blocked key
	// keeps its order, and a row captured later still numbers higher.
	outboxCase(t, "ReplayRenumbersInOrder", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		k := e.keyed("t", "k", 3)
		other := e.keyed("t", "o", 1)
		e.kill(e.now, k[0])
		if _, err := e.d.Replay(e.ctx, e.db, e.table, e.now, k[:1]); err != nil {
			t.Fatal(err)
		}
		seqs := e.sequences()
		got := []int64{seqs[k[0]], seqs[k[1]], seqs[k[2]]}
		if !slices.IsSorted(got) || got[0] <= other[0] || got[0] == got[1] || got[1] == got[2] {
			t.Fatalf("numbers after Replay %v: want rising, above every id (%d)", got, other[0])
		}
		if seqs[other[0]] != other[0] {
			t.Errorf("another key's row renumbered: %d", seqs[other[0]])
		}
		next := e.keyed("t", "k", 1)[0]
		if n := e.sequences()[next]; n <= got[2] {
			t.Fatalf("row captured after Replay: number %d, want above %d", n, got[2])
		}
	})

	// With SkipDeadKeys a later row of the key was published past the dead
	// one: the replayed row numbers above it, so a consumer that applied
	// it does not drop the replayed one as stale.
	outboxCase(t, "ReplayNumbersAbovePublished", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		k := e.keyed("t", "k", 2)
		e.kill(e.now, k[0])
		p := e.open(dialects.ClaimOptions{SkipDeadKeys: true})
		rows := e.claim(p, e.now, 10)
		if got := idsOf(rows); !slices.Equal(got, k[1:]) {
			t.Fatalf("claim past the dead row: %v, want %v", got, k[1:])
		}
		if err := p.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: idsOf(rows), Delete: true}); err != nil {
			t.Fatal(err)
		}
		_ = p.Close()
		later := e.keyed("t", "k", 1)
		if _, err := e.d.Replay(e.ctx, e.db, e.table, e.now, k[:1]); err != nil {
			t.Fatal(err)
		}
		seqs := e.sequences()
		if seqs[k[0]] <= k[1] || seqs[later[0]] <= seqs[k[0]] {
			t.Fatalf("replayed row numbered %d, the row after it %d; want above the published row's %d, rising",
				seqs[k[0]], seqs[later[0]], k[1])
		}
	})
}

// runSequenceSource checks the counters' source: stored once by Migrate,
// the same after Migrate runs again, and another table's differs.
func runSequenceSource(t *testing.T, h Harness) {
	outboxCase(t, "Source", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		src, err := e.d.SequenceSource(e.ctx, e.db, e.table)
		if err != nil || src == 0 {
			t.Fatalf("SequenceSource after Migrate: %d, %v; want a number", src, err)
		}
		if err := e.d.Migrate(e.ctx, e.db, e.table); err != nil {
			t.Fatal(err)
		}
		e.keyed("t", "k", 2) // writes do not touch it
		if again, err := e.d.SequenceSource(e.ctx, e.db, e.table); err != nil || again != src {
			t.Fatalf("SequenceSource after a second Migrate and writes: %d, %v; want %d", again, err, src)
		}
		other := dialects.Table{Name: "outbox_other"}
		if err := e.d.Migrate(e.ctx, e.db, other); err != nil {
			t.Fatal(err)
		}
		if o, err := e.d.SequenceSource(e.ctx, e.db, other); err != nil || o == 0 || o == src {
			t.Fatalf("another table's SequenceSource: %d, %v; want a number other than %d", o, err, src)
		}
	})
}

// sequences returns every row's Sequence by id.
func (e *outboxEnv) sequences() map[int64]int64 {
	e.t.Helper()
	m := map[int64]int64{}
	for _, r := range e.rows() {
		m[r.ID] = r.Sequence
	}
	return m
}
