package inbox

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	kafkago "github.com/segmentio/kafka-go"
)

func TestParseSequence(t *testing.T) {
	for v, want := range map[string]int64{
		"1": 1, "42": 42, "007": 7, "9223372036854775807": 9223372036854775807,
		"": 0, "0": 0, "-3": 0, "+5": 0, " 5": 0, "5 ": 0, "1.5": 0, "abc": 0, "0x10": 0,
		"9223372036854775808": 0, "99999999999999999999": 0, "٣": 0,
	} {
		got, ok := parseSequence(v)
		if ok != (want > 0) || got != want {
			t.Errorf("parseSequence(%q) = %d, %t; want %d, %t", v, got, ok, want, want > 0)
		}
	}
}

// A key's window is the numbers from its first committed one up to its
// highest; keys of other partitions and topics are apart.
func TestSeqMarksWindow(t *testing.T) {
	s := newSeqMarks(10)
	k := seqKey{"t", 0, "a", "s"}
	if s.stale(k, 1) {
		t.Fatal("an unknown key is stale")
	}
	s.committed(k, 5)
	s.committed(k, 7)
	s.committed(k, 3) // below the window: the window stays [5, 7]
	for seq, want := range map[int64]bool{3: false, 4: false, 5: true, 6: true, 7: true, 8: false} {
		if got := s.stale(k, seq); got != want {
			t.Errorf("stale(%d) = %t, want %t", seq, got, want)
		}
	}
	for _, other := range []seqKey{{"t", 1, "a", "s"}, {"u", 0, "a", "s"}, {"t", 0, "b", "s"}, {"t", 0, "", "s"}, {"t", 0, "a", "other"}} {
		if s.stale(other, 6) {
			t.Errorf("%+v is stale by the mark of %+v", other, k)
		}
	}
	s.committed(seqKey{"t", 1, "a", "s"}, 100)
	if s.stale(k, 8) || !s.stale(k, 7) {
		t.Error("a mark of partition 1 moved the window of partition 0")
	}
}

// Over the cap the least recently used key is forgotten; a key looked up
// or committed is recent.
func TestSeqMarksEvictsLeastRecentlyUsed(t *testing.T) {
	s := newSeqMarks(3)
	key := func(i int) seqKey { return seqKey{"t", 0, fmt.Sprint("k", i), "s"} }
	for i := 0; i < 3; i++ {
		s.committed(key(i), 1)
	}
	s.stale(key(0), 1)     // k0 used: k1 is now the least recent
	s.committed(key(2), 2) // k2 used
	s.committed(key(3), 1) // over the cap: k1 goes
	if n := s.len(); n != 3 {
		t.Fatalf("%d keys remembered, want 3", n)
	}
	for i, want := range []bool{true, false, true, true} {
		if got := s.stale(key(i), 1); got != want {
			t.Errorf("k%d stale = %t, want %t", i, got, want)
		}
	}
	// Many keys through a small cap: the list and the map stay in step.
	for i := 0; i < 1000; i++ {
		s.committed(key(i), int64(i+1))
	}
	if n := s.len(); n != 3 {
		t.Fatalf("%d keys remembered, want 3", n)
	}
	for i := 997; i < 1000; i++ {
		if !s.stale(key(i), int64(i+1)) {
			t.Errorf("k%d, among the last three, forgotten", i)
		}
	}
	n := 0
	for e := s.head.next; e != &s.head; e = e.next {
		if s.m[e.k] != e {
			t.Errorf("list entry %+v not in the map", e.k)
		}
		n++
	}
	if n != 3 {
		t.Errorf("the list holds %d entries, want 3", n)
	}
}

// readSequence keeps a well-formed header of a keyed first attempt; it
// ignores the rest, and logs the first malformed header only.
func TestReadSequence(t *testing.T) {
	var logs bytes.Buffer
	c, err := newTestConsumer(slog.New(slog.NewTextHandler(&logs, nil)), false)
	if err != nil {
		t.Fatal(err)
	}
	msg := func(key string, hs ...string) *Message {
		m := &Message{Message: kafkago.Message{Topic: "t", Key: []byte(key)}}
		for i := 0; i+1 < len(hs); i += 2 {
			m.Headers = append(m.Headers, kafkago.Header{Key: hs[i], Value: []byte(hs[i+1])})
		}
		return m
	}
	for _, tc := range []struct {
		m    *Message
		want int64
	}{
		{msg("a", HeaderSequence, "12", HeaderSequenceSource, "s"), 12},
		{msg("a", HeaderProcessAttempt, "1", HeaderSequence, "12", HeaderSequenceSource, "s"), 12},
		{msg("a", HeaderProcessAttempt, "2", HeaderSequence, "12", HeaderSequenceSource, "s"), 0}, // a re-send
		{msg("", HeaderSequence, "12", HeaderSequenceSource, "s"), 0},                             // no key
		{msg("a", HeaderSequence, "12"), 0},                                                       // no source
		{msg("a"), 0},
		{msg("a", HeaderSequence, "x", HeaderSequenceSource, "s"), 0},
		{msg("a", HeaderSequence, "0", HeaderSequenceSource, "s"), 0},
		{msg("a", HeaderSequence, "-1", HeaderSequenceSource, "s"), 0},
	} {
		c.readSequence(tc.m)
		if tc.m.seq != tc.want {
			t.Errorf("headers %v key %q: seq %d, want %d", tc.m.Headers, tc.m.Key, tc.m.seq, tc.want)
		}
	}
	if n := strings.Count(logs.String(), "x-sequence"); n != 1 {
		t.Errorf("%d log lines about malformed headers, want 1:\n%s", n, logs.String())
	}

	off, err := newTestConsumer(nil, true)
	if err != nil {
		t.Fatal(err)
	}
	m := msg("a", HeaderSequence, "12", HeaderSequenceSource, "s")
	off.readSequence(m)
	if m.seq != 0 || off.isStale(m) {
		t.Errorf("with IgnoreSequence the header was read: seq %d", m.seq)
	}
}

func TestSequenceKeysConfig(t *testing.T) {
	cfg := Config{Brokers: []string{"b"}, GroupID: "g", Topics: []string{"t"}}
	if err := cfg.defaults(); err != nil || cfg.SequenceKeys != DefaultSequenceKeys {
		t.Errorf("defaults: %v, SequenceKeys %d; want %d", err, cfg.SequenceKeys, DefaultSequenceKeys)
	}
	cfg.SequenceKeys = -1
	if err := cfg.defaults(); err == nil || !strings.Contains(err.Error(), "SequenceKeys") {
		t.Errorf("SequenceKeys -1: %v, want an error naming it", err)
	}
}

// newTestConsumer is a Consumer with what readSequence needs.
func newTestConsumer(logger *slog.Logger, ignore bool) (*Consumer, error) {
	cfg := Config{Brokers: []string{"b"}, GroupID: "g", Topics: []string{"t"}, Logger: logger, IgnoreSequence: ignore}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	c := &Consumer{cfg: cfg}
	if !ignore {
		c.seqs = newSeqMarks(cfg.SequenceKeys)
	}
	return c, nil
}
