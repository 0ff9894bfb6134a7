package dialecttest

import (
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// runDue checks the claim's due order: rows that are not due are not read,
// and a row that is due before an earlier row of its key does not keep the
// claim from reaching that row.
func runDue(t *testing.T, h Harness) {
	outboxCase(t, "DueOrderReachesEarlierRow", func(t *testing.T) {
		// Row x of key k is due a second ago; rows y1..y6 of k, after it,
		// were due a minute ago (x was released by Replay, or was backing
		// off while they were captured). A claim reads the due rows in
		// (available_at, id) order: the y rows first. Held back behind x,
		// they must not fill every claim: the claim reaches x, and then
		// the y rows in order.
		e := newOutboxEnv(t, h)
		x := e.rec("t", []byte("k"))
		x.AvailableAt = e.now.Add(-time.Second)
		xs := e.insert(x)
		var ys []dialects.Record
		for i := 0; i < 6; i++ {
			y := e.rec("t", []byte("k"))
			y.AvailableAt = e.now.Add(-time.Minute)
			ys = append(ys, y)
		}
		yIDs := e.insert(ys...)
		p := e.open(dialects.ClaimOptions{})
		got := e.claim(p, e.now, 3)
		if len(got) == 0 || got[0].ID != xs[0] {
			t.Fatalf("Claim(limit 3) = %v, want row %d (due after the later rows %v of its key) first", idsOf(got), xs[0], yIDs)
		}
		var seen []int64
		for round := 0; round < 10 && len(got) > 0; round++ {
			checkGuard(t, fmt.Sprint("claim ", round+1), got, e.rows())
			seen = append(seen, idsOf(got)...)
			if err := p.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: idsOf(got)}); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			got = e.claim(p, e.now, 3)
		}
		if want := append(xs, yIDs...); !slices.Equal(seen, want) {
			t.Fatalf("claims published %v, want %v in order", seen, want)
		}
	})

	if h.IndexReads == nil {
		return
	}
	outboxCase(t, "DelayedNotScanned", func(t *testing.T) {
		// 50,000 rows delayed by an hour (keys of their own) ahead of 500
		// due rows: the claims read index entries for the due rows, not
		// for the delayed ones.
		const delayed, due = 50_000, 500
		e := newOutboxEnv(t, h)
		for n := 0; n < delayed; {
			recs := make([]dialects.Record, 0, 5000)
			for ; len(recs) < cap(recs) && n < delayed; n++ {
				r := e.rec("t", []byte(fmt.Sprint("d", n%100)))
				r.AvailableAt = e.now.Add(time.Hour)
				recs = append(recs, r)
			}
			if err := e.d.Insert(e.ctx, e.db, e.table, recs); err != nil {
				t.Fatalf("Insert %d delayed records: %v", len(recs), err)
			}
		}
		recs := make([]dialects.Record, due)
		for i := range recs {
			recs[i] = e.rec("t", []byte(fmt.Sprint("k", i%50)))
		}
		want := e.insert(recs...)
		p := e.open(dialects.ClaimOptions{})
		var (
			seen  []int64
			reads int64
		)
		for round := 0; round < 20 && len(seen) < due; round++ {
			before := h.IndexReads(t, p)
			got := e.claim(p, e.now, due)
			reads += h.IndexReads(t, p) - before
			if len(got) == 0 {
				break
			}
			seen = append(seen, idsOf(got)...)
			if err := p.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: idsOf(got)}); err != nil {
				t.Fatalf("Finish: %v", err)
			}
		}
		slices.Sort(seen)
		if !slices.Equal(seen, want) {
			t.Fatalf("claims got %d rows, want the %d due rows", len(seen), len(want))
		}
		t.Logf("claims read %d index entries for %d due rows behind %d delayed rows", reads, due, delayed)
		if reads > 10*due {
			t.Fatalf("claims read %d index entries for %d due rows behind %d delayed rows: they scan the delayed rows", reads, due, delayed)
		}
	})
}
