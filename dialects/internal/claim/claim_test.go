package claim

import (
	"reflect"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

func TestOrderedPrefix(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	later := now.Add(time.Minute)
	row := func(id int64, key string, prev int64, prevAvail time.Time) Candidate {
		c := Candidate{Row: dialects.Row{ID: id, Topic: "t"}, Prev: prev, PrevAvail: prevAvail}
		if key != "" {
			c.Key = []byte(key)
		}
		return c
	}
	cands := []Candidate{
		row(10, "a", 0, time.Time{}), // head of a: kept
		row(11, "b", 5, now),         // b's earlier row 5 is held elsewhere (due): held, not parked
		row(12, "a", 10, now),        // chain a: kept
		row(13, "", 0, time.Time{}),  // no key: kept
		row(14, "c", 7, later),       // c's earlier row 7 waits for a retry: parked until later
		row(15, "b", 11, now),        // behind a held row: held, not parked
		row(16, "c", 14, now),        // behind a parked row: parked with it
		row(17, "a", 9, now),         // an earlier a row (9) outside the claim: held
		row(18, "a", 17, now),        // behind it: held
	}
	kept, park := OrderedPrefix(cands, now)
	var ids []int64
	for _, r := range kept {
		ids = append(ids, r.ID)
	}
	if want := []int64{10, 12, 13}; !reflect.DeepEqual(ids, want) {
		t.Errorf("kept %v, want %v", ids, want)
	}
	if want := []Park{{14, later}, {16, later}}; !reflect.DeepEqual(park, want) {
		t.Errorf("park %v, want %v", park, want)
	}
}

func TestSetPrevs(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cands := []Candidate{
		{Row: dialects.Row{ID: 10, Topic: "t", Key: []byte("a"), AvailableAt: t0}},
		{Row: dialects.Row{ID: 11, Topic: "t", Key: []byte("b")}},
		{Row: dialects.Row{ID: 14, Topic: "t", Key: []byte("a"), AvailableAt: t0}},
		{Row: dialects.Row{ID: 15, Topic: "u", Key: []byte("a")}},
	}
	// Key a of topic t: pending row 4 before the first claimed row, 12
	// (not due) between, and the claimed rows themselves as a probe
	// returns them.
	SetPrevs(cands, "t", []byte("a"), []Pending{{14, t0}, {12, t0.Add(time.Hour)}, {4, t0}, {10, t0}})
	if cands[0].Prev != 4 || cands[2].Prev != 12 || !cands[2].PrevAvail.Equal(t0.Add(time.Hour)) {
		t.Errorf("prevs: %d, %d (%v); want 4, 12", cands[0].Prev, cands[2].Prev, cands[2].PrevAvail)
	}
	if cands[1].Prev != 0 || cands[3].Prev != 0 {
		t.Errorf("other keys touched: %d, %d", cands[1].Prev, cands[3].Prev)
	}
}

func TestGuard(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	early, late := now.Add(-time.Minute), now.Add(-time.Second)
	row := func(id int64, key string, avail time.Time, prev int64, prevAvail time.Time) Candidate {
		return Candidate{Row: dialects.Row{ID: id, Topic: "t", Key: []byte(key), AvailableAt: avail}, Prev: prev, PrevAvail: prevAvail}
	}
	cands := []Candidate{
		row(10, "a", early, 0, time.Time{}),        // head of a: kept
		row(11, "b", early, 5, late),               // b's earlier row 5 is due later, unclaimed: moved behind it
		row(12, "b", late, 11, early),              // behind it, already as late: left as is
		row(13, "b", early, 12, late),              // behind it, earlier: moved too
		row(14, "c", late, 7, early),               // c's earlier row 7 is due earlier (held elsewhere): left
		row(15, "d", early, 8, now.Add(time.Hour)), // d's earlier row waits: parked (OrderedPrefix)
	}
	kept, park := Guard(cands, now)
	if len(kept) != 1 || kept[0].ID != 10 {
		t.Errorf("kept %v, want row 10", kept)
	}
	if want := []Park{{15, now.Add(time.Hour)}, {11, late}, {13, late}}; !reflect.DeepEqual(park, want) {
		t.Errorf("park %v, want %v", park, want)
	}
}
