package inbox

import (
	"strconv"
	"sync"
)

// The x-sequence check (HeaderSequence). A producer that sends the header
// numbers each key's messages of a topic in the order it publishes them,
// and gives every redelivery of an event the number of its first delivery.
// A key lives in one partition and the inbox handles a partition in offset
// order, so once the messages of a key numbered low to high have committed
// (handled, parked, or found recorded), a later message of that key and
// partition numbered within [low, high] is a redelivery of an event the
// inbox table holds: it is skipped without a database round trip. The
// window only grows upwards: a message numbered below low goes to the
// database, which alone knows whether the group saw it (a group that
// started at the end of the topic did not).
//
// The marks live in memory, per Consumer, bounded by Config.SequenceKeys;
// they are updated only after a transaction commits, so they never claim
// more than the inbox table holds, or held: a record deleted by Cleanup
// while its key is remembered still spares its redelivery (Cleanup's own
// rule, keep records longer than a message can come again, makes that
// moot). A process that restarts, or takes a partition over, starts with
// none and asks the database.

// DefaultSequenceKeys is Config.SequenceKeys' default.
const DefaultSequenceKeys = 100_000

// seqKey names the messages of one key in one topic partition, numbered
// by one source (HeaderSequenceSource).
type seqKey struct {
	topic     string
	partition int
	key       string
	source    string
}

// seqMark is what the consumer knows of a key: its messages numbered low
// to high (x-sequence) have committed.
type seqMark struct {
	k          seqKey
	low, high  int64
	prev, next *seqMark // least recently used list, most recent first
}

// seqMarks are the marks of up to max keys, the least recently used
// forgotten first. Safe for concurrent use (workers share it; a key's
// partition belongs to one worker at a time).
type seqMarks struct {
	mu   sync.Mutex
	max  int
	m    map[seqKey]*seqMark
	head seqMark // sentinel: head.next is the most recent, head.prev the least
}

func newSeqMarks(max int) *seqMarks {
	s := &seqMarks{max: max, m: map[seqKey]*seqMark{}}
	s.head.next, s.head.prev = &s.head, &s.head
	return s
}

// unlink takes e out of the list.
func (s *seqMarks) unlink(e *seqMark) {
	e.prev.next, e.next.prev = e.next, e.prev
}

// front puts e first in the list.
func (s *seqMarks) front(e *seqMark) {
	e.prev, e.next = &s.head, s.head.next
	s.head.next.prev = e
	s.head.next = e
}

// stale reports whether a message of k numbered seq is known to be
// recorded: seq within the committed window of k.
func (s *seqMarks) stale(k seqKey, seq int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.m[k]
	if e == nil || seq < e.low || seq > e.high {
		return false
	}
	s.unlink(e)
	s.front(e)
	return true
}

// committed notes that a message of k numbered seq has committed: the
// window of k grows to seq when seq is above it; a new key starts at seq.
// A key over the cap makes the least recently used one forgotten.
func (s *seqMarks) committed(k seqKey, seq int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.m[k]; e != nil {
		e.high = max(e.high, seq)
		s.unlink(e)
		s.front(e)
		return
	}
	e := &seqMark{k: k, low: seq, high: seq}
	s.m[k] = e
	s.front(e)
	for len(s.m) > s.max {
		old := s.head.prev
		s.unlink(old)
		delete(s.m, old.k)
	}
}

// len is how many keys are remembered.
func (s *seqMarks) len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// parseSequence reads an x-sequence value: a positive decimal int64
// (digits only), ok false otherwise.
func parseSequence(v string) (int64, bool) {
	if v == "" || len(v) > 19 {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, false
	}
	return n, true
}

// readSequence sets m's x-sequence, kept for the check when the consumer
// does it (c.seqs), the message has a key, and it is a first process
// attempt (a re-sent event is a new delivery, deduplicated by its id). A
// malformed header leaves m to the event-id check; the first one is
// logged at warn.
func (c *Consumer) readSequence(m *Message) {
	if c.seqs == nil || len(m.Key) == 0 {
		return
	}
	var v string
	found := false
	for _, h := range m.Headers {
		if h.Key == HeaderSequence {
			v, found = string(h.Value), true
			break
		}
	}
	if !found {
		return
	}
	// Numbers of different sources are unrelated (two services, or two
	// outbox tables, may publish the same key to one topic): without its
	// source a number says nothing.
	src := m.Header(HeaderSequenceSource)
	if src == "" {
		return
	}
	if a := m.Header(HeaderProcessAttempt); a != "" && a != "1" {
		return
	}
	n, ok := parseSequence(v)
	if !ok {
		if c.seqWarned.CompareAndSwap(false, true) {
			c.cfg.Logger.Warn("inbox: an "+HeaderSequence+" header is not a positive decimal int64; such messages are deduplicated by event id (logged once)",
				"group", c.cfg.GroupID, "topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "value", v)
		}
		return
	}
	m.seq, m.seqSource = n, src
}

// seqKeyOf is the key of m's x-sequence.
func seqKeyOf(m *Message) seqKey {
	return seqKey{topic: m.Topic, partition: m.Partition, key: string(m.Key), source: m.seqSource}
}

// isStale reports whether m's x-sequence says it is recorded.
func (c *Consumer) isStale(m *Message) bool {
	return c.seqs != nil && m.seq > 0 && c.seqs.stale(seqKeyOf(m), m.seq)
}

// sequenceCommitted notes that m's processing committed.
func (c *Consumer) sequenceCommitted(m *Message) {
	if c.seqs != nil && m.seq > 0 {
		c.seqs.committed(seqKeyOf(m), m.seq)
	}
}
