package faults

import (
	"strings"
	"testing"
)

func truth() []Committed {
	var c []Committed
	for _, k := range []string{"a", "b"} {
		for s := int64(1); s <= 3; s++ {
			c = append(c, Committed{Key: k, Seq: s})
		}
	}
	return c
}

// The checker is fed one of each fault it must see — a lost change, a
// duplicate, a reordered pair, an invented event — and a clean run.
func TestCheck(t *testing.T) {
	d := func(k string, s int64) Delivered { return Delivered{Key: k, Seq: s} }
	clean := []Delivered{d("a", 1), d("b", 1), d("a", 2), d("b", 2), d("a", 3), d("b", 3)}
	for _, tc := range []struct {
		name                       string
		delivered                  []Delivered
		lost, dups, order, unknown int
		say                        string
	}{
		{"clean", clean, 0, 0, 0, 0, "6 committed, 6 delivered: 0 lost"},
		{"lost", []Delivered{d("a", 1), d("b", 1), d("a", 2), d("b", 2), d("b", 3)}, 1, 0, 0, 0, "lost a#3"},
		{"duplicate", append(append([]Delivered{}, clean...), d("a", 2)), 0, 1, 0, 0, "1 duplicates"},
		// A redelivery of a2 right after a2 is a duplicate, not disorder.
		{"redelivered in place", []Delivered{d("a", 1), d("a", 2), d("a", 2), d("a", 3), d("b", 1), d("b", 2), d("b", 3)}, 0, 1, 0, 0, "0 order violations"},
		{"reordered", []Delivered{d("a", 1), d("a", 3), d("a", 2), d("b", 1), d("b", 2), d("b", 3)}, 0, 0, 1, 0, "key a: #2 after #3"},
		{"invented", append(append([]Delivered{}, clean...), d("c", 1)), 0, 0, 0, 1, "unknown c#1"},
	} {
		r := Check(truth(), tc.delivered)
		if len(r.Lost) != tc.lost || r.Duplicates != tc.dups || len(r.OrderViolations) != tc.order || len(r.Unknown) != tc.unknown {
			t.Errorf("%s: %s; want %d lost, %d duplicates, %d order violations, %d unknown", tc.name, r, tc.lost, tc.dups, tc.order, tc.unknown)
		}
		if ok := tc.lost+tc.order+tc.unknown == 0; r.OK() != ok {
			t.Errorf("%s: OK() = %v, want %v", tc.name, r.OK(), ok)
		}
		if !strings.Contains(r.String(), tc.say) {
			t.Errorf("%s: %q does not say %q", tc.name, r, tc.say)
		}
	}
}
