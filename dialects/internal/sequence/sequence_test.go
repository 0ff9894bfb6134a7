package sequence

import (
	"slices"
	"testing"

	"github.com/go-outbox/outbox/dialects"
)

// A plan draws one counter per (topic, key), sorted, numbers the records
// of a key 1…N in their order, and skips records without a key or with
// NoSequence.
func TestPlan(t *testing.T) {
	rec := func(topic, key string) dialects.Record {
		r := dialects.Record{Topic: topic}
		if key != "-" {
			r.Key = []byte(key)
		}
		return r
	}
	recs := []dialects.Record{rec("b", "k"), rec("a", "z"), rec("b", "k"), rec("a", "-"), rec("a", "z"), rec("b", "k"), rec("a", "")}
	recs = append(recs, dialects.Record{Topic: "a", Key: []byte("z"), NoSequence: true})
	p := NewPlan(recs)
	wantKeys := []Key{{Topic: "a", Key: []byte(""), N: 1}, {Topic: "a", Key: []byte("z"), N: 2}, {Topic: "b", Key: []byte("k"), N: 3}}
	if !slices.EqualFunc(p.Keys, wantKeys, func(a, b Key) bool { return Compare(a, b) == 0 && a.N == b.N }) {
		t.Fatalf("keys %+v, want %+v", p.Keys, wantKeys)
	}
	// Counters after the bump: "" at 1, z at 12, k at 7.
	got := p.Numbers([]int64{1, 12, 7})
	want := []int64{5, 11, 6, 0, 12, 7, 1, 0}
	if !slices.Equal(got, want) {
		t.Fatalf("numbers %v, want %v", got, want)
	}
}

// Many distinct keys (past the short linear search) still share counters.
func TestPlanManyKeys(t *testing.T) {
	var recs []dialects.Record
	for round := 0; round < 3; round++ {
		for k := 0; k < 40; k++ {
			recs = append(recs, dialects.Record{Topic: "t", Key: []byte{byte(k)}})
		}
	}
	p := NewPlan(recs)
	if len(p.Keys) != 40 {
		t.Fatalf("%d counters, want 40", len(p.Keys))
	}
	last := make([]int64, 40)
	for i := range last {
		last[i] = 100
	}
	nums := p.Numbers(last)
	if nums[0] != 98 || nums[40] != 99 || nums[80] != 100 {
		t.Fatalf("key 0 numbered %d, %d, %d; want 98, 99, 100", nums[0], nums[40], nums[80])
	}
}
