package dialecttest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// runFork checks dialects.Forker, for the dialects whose passes fork: a
// claim of the fork while the original's claim is open gets the next rows,
// including those whose previous row of their key is in the original's
// claim, which a pass of its own holds back; Finish of each acts on its own
// claim; rows left untouched behind a failed row of the original's batch
// are parked behind it by the next claim.
func runFork(t *testing.T, h Harness) {
	outboxCase(t, "ClaimsBesideOpenClaim", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		p0 := e.open(dialects.ClaimOptions{})
		f, ok := p0.(dialects.Forker)
		if !ok {
			t.Skip("the dialect's passes do not fork")
		}
		// k1 j1 k2 j2 k3 m1
		var ids []int64
		keyOf := map[int64]string{}
		for _, k := range []string{"k", "j", "k", "j", "k", "m"} {
			id := e.insert(e.rec("t", []byte(k)))[0]
			ids = append(ids, id)
			keyOf[id] = k
		}
		first := idsOf(e.claim(f, e.now, 3))
		if len(first) == 0 {
			t.Fatal("first claim got nothing")
		}
		// A pass of its own takes no row of k or j while the first claim
		// is open (their first rows are in it; on a dialect that locks
		// shards it gets no shard at all).
		other := e.open(dialects.ClaimOptions{})
		for _, id := range idsOf(e.claim(other, e.now, 100)) {
			if keyOf[id] != "m" {
				t.Fatalf("an unrelated pass beside the open claim %v got row %d of key %s", first, id, keyOf[id])
			}
		}
		if err := other.Close(); err != nil {
			t.Fatal(err)
		}
		fork := f.Fork(nil)
		t.Cleanup(func() { _ = fork.Close() })
		second := idsOf(e.claim(fork, e.now, 100))
		// Together the two claims hold every row once, and each key's rows
		// in the fork's claim come after its rows in the first.
		all := append(slices.Clone(first), second...)
		slices.Sort(all)
		if !slices.Equal(all, ids) {
			t.Fatalf("first claim %v and the fork's claim beside it %v, want every row once %v", first, second, ids)
		}
		for _, a := range first {
			for _, b := range second {
				if keyOf[a] == keyOf[b] && b < a {
					t.Fatalf("row %d of key %s in the fork's claim %v is before row %d of the open claim %v",
						b, keyOf[b], second, a, first)
				}
			}
		}
		// The first batch: its last row of k failed (retried in a
		// minute), the rest published; the fork's rows of k are left
		// untouched by the caller (held back), the rest published.
		retry := e.now.Add(time.Minute)
		var failed int64
		for _, id := range first {
			if keyOf[id] == "k" {
				failed = id
			}
		}
		if failed == 0 {
			t.Fatalf("first claim %v has no row of k", first)
		}
		var pub1, pub2, heldK []int64
		for _, id := range first {
			if id != failed {
				pub1 = append(pub1, id)
			}
		}
		for _, id := range second {
			if keyOf[id] == "k" {
				heldK = append(heldK, id)
			} else {
				pub2 = append(pub2, id)
			}
		}
		if err := f.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: pub1,
			Retries: []dialects.Retry{{ID: failed, Attempts: 1, AvailableAt: retry, Error: "boom"}},
			Keys:    []dialects.TopicKey{{Topic: "t", Key: []byte("k")}}}); err != nil {
			t.Fatalf("Finish of the first claim: %v", err)
		}
		if err := fork.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: pub2}); err != nil {
			t.Fatalf("Finish of the fork's claim: %v", err)
		}
		for _, id := range append(pub1, pub2...) {
			if e.row(id).PublishedAt == nil {
				t.Errorf("row %d not marked published", id)
			}
		}
		_ = fork.Close()
		_ = p0.Close() // a MySQL pass keeps its shards until closed
		if got := e.claimAll(e.now); len(got) != 0 {
			t.Fatalf("claim after both = %v, want nothing: k waits behind row %d, due in a minute", got, failed)
		}
		if got, want := e.claimAll(retry), append([]int64{failed}, heldK...); !slices.Equal(got, want) {
			t.Fatalf("claim when row %d is due = %v, want it and then the rest of k %v", failed, got, want)
		}
	})

	outboxCase(t, "FinishedClaimIsNotOpen", func(t *testing.T) {
		// Once the original's claim is finished, its rows no longer count
		// for the fork: a row claimed, then finished without being
		// published, is pending again and first in line.
		e := newOutboxEnv(t, h)
		p0 := e.open(dialects.ClaimOptions{})
		f, ok := p0.(dialects.Forker)
		if !ok {
			t.Skip("the dialect's passes do not fork")
		}
		k := e.keyed("t", "k", 2)
		if got := idsOf(e.claim(f, e.now, 1)); !slices.Equal(got, k[:1]) {
			t.Fatalf("first claim = %v, want %v", got, k[:1])
		}
		if err := f.Finish(e.ctx, dialects.Outcome{Now: e.now}); err != nil { // nothing published
			t.Fatal(err)
		}
		conn, err := e.db.Conn(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		fork := f.Fork(conn)
		t.Cleanup(func() { _ = fork.Close() })
		if h.Dialect.Capabilities().LocksShards {
			// The fork claims under the original's shard locks: it takes
			// k1 again, and k2 after it.
			if got := idsOf(e.claim(fork, e.now, 100)); !slices.Equal(got, k) {
				t.Fatalf("the fork's claim = %v, want %v", got, k)
			}
			return
		}
		// Another pass now holds k1: the fork takes nothing.
		blocker := e.open(dialects.ClaimOptions{})
		if got := idsOf(e.claim(blocker, e.now, 1)); !slices.Equal(got, k[:1]) {
			t.Fatalf("another pass's claim = %v, want %v", got, k[:1])
		}
		if got := idsOf(e.claim(fork, e.now, 100)); len(got) != 0 {
			t.Fatalf("the fork's claim = %v, want nothing: row %d is held by another pass", got, k[0])
		}
	})
}

// runHeldConn checks ClaimOptions.Conn: a pass runs on the connection it
// is given and leaves it open, released (no rows or shards held), when it
// is closed; the next pass on the same connection claims again.
func runHeldConn(t *testing.T, h Harness) {
	outboxCase(t, "PassOnGivenConn", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		conn, err := e.db.Conn(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		for round := 0; round < 2; round++ {
			want := e.keyed("t", "k", 2)
			p := e.open(dialects.ClaimOptions{Conn: conn})
			got := e.claim(p, e.now, 100)
			if !slices.Equal(idsOf(got), want) {
				t.Fatalf("claim %d on the given connection = %v, want %v", round+1, idsOf(got), want)
			}
			if err := p.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: idsOf(got)}); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			// Another row, claimed and left unfinished: Close releases it.
			extra := e.insert(e.rec("t", []byte(fmt.Sprint("x", round))))
			if got := idsOf(e.claim(p, e.now, 10)); !slices.Equal(got, extra) {
				t.Fatalf("claim of the extra row = %v, want %v", got, extra)
			}
			if err := p.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			if err := conn.PingContext(e.ctx); err != nil {
				t.Fatalf("the given connection after Close: %v", err)
			}
			if got := e.publish(e.now); !slices.Equal(got, extra) {
				t.Fatalf("another pass after Close = %v, want the released row %v", got, extra)
			}
		}
	})
}
