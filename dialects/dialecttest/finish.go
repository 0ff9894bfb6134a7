package dialecttest

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// runFinish checks Finish and Close: published rows marked or deleted,
// retries with the push-back of their keys, dead letters, and claims
// released untouched.
func runFinish(t *testing.T, h Harness) {
	outboxCase(t, "Published", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		all := e.keyed("t", "k", 3)
		other := e.keyed("t", "j", 1)
		p := e.open(dialects.ClaimOptions{})
		got := e.claim(p, e.now, 100)
		at := e.now.Add(time.Second)
		if err := p.Finish(e.ctx, dialects.Outcome{Now: at, Published: all}); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		if len(got) != 4 {
			t.Fatalf("claimed %v, want 4 rows", idsOf(got))
		}
		for _, id := range all {
			if r := e.row(id); r.PublishedAt == nil || !sameTime(*r.PublishedAt, at) || r.DeadAt != nil || r.Attempts != 0 {
				t.Errorf("row %d: published %v, dead %v, attempts %d; want published at %v", id, r.PublishedAt, r.DeadAt, r.Attempts, at)
			}
		}
		// Row 4 was claimed but left out of the outcome: still pending.
		if r := e.row(other[0]); r.PublishedAt != nil {
			t.Errorf("row %d, not in the outcome, was marked published", other[0])
		}
		_ = p.Close()
		if got := e.claimAll(e.now); !slices.Equal(got, other) {
			t.Fatalf("Claim after Finish = %v, want only the row left out %v", got, other)
		}
	})

	outboxCase(t, "Delete", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		plain := e.keyed("t", "k", 2)
		asks := e.rec("t", []byte("k"))
		asks.AckTopic = "t-acks"
		acked := e.insert(asks)
		p := e.open(dialects.ClaimOptions{})
		got := e.claim(p, e.now, 100)
		if err := p.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: idsOf(got), Delete: true}); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		for _, id := range plain {
			if e.has(id) {
				t.Errorf("row %d published with Delete is still there", id)
			}
		}
		// A row waiting for an acknowledgement is kept, marked.
		if r := e.row(acked[0]); r.PublishedAt == nil {
			t.Errorf("row %d asks for an acknowledgement: published with Delete, want kept and marked; got %+v", acked[0], r)
		}
	})

	outboxCase(t, "Retry", func(t *testing.T) {
		// Row 1 of key k fails: its attempts, error and due time are
		// kept, and the later pending rows of k — in the claim but not
		// in the outcome, or written since — are pushed back to its due
		// time, never earlier than they were; other keys are untouched.
		e := newOutboxEnv(t, h)
		k := e.keyed("t", "k", 3)
		j := e.keyed("t", "j", 1)
		otherTopic := e.keyed("u", "k", 1)
		p := e.open(dialects.ClaimOptions{})
		got := e.claim(p, e.now, 100)
		if len(got) != 5 {
			t.Fatalf("claimed %v, want 5 rows", idsOf(got))
		}
		late := e.rec("t", []byte("k"))
		late.AvailableAt = e.now.Add(2 * time.Hour)
		written := e.keyed("t", "k", 1)
		lateID := e.insert(late)
		retryAt := e.now.Add(time.Hour)
		err := p.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: append(j, otherTopic...),
			Retries: []dialects.Retry{{ID: k[0], Attempts: 1, AvailableAt: retryAt, Error: "broker down"}},
			Keys:    []dialects.TopicKey{{Topic: "t", Key: []byte("k")}}})
		if err != nil {
			t.Fatalf("Finish: %v", err)
		}
		r := e.row(k[0])
		if r.Attempts != 1 || r.LastError != "broker down" || !sameTime(r.AvailableAt, retryAt) || r.PublishedAt != nil || r.DeadAt != nil {
			t.Errorf("retried row %d: attempts %d, error %q, due %v, published %v, dead %v; want 1, the error, due at %v, pending",
				r.ID, r.Attempts, r.LastError, r.AvailableAt, r.PublishedAt, r.DeadAt, retryAt)
		}
		for _, id := range append(k[1:], written...) {
			if r := e.row(id); !sameTime(r.AvailableAt, retryAt) || r.Attempts != 0 {
				t.Errorf("row %d behind the retried row: due %v, attempts %d; want pushed back to %v, no attempt", id, r.AvailableAt, r.Attempts, retryAt)
			}
		}
		if r := e.row(lateID[0]); !sameTime(r.AvailableAt, late.AvailableAt) {
			t.Errorf("row %d, due after the retry, moved to %v; want it left at %v", lateID[0], r.AvailableAt, late.AvailableAt)
		}
		for _, id := range append(j, otherTopic...) {
			if r := e.row(id); r.PublishedAt == nil {
				t.Errorf("row %d of another key was not published", id)
			}
		}
		_ = p.Close()
		if got := e.claimAll(e.now.Add(time.Minute)); len(got) != 0 {
			t.Fatalf("Claim before the retry is due = %v, want nothing", got)
		}
		want := append(k, written...)
		if got := e.claimAll(retryAt); !slices.Equal(got, want) {
			t.Fatalf("Claim when the retry is due = %v, want %v", got, want)
		}
	})

	outboxCase(t, "RetryNoKey", func(t *testing.T) {
		// A row without a key holds nothing back.
		e := newOutboxEnv(t, h)
		all := e.keyed("t", "", 3)
		p := e.open(dialects.ClaimOptions{})
		e.claim(p, e.now, 1)
		if err := p.Finish(e.ctx, dialects.Outcome{Now: e.now,
			Retries: []dialects.Retry{{ID: all[0], Attempts: 1, AvailableAt: e.now.Add(time.Hour), Error: "x"}},
			Keys:    []dialects.TopicKey{{Topic: "t"}}}); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		_ = p.Close()
		if got := e.claimAll(e.now); !slices.Equal(got, all[1:]) {
			t.Fatalf("Claim = %v, want the other rows without a key %v", got, all[1:])
		}
	})

	outboxCase(t, "Dead", func(t *testing.T) {
		// A dead-lettered row leaves the queue and pushes nothing back;
		// by default it blocks its key (the rows behind it are held back
		// and parked), and with SkipDeadKeys they go past it.
		e := newOutboxEnv(t, h)
		k := e.keyed("t", "k", 3)
		p := e.open(dialects.ClaimOptions{})
		e.claim(p, e.now, 1)
		at := e.now.Add(time.Second)
		if err := p.Finish(e.ctx, dialects.Outcome{Now: at,
			Retries: []dialects.Retry{{ID: k[0], Attempts: 5, Dead: true, AvailableAt: e.now.Add(time.Hour), Error: "poison"}},
			Keys:    []dialects.TopicKey{{Topic: "t", Key: []byte("k")}}}); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		r := e.row(k[0])
		if r.DeadAt == nil || !sameTime(*r.DeadAt, at) || r.Attempts != 5 || r.LastError != "poison" || r.PublishedAt != nil {
			t.Errorf("dead row %d: dead %v, attempts %d, error %q, published %v; want dead at %v, 5, poison",
				r.ID, r.DeadAt, r.Attempts, r.LastError, r.PublishedAt, at)
		}
		for _, id := range k[1:] {
			if r := e.row(id); !sameTime(r.AvailableAt, e.now.Add(-time.Second)) {
				t.Errorf("row %d behind a dead row moved to %v: a dead row pushes nothing back", id, r.AvailableAt)
			}
		}
		_ = p.Close()
		if got := e.claimAll(e.now); len(got) != 0 {
			t.Fatalf("Claim = %v, want nothing: the rows behind the dead one are blocked", got)
		}
		e.checkParked(e.now.Add(time.Minute), k[1:]...)
		skip := e.open(dialects.ClaimOptions{SkipDeadKeys: true})
		if got := idsOf(e.claim(skip, e.now.Add(time.Minute), 100)); !slices.Equal(got, k[1:]) {
			t.Fatalf("Claim with SkipDeadKeys = %v, want the rows behind the dead one %v", got, k[1:])
		}
	})

	outboxCase(t, "CloseReleases", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		all := e.keyed("t", "k", 3)
		before := e.rows()
		p := e.open(dialects.ClaimOptions{})
		if got := e.claim(p, e.now, 100); len(got) != 3 {
			t.Fatalf("claimed %v, want 3 rows", idsOf(got))
		}
		if err := p.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		after := e.rows()
		for i := range after {
			a, b := after[i], before[i]
			if a.Attempts != b.Attempts || a.PublishedAt != nil || a.DeadAt != nil || !a.AvailableAt.Equal(b.AvailableAt) || a.LastError != b.LastError {
				t.Errorf("row %d changed by an unfinished claim: %+v, was %+v", a.ID, a.Row, b.Row)
			}
		}
		if got := e.claimAll(e.now); !slices.Equal(got, all) {
			t.Fatalf("Claim after Close = %v, want the released rows %v", got, all)
		}
	})
	outboxCase(t, "PushBackSkipsOtherPass", func(t *testing.T) {
		// Pass A holds row 1 of key k; pass B holds row 2 of k (held back
		// by its guard, still locked) and row 1 of key l. A's retry of k
		// pushes back k's later rows: it must not wait on B's row (two
		// relays doing so to each other deadlocked during outages).
		e := newOutboxEnv(t, h)
		k := e.keyed("t", "k", 2)
		e.keyed("t", "l", 1)
		a := e.open(dialects.ClaimOptions{})
		if got := e.claim(a, e.now, 1); len(got) != 1 || got[0].ID != k[0] {
			t.Fatalf("pass A claimed %v, want row %d", idsOf(got), k[0])
		}
		b := e.open(dialects.ClaimOptions{})
		e.claim(b, e.now, 10) // holds its rows until Finish or Close
		ctx, cancel := context.WithTimeout(e.ctx, 5*time.Second)
		defer cancel()
		start := time.Now()
		err := a.Finish(ctx, dialects.Outcome{Now: e.now,
			Retries: []dialects.Retry{{ID: k[0], Attempts: 1, AvailableAt: e.now.Add(time.Hour), Error: "broker down"}},
			Keys:    []dialects.TopicKey{{Topic: "t", Key: []byte("k")}}})
		if err != nil || time.Since(start) > 2*time.Second {
			t.Fatalf("Finish of pass A while pass B holds a later row of its key: %v after %v; want it not to wait",
				err, time.Since(start))
		}
		_ = b.Close()
	})
}
