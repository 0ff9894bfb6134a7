package dialecttest

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/go-outbox/outbox/dialects"
)

// runBytes checks ClaimOptions.MaxBytes: a claim stops before its payload
// bytes pass the bound (but takes a first row larger than it), keeps id
// order and the per-key guard, and leaves the rows it cut off for the next
// claim.
func runBytes(t *testing.T, h Harness) {
	outboxCase(t, "ClaimBoundedByBytes", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		var recs []dialects.Record
		size := func(i int) int {
			if i == 7 {
				return 5000 // larger than the bound: claimed alone
			}
			return 1000
		}
		for i := 0; i < 20; i++ {
			var key []byte
			if i%4 != 0 {
				key = []byte(fmt.Sprint("k", i%3))
			}
			r := e.rec("t", key)
			r.Payload = bytes.Repeat([]byte{'x'}, size(i))
			recs = append(recs, r)
		}
		all := e.insert(recs...)
		const bound = 3500
		p := e.open(dialects.ClaimOptions{MaxBytes: bound})
		var seen []int64
		pending := e.rows()
		for round := 0; round < 40 && len(seen) < len(all); round++ {
			got := e.claim(p, e.now, 100)
			if len(got) == 0 {
				break
			}
			checkGuard(t, fmt.Sprint("claim ", round+1), got, pending)
			sum := 0
			for _, r := range got {
				sum += len(r.Payload)
			}
			if sum > bound && len(got) > 1 {
				t.Errorf("claim %d: %d rows of %d payload bytes, over MaxBytes %d", round+1, len(got), sum, bound)
			}
			if len(got) > 3 {
				t.Errorf("claim %d: %d rows of 1000 bytes or more, want at most 3 under MaxBytes %d", round+1, len(got), bound)
			}
			seen = append(seen, idsOf(got)...)
			if err := p.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: idsOf(got)}); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			pending = e.rows()
		}
		slices.Sort(seen)
		if !slices.Equal(seen, all) {
			t.Fatalf("claims bounded by %d bytes got %v, want every row once %v", bound, seen, all)
		}
		// Without the bound, one claim takes them all.
		e2 := newOutboxEnv(t, h)
		for i := range recs {
			recs[i].EventID = newEventID()
		}
		all2 := e2.insert(recs...)
		if got := e2.claimAll(e2.now); !slices.Equal(got, all2) {
			t.Fatalf("claim without MaxBytes = %v, want every row %v", got, all2)
		}
	})
}
