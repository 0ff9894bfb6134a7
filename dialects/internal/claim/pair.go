package claim

import (
	"sync"

	"github.com/go-outbox/outbox/dialects"
)

// Pair holds the open claims of a pass and its fork (dialects.Forker):
// slot 0 is the original's, slot 1 the fork's. A claim of one treats the
// other's open rows as claimed before its own.
type Pair struct {
	mu   sync.Mutex
	open [2]Open
}

// Open is one pass's open claim: its row ids, and its ids per topic and key
// ("topic\x00key"; rows with a key only).
type Open struct {
	IDs   map[int64]bool
	ByKey map[string][]int64
}

// Sibling returns the open claim of the pass in the other slot than slot
// (empty when it holds none). The maps are not changed afterwards: Set
// replaces them.
func (p *Pair) Sibling(slot int) Open {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open[1-slot]
}

// Set records rows as slot's open claim (nil or empty: none).
func (p *Pair) Set(slot int, rows []dialects.Row) {
	var o Open
	if len(rows) > 0 {
		o.IDs = make(map[int64]bool, len(rows))
		o.ByKey = make(map[string][]int64)
		for i := range rows {
			r := &rows[i]
			o.IDs[r.ID] = true
			if r.Key != nil {
				k := r.Topic + "\x00" + string(r.Key)
				o.ByKey[k] = append(o.ByKey[k], r.ID)
			}
		}
	}
	p.mu.Lock()
	p.open[slot] = o
	p.mu.Unlock()
}
