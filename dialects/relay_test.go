package dialects

import (
	"reflect"
	"testing"
	"time"
)

func TestOrderedPrefix(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	later := now.Add(time.Minute)
	row := func(id int64, key string, prev int64, prevAvail time.Time) Row {
		r := Row{ID: id, Topic: "t", prev: prev, prevAvail: prevAvail}
		if key != "" {
			r.Key = []byte(key)
		}
		return r
	}
	rows := []Row{
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
	kept, park := OrderedPrefix(rows, now)
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

func TestTimeScan(t *testing.T) {
	var tm Time
	for _, v := range []any{"2026-11-22 10:11:12.123456", []byte("2026-11-22 10:11:12.123456"), time.Date(2026, 11, 22, 10, 11, 12, 123456000, time.UTC)} {
		if err := tm.Scan(v); err != nil || !tm.Valid || tm.Time.Nanosecond() != 123456000 {
			t.Errorf("Scan(%v): %v %v", v, tm, err)
		}
	}
	if err := tm.Scan(nil); err != nil || tm.Valid {
		t.Errorf("Scan(nil): %v %v", tm, err)
	}
	if err := tm.Scan("yesterday"); err == nil {
		t.Error("Scan(\"yesterday\") succeeded")
	}
}

func TestSetPrevs(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	rows := []Row{
		{ID: 10, Topic: "t", Key: []byte("a"), AvailableAt: t0},
		{ID: 11, Topic: "t", Key: []byte("b")},
		{ID: 14, Topic: "t", Key: []byte("a"), AvailableAt: t0},
		{ID: 15, Topic: "u", Key: []byte("a")},
	}
	// Key a of topic t: pending row 4 before the first claimed row, 12
	// (not due) between, and the claimed rows themselves as a probe
	// returns them.
	SetPrevs(rows, "t", []byte("a"), []Pending{{14, t0}, {12, t0.Add(time.Hour)}, {4, t0}, {10, t0}})
	if rows[0].prev != 4 || rows[2].prev != 12 || !rows[2].prevAvail.Equal(t0.Add(time.Hour)) {
		t.Errorf("prevs: %d, %d (%v); want 4, 12", rows[0].prev, rows[2].prev, rows[2].prevAvail)
	}
	if rows[1].prev != 0 || rows[3].prev != 0 {
		t.Errorf("other keys touched: %d, %d", rows[1].prev, rows[3].prev)
	}
}
