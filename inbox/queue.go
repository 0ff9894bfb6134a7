package inbox

import (
	"slices"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// partition is the queue of one topic partition's fetched messages.
type partition struct {
	topic string
	id    int
	msgs  []*Message // in offset order, not yet done
	// notBefore delays the head message after a failure.
	notBefore time.Time
	lastErr   string
	fails     int // failures of the head message
}

type pkey struct {
	topic string
	id    int
}

// run is the state of one Run.
type run struct {
	c      *Consumer
	reader *kafkago.Reader
	parts  map[pkey]*partition
	order  []*partition // round robin
	next   int
	queued int
	// dbFails counts consecutive batches whose transaction failed.
	dbFails int
	dbWait  time.Time
	// isolate counts the steps that take one message each, after the
	// database refused the data of a message of a batch.
	isolate int
}

func (r *run) add(km kafkago.Message) {
	k := pkey{km.Topic, km.Partition}
	p := r.parts[k]
	if p == nil {
		p = &partition{topic: km.Topic, id: km.Partition}
		r.parts[k] = p
		r.order = append(r.order, p)
	}
	// After a rebalance the reader may start a partition again from its
	// committed offset: drop queued messages from there on (they come
	// again, in order).
	if n := len(p.msgs); n > 0 && km.Offset <= p.msgs[n-1].Offset {
		i := slices.IndexFunc(p.msgs, func(m *Message) bool { return m.Offset >= km.Offset })
		r.queued -= n - i
		p.msgs = p.msgs[:i]
		if i == 0 {
			p.fails, p.notBefore, p.lastErr = 0, time.Time{}, ""
		}
	}
	m := &Message{Message: km, Consumer: r.c.cfg.GroupID}
	m.EventID = storableID(m, r.c.cfg.EventID(m))
	r.c.readSequence(m)
	p.msgs = append(p.msgs, m)
	r.queued++
}

// ready counts the queued messages that may be handled now.
func (r *run) ready(now time.Time) int {
	if now.Before(r.dbWait) {
		return 0
	}
	n := 0
	for _, p := range r.order {
		if len(p.msgs) > 0 && !now.Before(p.notBefore) {
			n += len(p.msgs)
		}
	}
	return n
}

// nextDue is how long until a backed-off partition (or the database) may
// be tried again.
func (r *run) nextDue(now time.Time) (time.Duration, bool) {
	var best time.Time
	for _, p := range r.order {
		if len(p.msgs) > 0 && p.notBefore.After(now) && (best.IsZero() || p.notBefore.Before(best)) {
			best = p.notBefore
		}
	}
	if r.dbWait.After(now) && (best.IsZero() || r.dbWait.After(best)) {
		best = r.dbWait
	}
	if best.IsZero() {
		return 0, false
	}
	return best.Sub(now), true
}
