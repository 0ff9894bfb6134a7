package dialecttest

import (
	"slices"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// runGuard checks the order guard where a claim skips a pending row
// between two rows of a key it takes: the later one is held back (and
// parked behind the skipped row when that row is not due), never
// published past it.
func runGuard(t *testing.T, h Harness) {
	outboxCase(t, "SkippedRowBetweenClaimedRows", func(t *testing.T) {
		// k1 due, k2 due in an hour, k3 due, j1 due: the claim takes k1
		// and j1; k3 waits behind k2.
		e := newOutboxEnv(t, h)
		later := e.rec("t", []byte("k"))
		later.AvailableAt = e.now.Add(time.Hour)
		ids := e.insert(e.rec("t", []byte("k")), later, e.rec("t", []byte("k")), e.rec("t", []byte("j")))
		if got := e.publish(e.now); !slices.Equal(got, []int64{ids[0], ids[3]}) {
			t.Fatalf("Claim = %v, want %v: row %d of k waits behind row %d, due in an hour",
				got, []int64{ids[0], ids[3]}, ids[2], ids[1])
		}
		e.checkParked(later.AvailableAt, ids[2])
		if got := e.claimAll(e.now.Add(time.Hour)); !slices.Equal(got, ids[1:3]) {
			t.Fatalf("Claim an hour later = %v, want k2 then k3 %v", got, ids[1:3])
		}
	})

	outboxCase(t, "HeldFirstRow", func(t *testing.T) {
		// Another pass holds k1: a second pass takes neither k2 nor k3
		// (k3's previous row, k2, is in its claim, but k2 is behind k1).
		e := newOutboxEnv(t, h)
		ids := e.keyed("t", "k", 3)
		holder := e.open(dialects.ClaimOptions{})
		if got := idsOf(e.claim(holder, e.now, 1)); !slices.Equal(got, ids[:1]) {
			t.Fatalf("holder's claim = %v, want %v", got, ids[:1])
		}
		if got := e.claimAll(e.now); len(got) != 0 {
			t.Fatalf("claim beside the holder = %v, want nothing: every row of k is behind row %d", got, ids[0])
		}
	})
}
