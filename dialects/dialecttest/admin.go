package dialecttest

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// runAdmin checks the operator's calls: Replay, DeadLetters, Cleanup and
// the stats.
func runAdmin(t *testing.T, h Harness) {
	outboxCase(t, "Replay", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		k := e.keyed("t", "k", 3)
		pending := e.keyed("t", "p", 1)
		e.kill(e.now, k...)
		at := e.now.Add(time.Minute)
		n, err := e.d.Replay(e.ctx, e.db, e.table, at, []int64{k[0], k[1], pending[0], 1 << 40})
		if err != nil || n != 2 {
			t.Fatalf("Replay of 2 dead rows, a pending one and an unknown id: %d, %v; want 2", n, err)
		}
		for _, id := range k[:2] {
			r := e.row(id)
			if r.DeadAt != nil || r.Attempts != 0 || !sameTime(r.AvailableAt, at) || r.PublishedAt != nil {
				t.Errorf("replayed row %d: dead %v, attempts %d, due %v; want pending, 0 attempts, due at %v", id, r.DeadAt, r.Attempts, r.AvailableAt, at)
			}
		}
		if r := e.row(k[2]); r.DeadAt == nil {
			t.Errorf("row %d, not replayed, is no longer dead", k[2])
		}
		if r := e.row(pending[0]); !sameTime(r.AvailableAt, e.now.Add(-time.Second)) {
			t.Errorf("pending row %d given to Replay moved to %v", pending[0], r.AvailableAt)
		}
		if n, err := e.d.Replay(e.ctx, e.db, e.table, at, k[:2]); err != nil || n != 0 {
			t.Errorf("second Replay: %d, %v; want 0 (no longer dead)", n, err)
		}
		if _, err := e.d.Replay(e.ctx, e.db, e.table, at, nil); !errors.Is(err, dialects.ErrNoIDs) {
			t.Errorf("Replay without ids: %v, want ErrNoIDs", err)
		}
		want := []int64{k[0], k[1], pending[0]}
		if got := e.claimAll(at); !slices.Equal(got, want) {
			t.Fatalf("Claim after Replay = %v, want %v", got, want)
		}
	})

	outboxCase(t, "DeadLetters", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		a := e.keyed("a", "x", 3)
		b := e.keyed("b", "y", 2)
		e.keyed("a", "z", 1) // pending
		e.kill(e.now, append(append([]int64{}, a...), b...)...)
		list := func(q dialects.DeadQuery) []int64 {
			t.Helper()
			rows, err := e.d.DeadLetters(e.ctx, e.db, e.table, q)
			if err != nil {
				t.Fatalf("DeadLetters(%+v): %v", q, err)
			}
			for _, r := range rows {
				if r.DeadAt == nil || r.LastError != "refused" || r.Attempts != 1 {
					t.Errorf("dead letter %d: dead %v, error %q, attempts %d", r.ID, r.DeadAt, r.LastError, r.Attempts)
				}
			}
			return idsOf(rows)
		}
		all := append(append([]int64{}, a...), b...)
		if got := list(dialects.DeadQuery{}); !slices.Equal(got, all) {
			t.Errorf("DeadLetters() = %v, want %v", got, all)
		}
		if got := list(dialects.DeadQuery{Topic: "b"}); !slices.Equal(got, b) {
			t.Errorf("DeadLetters(topic b) = %v, want %v", got, b)
		}
		if got := list(dialects.DeadQuery{Limit: 2}); !slices.Equal(got, all[:2]) {
			t.Errorf("DeadLetters(limit 2) = %v, want %v", got, all[:2])
		}
		if got := list(dialects.DeadQuery{AfterID: all[1], Limit: 2}); !slices.Equal(got, all[2:4]) {
			t.Errorf("DeadLetters(after %d, limit 2) = %v, want %v", all[1], got, all[2:4])
		}
		if got := list(dialects.DeadQuery{Topic: "a", AfterID: a[0]}); !slices.Equal(got, a[1:]) {
			t.Errorf("DeadLetters(topic a, after %d) = %v, want %v", a[0], got, a[1:])
		}
		if got := list(dialects.DeadQuery{AfterID: all[len(all)-1]}); len(got) != 0 {
			t.Errorf("DeadLetters after the last = %v, want none", got)
		}
	})

	outboxCase(t, "Cleanup", func(t *testing.T) {
		// Only rows published before the cut are deleted, at most limit
		// per call; rows waiting for an acknowledgement stay until
		// answered.
		e := newOutboxEnv(t, h)
		cut := e.now
		old := e.keyed("t", "k", 3)
		awaiting := e.rec("t", []byte("a"))
		awaiting.AckTopic = "acks"
		answered := e.rec("t", []byte("b"))
		answered.AckTopic = "acks"
		acks := e.insert(awaiting, answered)
		e.publish(cut.Add(-time.Hour))
		recent := e.keyed("t", "r", 1)
		e.publish(cut.Add(time.Second))
		dead := e.keyed("t", "d", 1)
		e.kill(cut.Add(-time.Hour), dead...)
		pending := e.keyed("t", "p", 1)
		if out, _, err := e.ack(dialects.Ack{EventID: answered.EventID, Success: true, Attempt: 1, MaxAttempts: 3, Now: cut.Add(-time.Minute)}); err != nil || out != dialects.AckProcessed {
			t.Fatalf("Acknowledge: %v, %v", out, err)
		}
		var deleted int64
		for i := 0; i < 3; i++ {
			n, err := e.d.Cleanup(e.ctx, e.db, e.table, cut, 2)
			if err != nil {
				t.Fatalf("Cleanup: %v", err)
			}
			if n > 2 {
				t.Fatalf("Cleanup(limit 2) deleted %d rows", n)
			}
			deleted += n
		}
		if deleted != 4 {
			t.Errorf("Cleanup deleted %d rows, want 4 (3 published, 1 answered)", deleted)
		}
		for _, id := range append(old, acks[1]) {
			if e.has(id) {
				t.Errorf("row %d published before the cut is still there", id)
			}
		}
		for _, id := range []int64{acks[0], recent[0], dead[0], pending[0]} {
			if !e.has(id) {
				t.Errorf("row %d was deleted (waiting for an answer, recent, dead or pending)", id)
			}
		}
	})

	outboxCase(t, "Stats", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		if s, err := e.d.Stats(e.ctx, e.db, e.table); err != nil || s != (dialects.Stats{}) {
			t.Fatalf("Stats of an empty table: %+v, %v", s, err)
		}
		// Topic a: 2 published, 1 waiting for an answer, 1 failed.
		// Topic b: 1 dead, 2 pending (the oldest created 2h ago).
		wait := e.rec("a", []byte("w"))
		wait.AckTopic = "acks"
		fail := e.rec("a", []byte("f"))
		fail.AckTopic = "acks"
		e.insert(wait, fail)
		e.keyed("a", "p", 2)
		e.publish(e.now)
		if out, _, err := e.ack(dialects.Ack{EventID: fail.EventID, Attempt: 1, MaxAttempts: 1, Now: e.now}); err != nil || out != dialects.AckGaveUp {
			t.Fatalf("Acknowledge: %v, %v", out, err)
		}
		dead := e.keyed("b", "d", 1)
		e.kill(e.now, dead...)
		oldest := e.rec("b", []byte("x"))
		oldest.CreatedAt = e.now.Add(-2 * time.Hour)
		oldest.AvailableAt = e.now.Add(time.Hour)
		e.insert(oldest, e.rec("b", []byte("y")))
		s, err := e.d.Stats(e.ctx, e.db, e.table)
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		if s.Pending != 2 || s.Dead != 1 || s.Awaiting != 1 || s.Failed != 1 || !sameTime(s.OldestPending, oldest.CreatedAt) {
			t.Errorf("Stats = %+v; want 2 pending (oldest created %v), 1 dead, 1 awaiting, 1 failed", s, oldest.CreatedAt)
		}
		ts, err := e.d.TopicStats(e.ctx, e.db, e.table)
		if err != nil {
			t.Fatalf("QueryTopicStats: %v", err)
		}
		if a := ts["a"]; a.Pending != 0 || a.Dead != 0 || a.Awaiting != 1 || a.Failed != 1 || !a.OldestPending.IsZero() {
			t.Errorf("stats of topic a = %+v; want 1 awaiting, 1 failed", a)
		}
		if b := ts["b"]; b.Pending != 2 || b.Dead != 1 || b.Awaiting != 0 || b.Failed != 0 || !sameTime(b.OldestPending, oldest.CreatedAt) {
			t.Errorf("stats of topic b = %+v; want 2 pending (oldest created %v), 1 dead", b, oldest.CreatedAt)
		}
		if len(ts) != 2 {
			t.Errorf("stats of %d topics %v, want a and b", len(ts), ts)
		}
		if err := e.d.CountDone(e.ctx, e.db, e.table, ts); err != nil {
			t.Fatalf("CountDone: %v", err)
		}
		if a := ts["a"]; a.Published != 2 || a.Processed != 0 {
			t.Errorf("done rows of topic a = %+v; want 2 published waiting for nothing, none processed", a)
		}
	})
}
