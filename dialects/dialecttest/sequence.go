package dialecttest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// runSequence checks the per-key numbers Insert gives (Row.Sequence) and
// how Replay keeps or renews them.
func runSequence(t *testing.T, h Harness) {
	runSequenceSource(t, h)
	outboxCase(t, "PerTopicAndKey", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		// One statement with keys interleaved, then more statements.
		first := e.insert(e.rec("a", []byte("x")), e.rec("a", []byte("y")), e.rec("a", []byte("x")),
			e.rec("b", []byte("x")), e.rec("a", nil), e.rec("a", []byte("")))
		second := e.insert(e.rec("a", []byte("y")), e.rec("a", []byte("x")))
		off := e.rec("a", []byte("x"))
		off.NoSequence = true
		third := e.insert(off, e.rec("a", []byte("x")))
		want := map[int64]int64{
			first[0]: 1, first[1]: 1, first[2]: 2, first[3]: 1, first[4]: 0, first[5]: 1,
			second[0]: 2, second[1]: 3,
			third[0]: 0, third[1]: 4,
		}
		for _, r := range e.rows() {
			if r.Sequence != want[r.ID] {
				t.Errorf("row %d (topic %s key %q): sequence %d, want %d", r.ID, r.Topic, r.Key, r.Sequence, want[r.ID])
			}
		}
	})

	outboxCase(t, "ManyRowsOneKey", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		// More than one INSERT statement's worth: the numbers go on across
		// the statements in id order.
		n := dialects.MaxInsertRows + 5
		ids := e.keyed("t", "k", n)
		seqs := e.sequences()
		for i, id := range ids {
			if seqs[id] != int64(i+1) {
				t.Fatalf("row %d, the %d-th of its key: sequence %d", id, i+1, seqs[id])
			}
		}
	})

	outboxCase(t, "RolledBackTakesNoNumber", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		e.keyed("t", "k", 2)
		tx, err := e.db.BeginTx(e.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.d.Insert(e.ctx, tx, e.table, []dialects.Record{e.rec("t", []byte("k"))}); err != nil {
			t.Fatal(err)
		}
		_ = tx.Rollback()
		id := e.keyed("t", "k", 1)[0]
		if got := e.row(id).Sequence; got != 3 {
			t.Fatalf("row after a rolled-back insert: sequence %d, want 3", got)
		}
	})

	// Writers of one key, each in its own transaction, take numbers in the
	// order of their row ids, with no number twice: the counter's row lock
	// orders them (and a writer's row id is taken after its number).
	outboxCase(t, "ConcurrentWritersOfAKey", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		const writers, each = 8, 10
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					tx, err := e.db.BeginTx(e.ctx, nil)
					if err != nil {
						errs <- err
						return
					}
					recs := []dialects.Record{e.rec("t", []byte("hot")), e.rec("t", []byte(fmt.Sprint("own-", w)))}
					if i%2 == 1 {
						recs[0], recs[1] = recs[1], recs[0]
					}
					if err := e.d.Insert(e.ctx, tx, e.table, recs); err != nil {
						_ = tx.Rollback()
						errs <- err
						return
					}
					if err := tx.Commit(); err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("writer: %v", err)
		}
		var hot []int64
		for _, r := range e.rows() {
			if string(r.Key) == "hot" {
				hot = append(hot, r.Sequence)
			}
		}
		want := make([]int64, writers*each)
		for i := range want {
			want[i] = int64(i + 1)
		}
		if !slices.Equal(hot, want) {
			t.Fatalf("numbers of the hot key in id order: %v, want 1…%d", hot, len(want))
		}
	})

	// The default: the later rows of a dead row's key wait behind it, so
	// nothing after it was published and Replay keeps every number.
	outboxCase(t, "ReplayKeepsABlockedKey", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		k := e.keyed("t", "k", 3)
		e.kill(e.now, k[0])
		if _, err := e.d.Replay(e.ctx, e.db, e.table, e.now, k[:1]); err != nil {
			t.Fatal(err)
		}
		seqs := e.sequences()
		if got := []int64{seqs[k[0]], seqs[k[1]], seqs[k[2]]}; !slices.Equal(got, []int64{1, 2, 3}) {
			t.Fatalf("numbers after Replay of a blocked key: %v, want [1 2 3]", got)
		}
		if id := e.keyed("t", "k", 1)[0]; e.row(id).Sequence != 4 {
			t.Fatalf("next row: sequence %d, want 4", e.row(id).Sequence)
		}
	})

	// With SkipDeadKeys a later row of the key was published past the dead
	// one: the replayed row and the pending rows after it are numbered
	// after the key's last number, so the numbers still rise in the order
	// the key's rows are published. Rows of other keys keep theirs.
	outboxCase(t, "ReplayRenumbersAKeyThatWentPast", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		k := e.keyed("t", "k", 2)
		other := e.keyed("t", "o", 1)
		e.kill(e.now, k[0], other[0])
		p := e.open(dialects.ClaimOptions{SkipDeadKeys: true})
		rows := e.claim(p, e.now, 10)
		if got := idsOf(rows); !slices.Equal(got, k[1:]) {
			t.Fatalf("claim past the dead row: %v, want %v", got, k[1:])
		}
		if err := p.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: idsOf(rows)}); err != nil {
			t.Fatal(err)
		}
		_ = p.Close()
		later := e.keyed("t", "k", 1) // pending, numbered 3
		n, err := e.d.Replay(e.ctx, e.db, e.table, e.now, []int64{k[0], other[0]})
		if err != nil || n != 2 {
			t.Fatalf("Replay: %d, %v", n, err)
		}
		seqs := e.sequences()
		got := []int64{seqs[k[1]], seqs[k[0]], seqs[later[0]], seqs[other[0]]}
		if want := []int64{2, 4, 5, 1}; !slices.Equal(got, want) {
			t.Fatalf("numbers (published, replayed, pending after it, other key's replayed): %v, want %v", got, want)
		}
		if id := e.keyed("t", "k", 1)[0]; e.row(id).Sequence != 6 {
			t.Fatalf("next row: sequence %d, want 6", e.row(id).Sequence)
		}
	})

	// Published rows deleted (DeleteOnPublish) count as gone past too.
	outboxCase(t, "ReplayRenumbersPastDeletedRows", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		k := e.keyed("t", "k", 3)
		e.kill(e.now, k[0])
		p := e.open(dialects.ClaimOptions{SkipDeadKeys: true})
		rows := e.claim(p, e.now, 1) // k[1] only
		if err := p.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: idsOf(rows), Delete: true}); err != nil {
			t.Fatal(err)
		}
		_ = p.Close()
		if e.has(k[1]) {
			t.Fatalf("row %d not deleted", k[1])
		}
		if _, err := e.d.Replay(e.ctx, e.db, e.table, e.now.Add(time.Second), k[:1]); err != nil {
			t.Fatal(err)
		}
		seqs := e.sequences()
		if got := []int64{seqs[k[0]], seqs[k[2]]}; !slices.Equal(got, []int64{4, 5}) {
			t.Fatalf("numbers of the replayed row and the pending one after it: %v, want [4 5]", got)
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
		e.keyed("t", "k", 2) // counters do not touch it
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
