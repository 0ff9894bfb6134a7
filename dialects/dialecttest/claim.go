package dialecttest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// runClaim checks Open and Claim: id order, due rows only, the limit, the
// per-key order guard, and passes open at once.
func runClaim(t *testing.T, h Harness) {
	outboxCase(t, "IDOrderAndLimit", func(t *testing.T) {
		// Each claim is in id order and within its limit (not
		// necessarily the oldest rows of the table: a MySQL pass reads
		// each of its shards in id order); claim after claim, every row
		// comes, once.
		e := newOutboxEnv(t, h)
		var recs []dialects.Record
		for i := 0; i < 12; i++ {
			var key []byte
			if i%3 != 0 {
				key = []byte(fmt.Sprint("k", i%5))
			}
			recs = append(recs, e.rec(fmt.Sprint("t", i%2), key))
		}
		all := e.insert(recs...)
		pending := e.rows()
		p := e.open(dialects.ClaimOptions{})
		var seen []int64
		for round := 0; round < 20 && len(seen) < len(all); round++ {
			got := e.claim(p, e.now, 5)
			if len(got) == 0 {
				break
			}
			checkGuard(t, fmt.Sprint("claim ", round+1), got, pending)
			for _, r := range got {
				if slices.Contains(seen, r.ID) {
					t.Fatalf("row %d claimed again after it was published", r.ID)
				}
				checkRecord(t, outboxRow{Row: r}, recs[slices.Index(all, r.ID)])
			}
			seen = append(seen, idsOf(got)...)
			if err := p.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: idsOf(got)}); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			pending = e.rows()
		}
		slices.Sort(seen)
		if !slices.Equal(seen, all) {
			t.Fatalf("claims of up to 5 rows got %v, want every row once %v", seen, all)
		}
		// Rows of one shard come in id order, the oldest first.
		e2 := newOutboxEnv(t, h)
		few := e2.keyed("t", "", 6)
		p2 := e2.open(dialects.ClaimOptions{})
		if got := e2.claim(p2, e2.now, 3); len(got) == 0 || !slices.Equal(idsOf(got), few[:len(got)]) {
			t.Fatalf("Claim(limit 3) of one shard = %v, want its first rows %v", idsOf(got), few[:3])
		}
	})

	outboxCase(t, "DeadBlocksKey", func(t *testing.T) {
		// Row 1 of key k is dead: rows 2 and 3 of k are blocked (held
		// back, parked until the recheck, counted as blocked); key j
		// flows. Replay of row 1 releases the key, in order. With
		// SkipDeadKeys a later row goes past a dead one.
		e := newOutboxEnv(t, h)
		k := e.keyed("t", "k", 3)
		j := e.keyed("t", "j", 1)
		e.kill(e.now, k[0])
		o := dialects.ClaimOptions{BlockedRecheck: 10 * time.Minute}
		p := e.open(o)
		if got := idsOf(e.claim(p, e.now, 100)); !slices.Equal(got, j) {
			t.Fatalf("Claim with row %d of k dead = %v, want only key j %v", k[0], got, j)
		}
		if err := p.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: j}); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		_ = p.Close() // a MySQL pass keeps its shards until closed
		e.checkParked(e.now.Add(10*time.Minute), k[1:]...)
		if s, err := e.d.Stats(e.ctx, e.db, e.table); err != nil || s.Blocked != 2 || s.Pending != 2 || s.Dead != 1 {
			t.Fatalf("Stats = %+v, %v; want 2 pending, both blocked, 1 dead", s, err)
		}
		if ts, err := e.d.TopicStats(e.ctx, e.db, e.table); err != nil || ts["t"].Blocked != 2 {
			t.Fatalf("TopicStats = %+v, %v; want 2 blocked in topic t", ts, err)
		}
		if n, err := e.d.Replay(e.ctx, e.db, e.table, e.now, k[:1]); err != nil || n != 1 {
			t.Fatalf("Replay: %d, %v", n, err)
		}
		if s, err := e.d.Stats(e.ctx, e.db, e.table); err != nil || s.Blocked != 0 {
			t.Fatalf("Stats after Replay = %+v, %v; want nothing blocked", s, err)
		}
		want := k
		if got := e.claimAll(e.now); !slices.Equal(got, want) {
			t.Fatalf("Claim after Replay of row %d = %v, want the key released in order %v", k[0], got, want)
		}

		e2 := newOutboxEnv(t, h)
		k2 := e2.keyed("t", "k", 2)
		e2.kill(e2.now, k2[0])
		skip := e2.open(dialects.ClaimOptions{SkipDeadKeys: true})
		if got := idsOf(e2.claim(skip, e2.now, 100)); !slices.Equal(got, k2[1:]) {
			t.Fatalf("Claim with SkipDeadKeys = %v, want the row past the dead one %v", got, k2[1:])
		}
	})

	outboxCase(t, "DueOnly", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		later := e.rec("t", nil)
		later.AvailableAt = e.now.Add(time.Hour)
		now := e.rec("t", nil)
		now.AvailableAt = e.now
		ids := e.insert(later, now, e.rec("t", nil))
		if got := e.claimAll(e.now); !slices.Equal(got, ids[1:]) {
			t.Fatalf("Claim at now = %v, want the due rows %v (not %d, due in an hour)", got, ids[1:], ids[0])
		}
		if got := e.claimAll(e.now.Add(time.Hour)); !slices.Equal(got, ids) {
			t.Fatalf("Claim an hour later = %v, want every row %v", got, ids)
		}
	})

	outboxCase(t, "KeyGuardNotDue", func(t *testing.T) {
		// The first row of key k waits (due in an hour): the later rows
		// of k are not claimed, and are parked until it is due (once
		// the claim is finished); other keys and rows without a key
		// flow.
		e := newOutboxEnv(t, h)
		first := e.rec("t", []byte("k"))
		first.AvailableAt = e.now.Add(time.Hour)
		ids := e.insert(first, e.rec("t", []byte("k")), e.rec("t", []byte("j")), e.rec("t", nil),
			e.rec("t", []byte("k")), e.rec("other", []byte("k")))
		want := []int64{ids[2], ids[3], ids[5]}
		if got := e.publish(e.now); !slices.Equal(got, want) {
			t.Fatalf("Claim = %v, want %v: rows of t/k wait behind row %d", got, want, ids[0])
		}
		e.checkParked(first.AvailableAt, ids[1], ids[4])
		want = []int64{ids[0], ids[1], ids[4]}
		if got := e.claimAll(e.now.Add(time.Hour)); !slices.Equal(got, want) {
			t.Fatalf("Claim once the first row is due = %v, want %v", got, want)
		}
	})

	outboxCase(t, "KeyGuardNotDueOnly", func(t *testing.T) {
		// A claim that finds only rows held back returns nothing and
		// parks them.
		e := newOutboxEnv(t, h)
		first := e.rec("t", []byte("k"))
		first.AvailableAt = e.now.Add(time.Hour)
		ids := e.insert(first, e.rec("t", []byte("k")), e.rec("t", []byte("k")))
		if got := e.claimAll(e.now); len(got) != 0 {
			t.Fatalf("Claim = %v, want nothing: every due row waits behind row %d", got, ids[0])
		}
		e.checkParked(first.AvailableAt, ids[1:]...)
	})

	outboxCase(t, "KeyGuardLimit", func(t *testing.T) {
		// A claim cut by its limit keeps each key's prefix.
		e := newOutboxEnv(t, h)
		ids := e.keyed("t", "k", 4)
		p := e.open(dialects.ClaimOptions{})
		got := e.claim(p, e.now, 2)
		if len(got) == 0 || !slices.Equal(idsOf(got), ids[:len(got)]) {
			t.Fatalf("Claim(limit 2) = %v, want a prefix of %v", idsOf(got), ids[:2])
		}
	})

	outboxCase(t, "KeyGuardOtherPass", func(t *testing.T) {
		// Rows of a key whose earlier row another open pass holds are
		// not claimed (nor parked: they wait for the next claim).
		e := newOutboxEnv(t, h)
		ids := e.keyed("t", "k", 3)
		before := e.rows()
		a := e.open(dialects.ClaimOptions{})
		if got := e.claim(a, e.now, 1); !slices.Equal(idsOf(got), ids[:1]) {
			t.Fatalf("first pass: Claim(limit 1) = %v, want %v", idsOf(got), ids[:1])
		}
		b := e.open(dialects.ClaimOptions{})
		if got := e.claim(b, e.now, 100); len(got) != 0 {
			t.Fatalf("second pass claimed %v while the first holds row %d of their key", idsOf(got), ids[0])
		}
		_ = b.Close()
		_ = a.Close()
		for i, r := range e.rows() {
			if !r.AvailableAt.Equal(before[i].AvailableAt) {
				t.Errorf("row %d: available_at moved from %v to %v", r.ID, before[i].AvailableAt, r.AvailableAt)
			}
		}
		if got := e.claimAll(e.now); !slices.Equal(got, ids) {
			t.Fatalf("Claim after both passes closed = %v, want %v", got, ids)
		}
	})

	outboxCase(t, "TwoPasses", func(t *testing.T) {
		// Two passes open at once never hold the same row, and each
		// keeps the order guard against the other.
		e := newOutboxEnv(t, h)
		var recs []dialects.Record
		for i := 0; i < 40; i++ {
			var key []byte
			if i%4 != 3 {
				key = []byte(fmt.Sprint("k", i%7))
			}
			r := e.rec("t", key)
			if key == nil {
				r.Shard = i / 4 % shards // rows in every shard
			}
			recs = append(recs, r)
		}
		e.insert(recs...)
		pending := e.rows()
		o := dialects.ClaimOptions{ShardLocks: dialects.ShardLocks{Max: shards / 2}}
		a, b := e.open(o), e.open(o)
		ga := e.claim(a, e.now, 6)
		gb := e.claim(b, e.now, 100)
		if len(ga) == 0 {
			t.Fatal("first pass claimed nothing")
		}
		for _, r := range gb {
			if slices.Contains(idsOf(ga), r.ID) {
				t.Fatalf("row %d claimed by both passes (%v and %v)", r.ID, idsOf(ga), idsOf(gb))
			}
		}
		checkGuard(t, "first pass", ga, pending)
		checkGuard(t, "second pass", gb, pending)
		// Both closed unfinished: everything is claimed again.
		_ = a.Close()
		_ = b.Close()
		if got := e.claimAll(e.now); len(got) != len(recs) {
			t.Fatalf("Claim after both passes closed: %d rows, want %d", len(got), len(recs))
		}
	})

	outboxCase(t, "ShardPartition", func(t *testing.T) {
		// ShardMod and ShardRem split the shards between passes.
		e := newOutboxEnv(t, h)
		var recs []dialects.Record
		for i := 0; i < 16; i++ {
			r := e.rec("t", nil)
			r.Shard = i % shards
			recs = append(recs, r)
		}
		all := e.insert(recs...)
		var got []int64
		for rem := 0; rem < 2; rem++ {
			p := e.open(dialects.ClaimOptions{ShardMod: 2, ShardRem: rem})
			rows := e.claim(p, e.now, 100)
			if len(rows) == 0 {
				t.Fatalf("pass of shards %% 2 == %d claimed nothing", rem)
			}
			for _, r := range rows {
				if r.Shard%2 != rem {
					t.Errorf("pass of shards %% 2 == %d claimed row %d of shard %d", rem, r.ID, r.Shard)
				}
			}
			got = append(got, idsOf(rows)...)
		}
		slices.Sort(got)
		if !slices.Equal(got, all) {
			t.Fatalf("the two passes claimed %v, want every row once %v", got, all)
		}
	})

	outboxCase(t, "PerDatabase", func(t *testing.T) {
		// A pass over one database does not stand in the way of a pass
		// over the same table in another database of the same server.
		// (Moved from integration's TestRelayShardLocksPerDatabase.)
		e1, e2 := newOutboxEnv(t, h), newOutboxEnv(t, h)
		e1.keyed("t", "k", 1)
		held := e1.open(dialects.ClaimOptions{})
		if got := e1.claim(held, e1.now, 100); len(got) != 1 {
			t.Fatalf("pass on the first database claimed %v", idsOf(got))
		}
		want := append(append(e2.keyed("t", "a", 3), e2.keyed("t", "b", 3)...), e2.keyed("t", "c", 3)...)
		slices.Sort(want)
		got := e2.claimAll(e2.now)
		if !slices.Equal(got, want) {
			t.Fatalf("pass on the second database, while the first holds its claim: %v, want %v", got, want)
		}
	})
}

// checkGuard checks that every row of claimed has each earlier pending
// row of its topic and key (of the rows read before the claim) in claimed
// too, and that claimed is in id order.
func checkGuard(t *testing.T, who string, claimed []dialects.Row, pending []outboxRow) {
	t.Helper()
	if !slices.IsSorted(idsOf(claimed)) {
		t.Errorf("%s: claim %v is not in id order", who, idsOf(claimed))
	}
	in := map[int64]bool{}
	for _, r := range claimed {
		in[r.ID] = true
	}
	for _, r := range claimed {
		if r.Key == nil {
			continue
		}
		for _, p := range pending {
			if p.PublishedAt != nil || p.DeadAt != nil {
				continue
			}
			if p.ID < r.ID && p.Key != nil && p.Topic == r.Topic && string(p.Key) == string(r.Key) && !in[p.ID] {
				t.Errorf("%s: claimed row %d of key %s/%s without the earlier pending row %d", who, r.ID, r.Topic, r.Key, p.ID)
			}
		}
	}
}

// checkParked checks that rows are due no earlier than until.
func (e *outboxEnv) checkParked(until time.Time, ids ...int64) {
	e.t.Helper()
	for _, id := range ids {
		if r := e.row(id); r.AvailableAt.Before(until.Truncate(time.Microsecond)) {
			e.t.Errorf("row %d, held back behind a row due at %v, is due at %v: not parked", id, until, r.AvailableAt)
		}
	}
}
