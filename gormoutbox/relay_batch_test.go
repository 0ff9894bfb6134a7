package gormoutbox

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// fakePass records the outcome Finish is given.
type fakePass struct {
	finished []dialects.Outcome
	err      error
}

func (p *fakePass) Claim(context.Context, time.Time, int) ([]dialects.Row, error) { return nil, nil }
func (p *fakePass) Finish(_ context.Context, o dialects.Outcome) error {
	p.finished = append(p.finished, o)
	return p.err
}
func (p *fakePass) Close() error { return nil }

// fakePublisher fails the messages of fail (by event id) with their
// error, or every message with all.
type fakePublisher struct {
	fail map[string]error
	all  error
	got  []string // event ids given to Publish
}

func (p *fakePublisher) Publish(_ context.Context, msgs []Message) error {
	if p.all != nil {
		for _, m := range msgs {
			p.got = append(p.got, m.EventID)
		}
		return p.all
	}
	errs := make(PublishErrors, len(msgs))
	failed := false
	for i, m := range msgs {
		p.got = append(p.got, m.EventID)
		if err, ok := p.fail[m.EventID]; ok {
			errs[i], failed = err, true
		}
	}
	if failed {
		return errs
	}
	return nil
}

// vetoHook vetoes the messages of veto (by event id) with their error and
// records what the relay told it.
type vetoHook struct {
	HookBase
	veto                 map[string]error
	after, errored, dead []string
}

func (h *vetoHook) BeforePublish(_ context.Context, m *Message) error { return h.veto[m.EventID] }
func (h *vetoHook) AfterPublish(_ context.Context, m *Message, _ time.Duration) {
	h.after = append(h.after, m.EventID)
}
func (h *vetoHook) OnError(_ context.Context, m *Message, _ error, attempt int) {
	h.errored = append(h.errored, fmt.Sprintf("%s@%d", m.EventID, attempt))
}
func (h *vetoHook) OnDeadLetter(_ context.Context, m *Message, _ error, attempts int) {
	h.dead = append(h.dead, fmt.Sprintf("%s@%d", m.EventID, attempts))
}

func batchRelay(pub Publisher, now time.Time, hooks ...Hook) *Relay {
	return &Relay{
		cfg: RelayConfig{MaxAttempts: 3, MinBackoff: 4 * time.Second, MaxBackoff: time.Minute, Hooks: hooks,
			Now: func() time.Time { return now }},
		pub: pub, log: slog.New(slog.DiscardHandler), warn: logLimiter{every: WarnInterval},
	}
}

func batchRow(id int64, key string, attempts int) Row {
	r := Row{ID: id, EventID: fmt.Sprint("e", id), Topic: "t", EventType: "Changed", Attempts: attempts}
	if key != "" {
		r.Key = []byte(key)
	}
	return r
}

// One batch against a fake Pass: the hooks' veto keeps messages (and the
// later ones of their key) out of the Publish call, and the outcome given
// to Finish holds the published ids, the retries with their attempts,
// backoff and dead flag, and the key of each retry.
func TestBatchOutcome(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	tooLarge := fmt.Errorf("broker: %w", ErrMessageTooLarge)
	pub := &fakePublisher{fail: map[string]error{
		"e2": errors.New("leader not available"),
		"e3": ErrHeldBack,
		"e4": errors.New("timeout"),
		"e7": tooLarge,
	}}
	hook := &vetoHook{veto: map[string]error{"e5": fmt.Errorf("bad payload: %w", ErrDeadLetter)}}
	r := batchRelay(pub, now, hook)
	rows := []Row{
		batchRow(1, "a", 0), // published
		batchRow(2, "b", 0), // fails: retried (attempt 1)
		batchRow(3, "b", 0), // held back by the publisher behind 2
		batchRow(4, "c", 2), // fails its third attempt: dead
		batchRow(5, "d", 0), // vetoed into the dead letters by the hook
		batchRow(6, "d", 0), // held back behind the veto: never sent
		batchRow(7, "e", 1), // too large: dead at once
		batchRow(8, "", 0),  // no key: published
	}
	pass := &fakePass{}
	var pl passLog
	res, allFailed, _, err := r.batch(context.Background(), pass, slices.Clone(rows), &pl, nil)
	if err != nil || allFailed {
		t.Fatalf("batch: allFailed %v, err %v", allFailed, err)
	}
	if want := []string{"e1", "e2", "e3", "e4", "e7", "e8"}; !slices.Equal(pub.got, want) {
		t.Errorf("published %v, want %v (the vetoed e5 and e6 behind it are not sent)", pub.got, want)
	}
	if want := (DrainResult{Batches: 1, Published: 2, Retried: 1, Dead: 3, HeldBack: 2}); res != want {
		t.Errorf("result %+v, want %+v", res, want)
	}
	if len(pass.finished) != 1 {
		t.Fatalf("Finish called %d times, want 1", len(pass.finished))
	}
	out := pass.finished[0]
	if !out.Now.Equal(now) || out.Delete {
		t.Errorf("outcome Now %v, Delete %v", out.Now, out.Delete)
	}
	if !slices.Equal(out.Published, []int64{1, 8}) {
		t.Errorf("published ids %v, want [1 8]", out.Published)
	}
	type retry struct {
		id       int64
		attempts int
		dead     bool
	}
	var got []retry
	for _, rt := range out.Retries {
		got = append(got, retry{rt.ID, rt.Attempts, rt.Dead})
		if rt.Error == "" {
			t.Errorf("retry of row %d has no error text", rt.ID)
		}
	}
	want := []retry{{2, 1, false}, {4, 3, true}, {5, 1, true}, {7, 2, true}}
	if !slices.Equal(got, want) {
		t.Errorf("retries %+v, want %+v", got, want)
	}
	// MinBackoff × 2^0 with equal jitter: in [2s, 4s).
	if d := out.Retries[0].AvailableAt.Sub(now); d < 2*time.Second || d >= 4*time.Second {
		t.Errorf("row 2 due in %v, want 2s..4s", d)
	}
	if len(out.Keys) != len(out.Retries) {
		t.Fatalf("%d keys for %d retries", len(out.Keys), len(out.Retries))
	}
	for i, k := range out.Keys {
		if row := rows[out.Retries[i].ID-1]; k.Topic != row.Topic || string(k.Key) != string(row.Key) {
			t.Errorf("key of retry %d = %s/%q, want %s/%q", out.Retries[i].ID, k.Topic, k.Key, row.Topic, row.Key)
		}
	}
	if !slices.Equal(hook.after, []string{"e1", "e8"}) {
		t.Errorf("AfterPublish for %v, want [e1 e8]", hook.after)
	}
	if want := []string{"e2@1", "e3@0", "e6@0"}; !slices.Equal(hook.errored, want) {
		t.Errorf("OnError for %v, want %v", hook.errored, want)
	}
	if want := []string{"e4@3", "e5@1", "e7@2"}; !slices.Equal(hook.dead, want) {
		t.Errorf("OnDeadLetter for %v, want %v", hook.dead, want)
	}
}

// A batch of which nothing was published reports allFailed (Drain stops);
// a batch the hooks veto whole is never handed to the Publisher.
func TestBatchAllFailed(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	pub := &fakePublisher{all: errors.New("brokers down")}
	pass := &fakePass{}
	res, allFailed, _, err := batchRelay(pub, now).batch(context.Background(), pass,
		[]Row{batchRow(1, "a", 0), batchRow(2, "b", 0)}, &passLog{}, nil)
	if err != nil || !allFailed || res.Retried != 2 || res.Published != 0 {
		t.Errorf("publisher down: result %+v, allFailed %v, err %v; want 2 retried, allFailed", res, allFailed, err)
	}

	hook := &vetoHook{veto: map[string]error{"e1": errors.New("no"), "e2": errors.New("no")}}
	pub = &fakePublisher{}
	res, allFailed, _, err = batchRelay(pub, now, hook).batch(context.Background(), pass,
		[]Row{batchRow(1, "a", 0), batchRow(2, "b", 0)}, &passLog{}, nil)
	if err != nil || !allFailed || res.Retried != 2 || len(pub.got) != 0 {
		t.Errorf("all vetoed: result %+v, allFailed %v, err %v, sent %v; want 2 retried, none sent", res, allFailed, err, pub.got)
	}
}

// When Finish fails, batch reports the error and counts nothing but the
// batch: the rows stay pending and are claimed again.
func TestBatchFinishError(t *testing.T) {
	fail := errors.New("connection reset")
	pass := &fakePass{err: fail}
	res, _, _, err := batchRelay(&fakePublisher{}, time.Now()).batch(context.Background(), pass,
		[]Row{batchRow(1, "a", 0)}, &passLog{}, nil)
	if !errors.Is(err, fail) || res != (DrainResult{Batches: 1}) {
		t.Errorf("result %+v, err %v; want only the batch counted and the Finish error", res, err)
	}
}

// A batch claimed while the batch before it was in flight (a forked pass)
// holds back the rows of the keys that batch left unpublished: they are
// neither sent nor in the outcome, and batch reports their keys in turn.
func TestBatchPriorKeysHeldBack(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	pub := &fakePublisher{fail: map[string]error{"e1": errors.New("leader not available")}}
	pass := &fakePass{}
	res, _, unpublished, err := batchRelay(pub, now).batch(context.Background(), pass,
		[]Row{batchRow(1, "a", 0), batchRow(2, "b", 0), batchRow(3, "", 0), batchRow(4, "c", 0)}, &passLog{},
		map[string]bool{"t\x00b": true, "t\x00": true})
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"e1", "e3", "e4"}; !slices.Equal(pub.got, want) {
		t.Errorf("published %v, want %v (e2's key was left unpublished by the batch before)", pub.got, want)
	}
	if res.HeldBack != 1 || res.Published != 2 || res.Retried != 1 {
		t.Errorf("result %+v, want 1 held back, 2 published, 1 retried", res)
	}
	if len(pass.finished) != 1 || slices.Contains(pass.finished[0].Published, 2) {
		t.Fatalf("outcome %+v: row 2 must be left untouched", pass.finished)
	}
	for _, r := range pass.finished[0].Retries {
		if r.ID == 2 {
			t.Errorf("row 2 in the retries: %+v", r)
		}
	}
	if !unpublished["t\x00a"] || !unpublished["t\x00b"] || unpublished["t\x00c"] {
		t.Errorf("unpublished keys %v, want a (failed) and b (held back), not c", unpublished)
	}
}
