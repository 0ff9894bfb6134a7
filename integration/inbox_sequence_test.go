package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/inbox"
	"github.com/go-outbox/outbox/internal/eventid"
	"github.com/go-outbox/outbox/internal/testenv"
)

// The x-sequence check: messages carrying the header that the relay sends
// (inbox.HeaderSequence), written by the tests straight to the broker.

// seqMsgs makes n messages over keys keys, each numbered after the last of
// its key in last (which it updates), with fresh event ids.
func seqMsgs(n, keys int, last map[string]int) []inboxMsg {
	var ids eventid.Generator
	var out []inboxMsg
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("k%03d", i%keys)
		last[k]++
		out = append(out, inboxMsg{EventID: ids.New(), Key: k, Seq: last[k]})
	}
	return out
}

// withSeq is m as the relay sends it: its Seq in the x-sequence header
// and its Source (default "a1") in x-sequence-source, or hdr instead of
// the number when hdr is not "" ("-" for no header; "nosrc:N" for N
// without a source).
func withSeq(topic string, m inboxMsg, hdr string) kafkago.Message {
	km := inMsg(topic, m)
	src := m.Source
	if src == "" {
		src = "a1"
	}
	switch {
	case hdr == "":
		hdr = strconv.Itoa(m.Seq)
	case hdr == "-":
		return km
	case strings.HasPrefix(hdr, "nosrc:"):
		hdr, src = strings.TrimPrefix(hdr, "nosrc:"), ""
	}
	km.Headers = append(km.Headers, kafkago.Header{Key: inbox.HeaderSequence, Value: []byte(hdr)})
	if src != "" {
		km.Headers = append(km.Headers, kafkago.Header{Key: inbox.HeaderSequenceSource, Value: []byte(src)})
	}
	return km
}

func writeSeq(t *testing.T, e *inboxEnv, ms []inboxMsg) {
	t.Helper()
	var kms []kafkago.Message
	for _, m := range ms {
		kms = append(kms, withSeq(e.topic, m, ""))
	}
	writeKafka(t, e.brokers, kms...)
}

// countingHandler is applyHandler counting its runs.
func countingHandler(calls *atomic.Int64) inbox.Handler {
	return func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
		calls.Add(1)
		return applyHandler(ctx, tx, m)
	}
}

func inboxRows(t *testing.T, db *gorm.DB) int64 {
	t.Helper()
	var n int64
	if err := db.Table("inbox").Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// A redelivered batch whose x-sequences are not newer than what committed
// is skipped without the database (no transaction, no inbox row, no
// handler run) and its offsets are committed; newer messages, and older
// ones mixed with them, are handled and skipped as they should be. Two
// workers share the marks.
func TestInboxSequenceSkipsRedeliveries(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 2)
		last := map[string]int{}
		want := seqMsgs(200, 10, last)
		writeSeq(t, e, want)
		var calls atomic.Int64
		c := e.consumer(t, countingHandler(&calls), func(c *inbox.Config) { c.BatchSize = 50; c.Workers = 2 })
		stop := start(t, c)
		waitFor(t, 30*time.Second, "the first delivery", func() bool { return c.Stats().Handled >= int64(len(want)) })
		s1, rows := c.Stats(), inboxRows(t, e.db)

		// The relay crashed before recording them: all come again, same
		// ids, same numbers.
		writeSeq(t, e, want)
		waitFor(t, 30*time.Second, "the redelivery", func() bool { return c.Stats().Duplicates >= int64(len(want)) })
		s2 := c.Stats()
		if s2.Stale != int64(len(want)) || s2.Duplicates != int64(len(want)) || s2.Handled != s1.Handled {
			t.Errorf("after the redelivery: stats %+v; want %d stale duplicates, nothing handled", s2, len(want))
		}
		if s2.Batches != s1.Batches {
			t.Errorf("the redelivery ran %d transactions, want none", s2.Batches-s1.Batches)
		}
		if n := calls.Load(); n != int64(len(want)) {
			t.Errorf("handler ran %d times, want %d", n, len(want))
		}
		if n := inboxRows(t, e.db); n != rows {
			t.Errorf("inbox rows %d after the redelivery, want %d", n, rows)
		}

		// Newer messages, after a redelivery of some older ones: the
		// older are skipped, the newer handled.
		newer := seqMsgs(100, 10, last)
		writeSeq(t, e, append(append([]inboxMsg{}, want[150:]...), newer...))
		all := append(append([]inboxMsg{}, want...), newer...)
		waitFor(t, 30*time.Second, "the newer messages", func() bool { return c.Stats().Handled >= int64(len(all)) })
		stop()
		s3 := c.Stats()
		if s3.Stale != int64(len(want)+50) || s3.Handled != int64(len(all)) {
			t.Errorf("stats %+v: want %d handled, %d stale", s3, len(all), len(want)+50)
		}
		checkApplied(t, e.db, all)

		// The skipped messages' offsets were committed: a new consumer of
		// the group (with no marks) gets only what comes next.
		c2 := e.consumer(t, applyHandler, nil)
		start(t, c2)
		next := seqMsgs(1, 1, last)
		writeSeq(t, e, next)
		waitFor(t, 30*time.Second, "the next message", func() bool { return c2.Stats().Handled >= 1 })
		if s := c2.Stats(); s.Duplicates != 0 || s.Handled != 1 {
			t.Errorf("a new consumer of the group: stats %+v; want 1 handled, nothing redelivered", s)
		}
	})
}

// A handler failure leaves its message and the later ones of its partition
// unmarked (they are retried and handled, in order); a parked message is
// marked (its redelivery skipped, as its inbox record would make it).
func TestInboxSequenceAfterFailures(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 1)
		last := map[string]int{}
		want := seqMsgs(40, 4, last)
		flaky, bad := want[9], want[22] // a message that fails twice, one that always fails
		var fails atomic.Int32
		var calls atomic.Int64
		h := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			calls.Add(1)
			if err := applyHandler(ctx, tx, m); err != nil {
				return err
			}
			switch m.EventID {
			case flaky.EventID:
				if fails.Add(1) <= 2 {
					return errors.New("not yet")
				}
			case bad.EventID:
				return errors.New("never")
			}
			return nil
		}
		c := e.consumer(t, h, func(c *inbox.Config) { c.MaxAttempts = 3; c.BatchSize = 20 })
		stop := start(t, c)
		writeSeq(t, e, want)
		waitFor(t, 30*time.Second, "all messages", func() bool {
			s := c.Stats()
			return s.Handled+s.Parked+s.Duplicates >= int64(len(want))
		})
		rest := append(append([]inboxMsg{}, want[:22]...), want[23:]...)
		checkApplied(t, e.db, rest)
		s1, n1 := c.Stats(), calls.Load()
		if s1.Parked != 1 || s1.Handled != int64(len(rest)) {
			t.Fatalf("stats %+v: want %d handled, 1 parked", s1, len(rest))
		}

		writeSeq(t, e, want) // all again, the parked one included
		waitFor(t, 30*time.Second, "the redelivery", func() bool { return c.Stats().Duplicates >= int64(len(want)) })
		stop()
		if s := c.Stats(); s.Stale != int64(len(want)) || s.Handled != s1.Handled || s.Parked != 1 {
			t.Errorf("after the redelivery: stats %+v; want %d stale, no more handled or parked", s, len(want))
		}
		if n := calls.Load(); n != n1 {
			t.Errorf("the handler ran %d times on the redelivery, want 0", n-n1)
		}
		if n := inboxCount(t, e.db, "dead"); n != 1 {
			t.Errorf("%d dead rows, want 1", n)
		}
		checkApplied(t, e.db, rest)
	})
}

// Messages without the header, or with a malformed one, are handled (not
// failed, not parked) and deduplicated by event id; a malformed header is
// logged once.
func TestInboxSequenceMissingOrMalformed(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 2)
		hdrs := []string{"-", "abc", "0", "-3", "+4", " 5", "1.5", "99999999999999999999", "0x10", "nosrc:7"}
		last := map[string]int{}
		want := seqMsgs(len(hdrs)*4, len(hdrs), last)
		var kms []kafkago.Message
		for i, m := range want {
			kms = append(kms, withSeq(e.topic, m, hdrs[i%len(hdrs)])) // a key's messages share a header
		}
		var logs syncBuffer
		var calls atomic.Int64
		c := e.consumer(t, countingHandler(&calls), func(c *inbox.Config) {
			c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		})
		stop := start(t, c)
		writeKafka(t, e.brokers, kms...)
		waitFor(t, 30*time.Second, "all messages", func() bool { return c.Stats().Handled >= int64(len(want)) })
		writeKafka(t, e.brokers, kms...)
		waitFor(t, 30*time.Second, "the redelivery", func() bool { return c.Stats().Duplicates >= int64(len(want)) })
		stop()
		if s := c.Stats(); s.Handled != int64(len(want)) || s.Duplicates != int64(len(want)) || s.Stale != 0 ||
			s.Parked != 0 || s.Retries != 0 {
			t.Errorf("stats %+v: want %d handled, as many duplicates by event id, none stale, parked or retried", s, len(want))
		}
		if n := calls.Load(); n != int64(len(want)) {
			t.Errorf("handler ran %d times, want %d", n, len(want))
		}
		checkApplied(t, e.db, want)
		if n := strings.Count(logs.String(), "header is not a positive decimal int64"); n != 1 {
			t.Errorf("%d log lines about a malformed header, want 1:\n%s", n, logs.String())
		}
	})
}

// Over Config.SequenceKeys the consumer forgets keys; the event-id check
// still skips their redeliveries.
func TestInboxSequenceCapFallsBack(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 1)
		want := seqMsgs(60, 12, map[string]int{})
		var calls atomic.Int64
		c := e.consumer(t, countingHandler(&calls), func(c *inbox.Config) { c.SequenceKeys = 3; c.BatchSize = 10 })
		stop := start(t, c)
		writeSeq(t, e, want)
		waitFor(t, 30*time.Second, "all messages", func() bool { return c.Stats().Handled >= int64(len(want)) })
		writeSeq(t, e, want)
		waitFor(t, 30*time.Second, "the redelivery", func() bool { return c.Stats().Duplicates >= int64(len(want)) })
		stop()
		s := c.Stats()
		if s.Handled != int64(len(want)) || s.Duplicates != int64(len(want)) {
			t.Errorf("stats %+v: want %d handled, as many duplicates", s, len(want))
		}
		// 12 keys in turn through 3 remembered: most keys are forgotten
		// before their redelivery comes, and go by event id.
		if s.Stale > int64(len(want))/2 {
			t.Errorf("%d of %d stale with 12 keys in turn through a cap of 3, want most by event id", s.Stale, len(want))
		}
		if n := calls.Load(); n != int64(len(want)) {
			t.Errorf("handler ran %d times, want %d", n, len(want))
		}
		checkApplied(t, e.db, want)
	})
}

// Two producers with counters of their own on one key (two sources):
// their numbers are kept apart, so neither's messages look stale to the
// other's, and a redelivery of either is skipped. With IgnoreSequence
// every message is deduplicated by event id alone.
func TestInboxSequenceSources(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 1)
		a := seqMsgs(5, 1, map[string]int{}) // k000, 1..5 of source a1
		b := seqMsgs(3, 1, map[string]int{}) // k000, 1..3 of source b2
		for i := range b {
			b[i].Source = "b2"
		}
		total := int64(len(a)*2 + len(b)*2)
		group := e.group
		var calls atomic.Int64
		c := e.consumer(t, countingHandler(&calls), nil)
		stop := start(t, c)
		writeSeq(t, e, a)
		waitFor(t, 30*time.Second, "the first producer's messages", func() bool { return c.Stats().Handled >= int64(len(a)) })
		writeSeq(t, e, b)
		// The redeliveries after both producers' messages were handled:
		// a redelivery in the same batch as its first delivery is a
		// duplicate by event id, not stale (the window moves at commit) —
		// under load the first b messages and their redeliveries were
		// fetched together.
		waitFor(t, 30*time.Second, "the second producer's messages", func() bool {
			return c.Stats().Handled >= int64(len(a)+len(b))
		})
		writeSeq(t, e, a) // and redeliveries
		writeSeq(t, e, b)
		waitFor(t, 30*time.Second, "all messages", func() bool {
			s := c.Stats()
			return s.Handled+s.Duplicates >= total
		})
		stop()
		if s := c.Stats(); s.Handled != 8 || s.Stale != 8 || calls.Load() != 8 {
			t.Errorf("two sources: stats %+v, %d handler runs; want both producers' 8 handled and their 8 redeliveries stale",
				s, calls.Load())
		}
		if n := inboxRows(t, e.db); n != 8 {
			t.Errorf("%d inbox rows, want the 8 events", n)
		}

		// Another group, from the start of the topic, with the check off:
		// the inbox records are its own.
		e.group = group + "-ignore"
		calls.Store(0)
		c = e.consumer(t, countingHandler(&calls), func(c *inbox.Config) { c.IgnoreSequence = true })
		stop = start(t, c)
		waitFor(t, 30*time.Second, "all messages", func() bool {
			s := c.Stats()
			return s.Handled+s.Duplicates >= total
		})
		stop()
		if s := c.Stats(); s.Handled != 8 || s.Duplicates != 8 || s.Stale != 0 || calls.Load() != 8 {
			t.Errorf("IgnoreSequence: stats %+v, %d handler runs; want 8 handled, 8 duplicates by event id", s, calls.Load())
		}
	})
}

// A message numbered below the first of its key that this process saw
// commit goes to the database: the group may never have read it (it
// started at the end of the topic, or retention removed the first copy),
// so only the inbox table can say it is a redelivery.
func TestInboxSequenceOlderUnseen(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 1)
		ms := seqMsgs(3, 1, map[string]int{}) // k000: 1, 2, 3
		var calls atomic.Int64
		c := e.consumer(t, countingHandler(&calls), nil)
		stop := start(t, c)
		writeSeq(t, e, ms[1:2]) // 2 comes first
		waitFor(t, 30*time.Second, "seq 2", func() bool { return c.Stats().Handled >= 1 })
		writeSeq(t, e, ms[:1]) // then the unseen 1
		waitFor(t, 30*time.Second, "seq 1", func() bool { return c.Stats().Handled >= 2 })
		writeSeq(t, e, ms) // then all, redelivered: 1 and 2 are recorded, 3 is new
		waitFor(t, 30*time.Second, "seq 3", func() bool { return c.Stats().Handled >= 3 })
		waitFor(t, 30*time.Second, "the redelivery", func() bool { return c.Stats().Duplicates >= 2 })
		stop()
		if s := c.Stats(); s.Handled != 3 || s.Duplicates != 2 || s.Stale != 1 || calls.Load() != 3 {
			t.Errorf("stats %+v, %d handler runs; want 3 handled, 2 duplicates (seq 2 stale, seq 1 by event id)", s, calls.Load())
		}
	})
}
