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
		// k1 j1 k2 | j2 k3 m1
		var ids []int64
		for _, k := range []string{"k", "j", "k", "j", "k", "m"} {
			ids = append(ids, e.insert(e.rec("t", []byte(k)))...)
		}
		first := e.claim(f, e.now, 3)
		if got := idsOf(first); !slices.Equal(got, ids[:3]) {
			t.Fatalf("first claim = %v, want %v", got, ids[:3])
		}
		fork := f.Fork(nil)
		t.Cleanup(func() { _ = fork.Close() })
		// A pass of its own holds back j2 and k3 (their previous rows are
		// held by the first claim) and cannot take m1 (the fork will hold
		// it) — checked before the fork claims: it gets m1 only.
		other := e.open(dialects.ClaimOptions{})
		if got := idsOf(e.claim(other, e.now, 100)); !slices.Equal(got, ids[5:]) {
			t.Fatalf("an unrelated pass's claim beside the open claim = %v, want only %v", got, ids[5:])
		}
		if err := other.Close(); err != nil {
			t.Fatal(err)
		}
		second := e.claim(fork, e.now, 100)
		if got := idsOf(second); !slices.Equal(got, ids[3:]) {
			t.Fatalf("the fork's claim beside the open claim = %v, want the rows after it %v", got, ids[3:])
		}
		// The first batch: k2 failed (retried in a minute); the second
		// batch's k3 is left untouched by the caller (held back).
		retry := e.now.Add(time.Minute)
		if err := f.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: ids[:2],
			Retries: []dialects.Retry{{ID: ids[2], Attempts: 1, AvailableAt: retry, Error: "boom"}},
			Keys:    []dialects.TopicKey{{Topic: "t", Key: []byte("k")}}}); err != nil {
			t.Fatalf("Finish of the first claim: %v", err)
		}
		if err := fork.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: []int64{ids[3], ids[5]}}); err != nil {
			t.Fatalf("Finish of the fork's claim: %v", err)
		}
		for _, id := range []int64{ids[0], ids[1], ids[3], ids[5]} {
			if e.row(id).PublishedAt == nil {
				t.Errorf("row %d not marked published", id)
			}
		}
		if got := e.claimAll(e.now); len(got) != 0 {
			t.Fatalf("claim after both = %v, want nothing (k3 waits behind k2, due in a minute)", got)
		}
		if got := idsOf(e.claim(e.open(dialects.ClaimOptions{}), retry, 100)); !slices.Equal(got, []int64{ids[2], ids[4]}) {
			t.Fatalf("claim when k2 is due = %v, want k2 then k3 %v", got, []int64{ids[2], ids[4]})
		}
	})

	outboxCase(t, "FinishedClaimIsNotOpen", func(t *testing.T) {
		// Once the original's claim is finished, its rows no longer count
		// for the fork: a row whose previous row was claimed, then
		// released untouched and not published, is held back again.
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
		blocker := e.open(dialects.ClaimOptions{})
		if got := idsOf(e.claim(blocker, e.now, 1)); !slices.Equal(got, k[:1]) {
			t.Fatalf("another pass's claim = %v, want %v", got, k[:1])
		}
		conn, err := e.db.Conn(e.ctx)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		fork := f.Fork(conn)
		t.Cleanup(func() { _ = fork.Close() })
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
