package dialecttest

import (
	"errors"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// runAck checks acknowledgements: Acknowledge, Resend, failed and
// unanswered rows.
func runAck(t *testing.T, h Harness) {
	outboxCase(t, "Success", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		r := e.rec("t", []byte("k"))
		r.AckTopic = "acks"
		id := e.insert(r)[0]
		e.publish(e.now)
		at := e.now.Add(time.Second)
		out, row, err := e.ack(dialects.Ack{EventID: r.EventID, Success: true, Attempt: 1, MaxAttempts: 3, Now: at})
		if err != nil || out != dialects.AckProcessed {
			t.Fatalf("SUCCESS to attempt 1: %v, %v; want processed", out, err)
		}
		if row.ID != id || row.Topic != "t" || string(row.Key) != "k" || row.EventType != r.EventType ||
			row.AggregateType != r.AggregateType || row.AggregateID != r.AggregateID || row.Attempts != 1 {
			t.Errorf("AckRow %+v does not describe row %d", row, id)
		}
		if s := e.row(id); s.ProcessedAt == nil || !sameTime(*s.ProcessedAt, at) || s.FailedAt != nil {
			t.Errorf("row %d: processed %v, failed %v; want processed at %v", id, s.ProcessedAt, s.FailedAt, at)
		}
		// Duplicates and answers after the fact are ignored.
		for _, a := range []dialects.Ack{{Success: true, Attempt: 1}, {Attempt: 1}} {
			a.EventID, a.MaxAttempts, a.Now = r.EventID, 3, at
			if out, row, err := e.ack(a); err != nil || out != dialects.AckIgnored || row.Why == "" {
				t.Errorf("%+v after processed: %v (%q), %v; want ignored with a reason", a, out, row.Why, err)
			}
		}
		if s, _ := e.d.Stats(e.ctx, e.db, e.table); s.Awaiting != 0 || s.Pending != 0 || s.Failed != 0 {
			t.Errorf("stats %+v after the answer, want nothing awaiting", s)
		}
	})

	outboxCase(t, "FailedResentUntilLimit", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		r := e.rec("t", []byte("k"))
		r.AckTopic = "acks"
		r.Headers = map[string]string{"content-type": "json"}
		id := e.insert(r)[0]
		e.publish(e.now)
		for attempt := 1; attempt <= 3; attempt++ {
			at := e.now.Add(time.Duration(attempt) * time.Minute)
			// A stale answer (to the attempt before) is ignored.
			if attempt > 1 {
				if out, _, err := e.ack(dialects.Ack{EventID: r.EventID, Attempt: attempt - 1, MaxAttempts: 3, Now: at}); err != nil || out != dialects.AckIgnored {
					t.Fatalf("FAILED to stale attempt %d: %v, %v; want ignored", attempt-1, out, err)
				}
			}
			out, row, err := e.ack(dialects.Ack{EventID: r.EventID, Attempt: attempt, Reason: "no stock", MaxAttempts: 3, Now: at})
			if err != nil {
				t.Fatalf("FAILED to attempt %d: %v", attempt, err)
			}
			s := e.row(id)
			if attempt == 3 {
				if out != dialects.AckGaveUp || s.FailedAt == nil || !sameTime(*s.FailedAt, at) || s.LastError != "no stock" || s.PublishedAt == nil {
					t.Fatalf("FAILED to the last attempt: %v; row failed %v, error %q; want gave up, failed at %v", out, s.FailedAt, s.LastError, at)
				}
				break
			}
			if out != dialects.AckResent || row.Attempts != attempt+1 {
				t.Fatalf("FAILED to attempt %d: %v, attempt %d; want resent as attempt %d", attempt, out, row.Attempts, attempt+1)
			}
			if s.PublishedAt != nil || s.ProcessAttempts != attempt+1 || s.Attempts != 0 || !sameTime(s.AvailableAt, at) || s.LastError != "no stock" {
				t.Fatalf("row %d re-sent: published %v, process attempt %d, attempts %d, due %v, error %q; want pending for attempt %d, due at %v",
					id, s.PublishedAt, s.ProcessAttempts, s.Attempts, s.AvailableAt, s.LastError, attempt+1, at)
			}
			// A duplicate of the answer is ignored.
			if out, _, err := e.ack(dialects.Ack{EventID: r.EventID, Attempt: attempt, MaxAttempts: 3, Now: at}); err != nil || out != dialects.AckIgnored {
				t.Fatalf("duplicate FAILED to attempt %d: %v, %v; want ignored", attempt, out, err)
			}
			// The re-send is claimed with its process attempt in the
			// row and in the headers, the others kept.
			p := e.open(dialects.ClaimOptions{})
			got := e.claim(p, at, 10)
			if len(got) != 1 || got[0].ID != id || got[0].ProcessAttempts != attempt+1 ||
				got[0].Headers["process-attempt"] != strconv.Itoa(attempt+1) || got[0].Headers["content-type"] != "json" {
				t.Fatalf("claim of the re-send: %+v; want row %d at process attempt %d in the row and its headers", got, id, attempt+1)
			}
			if err := p.Finish(e.ctx, dialects.Outcome{Now: at, Published: []int64{id}}); err != nil {
				t.Fatalf("Finish: %v", err)
			}
			_ = p.Close()
		}
		if out, _, err := e.ack(dialects.Ack{EventID: r.EventID, Success: true, Attempt: 3, MaxAttempts: 3, Now: e.now}); err != nil || out != dialects.AckIgnored {
			t.Errorf("SUCCESS after failed: %v, %v; want ignored", out, err)
		}
		failed, err := e.d.FailedRows(e.ctx, e.db, e.table, dialects.DeadQuery{})
		if err != nil || len(failed) != 1 || failed[0].ID != id || failed[0].FailedAt == nil {
			t.Fatalf("QueryFailed: %v, %v; want row %d", idsOf(failed), err, id)
		}
		if s, _ := e.d.Stats(e.ctx, e.db, e.table); s.Failed != 1 || s.Awaiting != 0 {
			t.Errorf("stats %+v, want 1 failed", s)
		}
	})

	outboxCase(t, "Ignored", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		plain := e.rec("t", []byte("k"))
		e.insert(plain)
		e.publish(e.now)
		if out, row, err := e.ack(dialects.Ack{EventID: plain.EventID, Success: true, Attempt: 1, MaxAttempts: 3, Now: e.now}); err != nil || out != dialects.AckIgnored || row.Why == "" {
			t.Errorf("answer to an event that asked for none: %v (%q), %v; want ignored", out, row.Why, err)
		}
		if s := e.rows()[0]; s.ProcessedAt != nil {
			t.Errorf("row without an ack topic processed by an answer")
		}
		if _, _, err := e.ack(dialects.Ack{EventID: newEventID(), Success: true, Attempt: 1, MaxAttempts: 3, Now: e.now}); !errors.Is(err, dialects.ErrNoRow) {
			t.Errorf("answer to an unknown event: %v, want ErrNoRow", err)
		}
	})

	outboxCase(t, "FailedBeforeMark", func(t *testing.T) {
		// A FAILED answer that comes between the claim and Finish (the
		// consumer was fast) still re-sends the event: the mark does not
		// overwrite it. PostgreSQL makes the answer wait for the claim's
		// row lock; MySQL's mark is conditional on the process attempt.
		e := newOutboxEnv(t, h)
		r := e.rec("t", []byte("k"))
		r.AckTopic = "acks"
		id := e.insert(r)[0]
		p := e.open(dialects.ClaimOptions{})
		if got := e.claim(p, e.now, 10); len(got) != 1 {
			t.Fatalf("claimed %v, want row %d", idsOf(got), id)
		}
		type result struct {
			out dialects.AckOutcome
			err error
		}
		done := make(chan result, 1)
		go func() {
			out, _, err := e.ack(dialects.Ack{EventID: r.EventID, Attempt: 1, Reason: "fast", MaxAttempts: 3, Now: e.now})
			done <- result{out, err}
		}()
		var res result
		answered := false
		select {
		case res = <-done:
			answered = true
		case <-time.After(300 * time.Millisecond):
		}
		if err := p.Finish(e.ctx, dialects.Outcome{Now: e.now, Published: []int64{id}}); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		if !answered {
			res = <-done
		}
		if res.err != nil || res.out != dialects.AckResent {
			t.Fatalf("FAILED during the claim: %v, %v; want resent", res.out, res.err)
		}
		if s := e.row(id); s.PublishedAt != nil || s.ProcessAttempts != 2 {
			t.Fatalf("row %d: published %v, process attempt %d; want pending for attempt 2", id, s.PublishedAt, s.ProcessAttempts)
		}
	})

	outboxCase(t, "Resend", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		var recs []dialects.Record
		for _, k := range []string{"a", "b", "c"} {
			r := e.rec("t", []byte(k))
			r.AckTopic = "acks"
			recs = append(recs, r)
		}
		all := e.insert(recs...)
		e.publish(e.now)
		for _, r := range recs[:2] {
			if out, _, err := e.ack(dialects.Ack{EventID: r.EventID, Attempt: 1, MaxAttempts: 1, Now: e.now}); err != nil || out != dialects.AckGaveUp {
				t.Fatalf("FAILED to the only attempt: %v, %v; want gave up", out, err)
			}
		}
		failed, err := e.d.FailedRows(e.ctx, e.db, e.table, dialects.DeadQuery{Limit: 1})
		if err != nil || !slices.Equal(idsOf(failed), all[:1]) {
			t.Fatalf("QueryFailed(limit 1) = %v, %v; want %v", idsOf(failed), err, all[:1])
		}
		failed, err = e.d.FailedRows(e.ctx, e.db, e.table, dialects.DeadQuery{AfterID: all[0], Topic: "t"})
		if err != nil || !slices.Equal(idsOf(failed), all[1:2]) {
			t.Fatalf("QueryFailed(after %d) = %v, %v; want %v", all[0], idsOf(failed), err, all[1:2])
		}
		at := e.now.Add(time.Minute)
		n, err := e.d.Resend(e.ctx, e.db, dialects.ResendParams{Table: e.table, Now: at, IDs: all})
		if err != nil || n != 2 {
			t.Fatalf("Resend of 2 failed rows and an awaiting one: %d, %v; want 2", n, err)
		}
		for _, id := range all[:2] {
			s := e.row(id)
			if s.FailedAt != nil || s.PublishedAt != nil || s.ProcessAttempts != 2 || !sameTime(s.AvailableAt, at) || s.Headers["process-attempt"] != "2" {
				t.Errorf("resent row %d: failed %v, published %v, process attempt %d (header %q), due %v; want pending for attempt 2 at %v",
					id, s.FailedAt, s.PublishedAt, s.ProcessAttempts, s.Headers["process-attempt"], s.AvailableAt, at)
			}
		}
		if s := e.row(all[2]); s.PublishedAt == nil || s.ProcessAttempts != 1 {
			t.Errorf("row %d, awaiting an answer, was resent", all[2])
		}
		if n, err := e.d.Resend(e.ctx, e.db, dialects.ResendParams{Table: e.table, Now: at, IDs: all}); err != nil || n != 0 {
			t.Errorf("second Resend: %d, %v; want 0", n, err)
		}
		if _, err := e.d.Resend(e.ctx, e.db, dialects.ResendParams{Table: e.table, Now: at, IDs: nil}); !errors.Is(err, dialects.ErrNoIDs) {
			t.Errorf("Resend without ids: %v, want ErrNoIDs", err)
		}
		if got := e.claimAll(at); !slices.Equal(got, all[:2]) {
			t.Errorf("Claim after Resend = %v, want %v", got, all[:2])
		}
	})

	outboxCase(t, "Unanswered", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		var recs []dialects.Record
		for _, k := range []string{"a", "b", "c"} {
			r := e.rec("t", []byte(k))
			r.AckTopic = "acks"
			recs = append(recs, r)
		}
		e.insert(recs[0])
		e.publish(e.now.Add(-2 * time.Hour))
		e.insert(recs[1], recs[2])
		e.publish(e.now.Add(-time.Hour))
		e.keyed("t", "plain", 1)
		e.publish(e.now.Add(-3 * time.Hour)) // asks for no answer
		if out, _, err := e.ack(dialects.Ack{EventID: recs[2].EventID, Success: true, Attempt: 1, MaxAttempts: 1, Now: e.now}); err != nil || out != dialects.AckProcessed {
			t.Fatalf("Acknowledge: %v, %v", out, err)
		}
		list := func(before time.Time, limit int) []string {
			t.Helper()
			us, err := e.d.Unanswered(e.ctx, e.db, dialects.UnansweredParams{Table: e.table, Before: before, Limit: limit})
			if err != nil {
				t.Fatalf("QueryUnanswered: %v", err)
			}
			var out []string
			for _, u := range us {
				if u.Topic != "t" || u.Attempt != 1 || u.PublishedAt.IsZero() {
					t.Errorf("unanswered %+v", u)
				}
				out = append(out, u.EventID)
			}
			return out
		}
		if got, want := list(e.now, 10), []string{recs[0].EventID, recs[1].EventID}; !slices.Equal(got, want) {
			t.Errorf("unanswered before now = %v, want %v (oldest first)", got, want)
		}
		if got, want := list(e.now, 1), []string{recs[0].EventID}; !slices.Equal(got, want) {
			t.Errorf("unanswered, limit 1 = %v, want %v", got, want)
		}
		if got := list(e.now.Add(-90*time.Minute), 10); !slices.Equal(got, []string{recs[0].EventID}) {
			t.Errorf("unanswered before 90 minutes ago = %v, want the first only", got)
		}
	})
}

// ack applies a in a transaction of its own (safe from any goroutine).
func (e *outboxEnv) ack(a dialects.Ack) (out dialects.AckOutcome, row dialects.AckRow, err error) {
	tx, err := e.db.BeginTx(e.ctx, nil)
	if err != nil {
		return 0, row, err
	}
	out, row, err = e.d.Acknowledge(e.ctx, tx, e.table, a)
	if err != nil {
		_ = tx.Rollback()
		return out, row, err
	}
	return out, row, tx.Commit()
}
