package gormoutbox

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

func TestLogLimiterOneLinePerKindPerInterval(t *testing.T) {
	l := logLimiter{every: 30 * time.Second}
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	if rep, ok := l.allow(logPublish, at(0), 2, 8, []string{"a"}); !ok || rep.held != 0 || rep.heldMsgs != 0 {
		t.Fatalf("first line: %+v, %v; want it let through, nothing held", rep, ok)
	}
	for _, d := range []time.Duration{time.Second, 10 * time.Second, 30*time.Second - time.Nanosecond} {
		if _, ok := l.allow(logPublish, at(d), 1, 4, []string{"b"}); ok {
			t.Fatalf("line %v after the first let through, want it held back for 30s", d)
		}
	}
	if _, ok := l.allow(logDead, at(2*time.Second), 1, 1, []string{"c"}); !ok {
		t.Fatal("a dead-letter line held back by a publish line: kinds must be limited apart")
	}
	rep, ok := l.allow(logPublish, at(30*time.Second), 1, 4, []string{"a"})
	if !ok || rep.held != 3 || rep.heldMsgs != 12 {
		t.Fatalf("line at 30s: %+v, %v; want it let through, 3 failures of 12 messages held back", rep, ok)
	}
	if got := rep.topics.LogValue().Any().([]string); !slices.Equal(got, []string{"b", "a"}) {
		t.Errorf("topics %v, want those of the held-back failures and this one: [b a]", got)
	}
	if _, ok := l.allow(logPublish, at(31*time.Second), 1, 1, nil); ok {
		t.Fatal("the interval did not start again at the line let through")
	}
	// A clock that goes back does not silence the kind.
	if rep, ok := l.allow(logPublish, at(-time.Hour), 1, 1, nil); !ok || rep.held != 1 {
		t.Fatalf("clock gone back: %+v, %v; want the line let through with 1 held back", rep, ok)
	}
}

func TestLogLimiterFlushAndTake(t *testing.T) {
	l := logLimiter{every: 30 * time.Second}
	if _, ok := l.flush(logDead, t0); ok {
		t.Fatal("flush with nothing held back let a line through")
	}
	l.allow(logDead, t0, 5, 5, []string{"a"})
	l.allow(logDead, t0.Add(time.Second), 2, 2, []string{"b"})
	if _, ok := l.flush(logDead, t0.Add(29*time.Second)); ok {
		t.Fatal("flush within the interval let a line through")
	}
	rep, ok := l.flush(logDead, t0.Add(30*time.Second))
	if !ok || rep.heldMsgs != 2 {
		t.Fatalf("flush after the interval: %+v, %v; want the 2 held back", rep, ok)
	}
	if _, ok := l.allow(logDead, t0.Add(31*time.Second), 1, 1, nil); ok {
		t.Fatal("a flush line did not start a new interval")
	}
	// take: the held-back failures are handed over, the interval goes on.
	l.allow(logPublish, t0, 1, 1, nil)
	l.allow(logPublish, t0.Add(time.Second), 3, 9, nil)
	if rep := l.take(logPublish); rep.held != 3 || rep.heldMsgs != 9 {
		t.Fatalf("take: %+v, want 3 calls of 9 messages", rep)
	}
	if _, ok := l.flush(logPublish, t0.Add(time.Hour)); ok {
		t.Fatal("flush after take found something held back")
	}
	if _, ok := l.allow(logPublish, t0.Add(2*time.Second), 1, 1, nil); ok {
		t.Fatal("take ended the interval")
	}
}

func TestTopicListCap(t *testing.T) {
	var tl topicList
	for i := 0; i < 12; i++ {
		tl.add(fmt.Sprint("t", i), "t0")
	}
	got := tl.LogValue().Any().([]string)
	if len(got) != 11 || got[0] != "t0" || got[9] != "t9" || got[10] != "+2 more" {
		t.Fatalf("topics %v, want t0..t9 and +2 more", got)
	}
}

func TestFailWatch(t *testing.T) {
	var w failWatch
	if w.watching() {
		t.Fatal("watching with nothing failed")
	}
	w.failed(t0, map[string]int{"a": 2, "b": 1})
	w.failed(t0.Add(time.Second), map[string]int{"a": 3})
	topics, since, msgs, left := w.published(map[string]bool{"a": true, "c": true})
	if !slices.Equal(topics, []string{"a"}) || !since.Equal(t0) || msgs != 5 || !left {
		t.Fatalf("published: %v %v %d %v; want [a] since t0, 5 messages, b still failing", topics, since, msgs, left)
	}
	if _, _, _, left := w.published(map[string]bool{"b": true}); left || w.watching() {
		t.Fatal("b published: want nothing left failing")
	}
}

// recorder keeps the records of a slog handler.
type recorder struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	r.mu.Lock()
	r.recs = append(r.recs, rec)
	r.mu.Unlock()
	return nil
}
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler { return r }
func (r *recorder) WithGroup(string) slog.Handler      { return r }

// take returns "LEVEL msg k=v …" for the records since the last call.
func (r *recorder) take() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, rec := range r.recs {
		s := rec.Level.String() + " " + rec.Message
		rec.Attrs(func(a slog.Attr) bool {
			s += " " + a.Key + "=" + a.Value.Resolve().String()
			return true
		})
		out = append(out, s)
	}
	r.recs = nil
	return out
}

// The relay's pass log: a warning per interval per kind, the held-back
// ones at debug, counted on the next line; recovery at info, with the
// failures held back; what is held back is told once the interval is over.
func TestLogPass(t *testing.T) {
	rec := &recorder{}
	r := &Relay{log: slog.New(rec), warn: logLimiter{every: WarnInterval}}
	failing := func() *passLog {
		return &passLog{calls: 2, failMsgs: 3, failed: map[string]int{"orders": 3}, retried: map[string]int{"orders": 3},
			res: DrainResult{Batches: 2, Retried: 3}, lastErr: "kafka: topic orders: connection refused"}
	}
	expect := func(step string, want ...string) {
		t.Helper()
		got := rec.take()
		if len(got) != len(want) {
			t.Fatalf("%s: lines %q, want %d", step, got, len(want))
		}
		for i := range want {
			if !strings.HasPrefix(got[i], want[i]) {
				t.Errorf("%s: line %q, want it to start %q", step, got[i], want[i])
			}
		}
	}
	r.logPass(t0, failing())
	expect("first failure", "WARN outbox relay: publish failed calls=2 failed=3 published=0 retried=3 dead=0 held_back=0 error=kafka: topic orders: connection refused topics=[orders] suppressed=0 suppressed_messages=0")
	r.logPass(t0.Add(5*time.Second), failing())
	expect("second failure", "DEBUG outbox relay: publish failed calls=2")
	r.logPass(t0.Add(10*time.Second), &passLog{ok: map[string]bool{"orders": true, "users": true}})
	expect("recovery", "INFO outbox relay: publishing again topics=[orders] failed_for=10s failed_messages=6 suppressed=2 suppressed_messages=3")
	r.logPass(t0.Add(11*time.Second), &passLog{ok: map[string]bool{"orders": true}})
	expect("published again")

	dead := &passLog{dead: 2, deadIDs: []int64{7, 9}, deadTops: []string{"orders"}, deadErr: "INVALID_RECORD"}
	r.logPass(t0.Add(12*time.Second), dead)
	expect("dead letters", "WARN outbox relay: dead-lettered count=2 ids=[7 9] error=INVALID_RECORD topics=[orders] suppressed=0")
	r.logPass(t0.Add(13*time.Second), dead)
	expect("more dead letters", "DEBUG outbox relay: dead-lettered count=2")
	r.logPass(t0.Add(40*time.Second), &passLog{})
	expect("within the interval")
	r.logPass(t0.Add(42*time.Second), &passLog{})
	expect("interval over", "WARN outbox relay: dead-lettered count=0 topics=[orders] suppressed=2")
	r.logPass(t0.Add(time.Hour), &passLog{})
	expect("nothing left")
}
