package inventory

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"sync"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/go-outbox/outbox/gormoutbox"
)

// arrival is a message the consumer received.
type arrival struct {
	Topic     string
	Partition int
	Offset    int64
	Key       []byte
	EventID   string // the event-id header
	EventType string // the event-type header
	Value     []byte
}

// collector keeps what the consumer receives, prints it, and tells the demo
// when every event of this run's outbox has arrived.
type collector struct {
	out     *printer
	want    map[string]bool // event ids of this run's outbox rows
	arrived chan struct{}   // a message arrived (signalled, not queued)

	mu   sync.Mutex
	got  []arrival
	seen map[string]bool
}

func newCollector(rows []OutboxRow, out *printer) *collector {
	c := &collector{out: out, want: make(map[string]bool), seen: make(map[string]bool),
		arrived: make(chan struct{}, 1)}
	for _, r := range rows {
		c.want[r.EventID] = true
	}
	return c
}

// add records and prints one message; the consumer calls it from one
// goroutine per partition.
func (c *collector) add(m kafkago.Message) {
	a := arrival{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: m.Key, Value: m.Value}
	for _, h := range m.Headers {
		switch h.Key {
		case gormoutbox.HeaderEventID:
			a.EventID = string(h.Value)
		case gormoutbox.HeaderEventType:
			a.EventType = string(h.Value)
		}
	}
	c.mu.Lock()
	note := ""
	switch {
	case !c.want[a.EventID]:
		note = "   (not from this run: ignored)"
	case c.seen[a.EventID]:
		note = "   (a duplicate: already received)"
	}
	c.seen[a.EventID] = true
	c.got = append(c.got, a)
	c.out.printf("  %-22s %-8s %-14s %s%s\n", fmt.Sprintf("%s/%d@%d", a.Topic, a.Partition, a.Offset),
		a.Key, a.EventType, strings.TrimSpace(string(a.Value)), note)
	c.mu.Unlock()
	select {
	case c.arrived <- struct{}{}:
	default:
	}
}

// complete reports whether every wanted event has arrived.
func (c *collector) complete() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id := range c.want {
		if !c.seen[id] {
			return false
		}
	}
	return true
}

// snapshot returns the messages received so far.
func (c *collector) snapshot() []arrival {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.got)
}

// report is the outcome of check.
type report struct {
	Committed  int // outbox rows
	InOrder    int // events received, with their key, in outbox order per key
	Missing    int // events never received
	Duplicates int // messages of an event received before
	Foreign    int // messages of other producers (event id not in the outbox)

	RefusedRows int // outbox rows of the refused reservation
	RefusedMsgs int // messages of the refused reservation, whoever sent them

	Problems []string
}

// OK reports whether every committed event arrived, in order per key, and
// the refused reservation left no trace.
func (r report) OK() bool {
	return len(r.Problems) == 0 && r.Missing == 0 && r.InOrder == r.Committed &&
		r.RefusedRows == 0 && r.RefusedMsgs == 0
}

// check compares the messages received with the outbox rows: every row's
// event must have arrived on its topic with its key, and the events of
// each key in outbox id order (a consumer sees a key's messages in offset
// order). Duplicates (delivery is at least once) are counted, not failed:
// only the first copy of an event counts for the order.
func check(rows []OutboxRow, got []arrival) report {
	rep := report{Committed: len(rows)}
	byEvent := make(map[string]*OutboxRow, len(rows))
	for i := range rows {
		r := &rows[i]
		byEvent[r.EventID] = r
		if r.Topic == "orders" && string(r.Key) == RefusedOrder {
			rep.RefusedRows++
			rep.Problems = append(rep.Problems, fmt.Sprintf("outbox row %d is an event of the refused reservation", r.ID))
		}
	}

	// Offset order within a partition, which is what a consumer sees.
	got = slices.Clone(got)
	slices.SortStableFunc(got, func(a, b arrival) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition), cmp.Compare(a.Offset, b.Offset))
	})
	type keyState struct {
		partition int
		last      int64 // outbox id of the last event received
		ids       []int64
		late      bool
	}
	keys := make(map[string]*keyState) // topic + "\x00" + key
	var keyOrder []string
	seen := make(map[string]bool)
	for _, a := range got {
		if a.Topic == "orders" && string(a.Key) == RefusedOrder {
			rep.RefusedMsgs++
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s/%d@%d is a message of the refused reservation", a.Topic, a.Partition, a.Offset))
		}
		row, ok := byEvent[a.EventID]
		if !ok {
			rep.Foreign++
			continue
		}
		if seen[a.EventID] {
			rep.Duplicates++
			continue
		}
		seen[a.EventID] = true
		if a.Topic != row.Topic || string(a.Key) != string(row.Key) {
			rep.Problems = append(rep.Problems, fmt.Sprintf("event of outbox row %d arrived on %s with key %q, want %s with key %q",
				row.ID, a.Topic, a.Key, row.Topic, row.Key))
			continue
		}
		tk := a.Topic + "\x00" + string(a.Key)
		ks := keys[tk]
		if ks == nil {
			ks = &keyState{partition: a.Partition}
			keys[tk] = ks
			keyOrder = append(keyOrder, tk)
		}
		ks.ids = append(ks.ids, row.ID)
		switch {
		case a.Partition != ks.partition:
			ks.late = true
			rep.Problems = append(rep.Problems, fmt.Sprintf("key %s of %s is on partitions %d and %d: no order between them",
				a.Key, a.Topic, ks.partition, a.Partition))
		case row.ID < ks.last:
			ks.late = true
		default:
			ks.last = row.ID
			rep.InOrder++
		}
	}
	for _, tk := range keyOrder {
		if ks := keys[tk]; ks.late {
			topic, key, _ := strings.Cut(tk, "\x00")
			rep.Problems = append(rep.Problems, fmt.Sprintf("key %s of %s: outbox rows arrived in the order %v", key, topic, ks.ids))
		}
	}
	for _, r := range rows {
		if !seen[r.EventID] {
			rep.Missing++
			rep.Problems = append(rep.Problems, fmt.Sprintf("missing: outbox row %d (%s %s, key %s, event %s)",
				r.ID, r.Topic, r.Type, r.Key, r.EventID))
		}
	}
	return rep
}
