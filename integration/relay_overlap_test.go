package integration

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// failOncePublisher fails, once, the first message that is not the first
// of its call (so that the call is not failed whole, which ends the pass),
// slowly (so that the relay's next claim, made meanwhile on its fork, is
// in), and records every message it accepts, in order.
type failOncePublisher struct {
	delay time.Duration

	mu     sync.Mutex
	failed bool
	got    []seqEvent
}

func (p *failOncePublisher) Publish(_ context.Context, msgs []gormoutbox.Message) error {
	errs := make(gormoutbox.PublishErrors, len(msgs))
	failing := false
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, m := range msgs {
		var e seqEvent
		if err := json.Unmarshal(m.Value, &e); err != nil {
			return err
		}
		if failing {
			// Like a broker's: the later messages of the key are not written.
			errs[i] = gormoutbox.ErrHeldBack
			continue
		}
		if i > 0 && !p.failed {
			p.failed, failing = true, true
			errs[i] = errors.New("record rejected")
			time.Sleep(p.delay)
			continue
		}
		p.got = append(p.got, e)
	}
	if failing {
		return errs
	}
	return nil
}

func (p *failOncePublisher) Close() error { return nil }

// With Overlap the relay claims a worker's next batch while the current
// one is published (a forked pass). When a row of the current batch
// fails, the rows of its key in the next batch — claimed beside it — are
// held back and published after it, in order; nothing is lost.
func TestRelayOverlapHoldsBackFailedKey(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		const n = 12
		writeSeqEvents(t, db, "overlap", 1, n, 1, n)
		pub := &failOncePublisher{delay: 300 * time.Millisecond}
		r := newRelay(t, db, pub, gormoutbox.RelayConfig{BatchSize: 2, Workers: 1, Overlap: true,
			MinBackoff: 10 * time.Millisecond, MaxBackoff: 10 * time.Millisecond, LockWait: -1})
		drainUntilEmpty(t, r, 30*time.Second)
		var seqs []int
		for _, e := range pub.got {
			seqs = append(seqs, e.Seq)
		}
		want := make([]int, n)
		for i := range want {
			want[i] = i
		}
		if !slices.Equal(seqs, want) {
			t.Fatalf("published in the order %v, want %v (one failed once)", seqs, want)
		}
	})
}
