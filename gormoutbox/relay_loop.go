package gormoutbox

import (
	"context"
	"database/sql"
	"errors"
	"sync"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// DrainResult counts what one Drain did.
type DrainResult struct {
	// Batches is the number of claims that returned rows.
	Batches int
	// Published, Retried and Dead count rows by outcome; HeldBack counts
	// rows left for later because an earlier row of their key failed.
	Published, Retried, Dead, HeldBack int
}

func (a *DrainResult) add(b DrainResult) {
	a.Batches += b.Batches
	a.Published += b.Published
	a.Retried += b.Retried
	a.Dead += b.Dead
	a.HeldBack += b.HeldBack
}

// Drain runs one relay pass: it claims and publishes batches until no due
// row is left, the Budget is spent, ctx is done, or a whole batch failed
// (the broker is likely down; the rows wait for their backoff). A batch
// that has started is always finished — published and marked — even when
// ctx is cancelled meanwhile, so that stopping never turns a sent message
// into a duplicate.
//
// While the broker is down (batches fail with ErrBrokerUnavailable) the
// relay backs off as a whole: a Drain within the backoff returns at once,
// having claimed nothing.
func (r *Relay) Drain(ctx context.Context) (DrainResult, error) {
	start := time.Now()
	if until, paused := r.outage.pausedUntil(r.cfg.Now()); paused {
		r.log.Debug("outbox relay: broker unavailable, backing off", "until", until)
		return DrainResult{}, nil
	}
	r.refreshSource(ctx)
	// ShardLocks matter to dialects that lock shards
	// (dialects.Capabilities.LocksShards);
	// the others ignore them.
	opts := dialects.ClaimOptions{Shards: r.cfg.Shards, MaxBytes: max(r.cfg.BatchBytes, 0),
		ShardLocks: dialects.ShardLocks{Max: r.cfg.MaxShards, Wait: max(r.cfg.LockWait, 0)},
		// The claim is held while the batch is published: twice the
		// publish deadline leaves room for the hooks, the claim and the
		// finish.
		TxTimeout: 2 * r.cfg.PublishTimeout, SkipDeadKeys: r.cfg.SkipDeadKeys,
		BlockedRecheck: r.cfg.BlockedRecheck}
	var (
		total DrainResult
		err   error
		pl    passLog
	)
	if w := r.cfg.Workers; w == 1 {
		total, err = r.drain(ctx, start, opts, newIdleGroup(1), &pl)
	} else {
		g := newIdleGroup(w)
		if opts.ShardLocks.Max > 0 {
			opts.ShardLocks.Max = (opts.ShardLocks.Max + w - 1) / w
		}
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []error
		)
		for i := 0; i < w; i++ {
			o := opts
			o.ShardMod, o.ShardRem = w, i
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := r.drain(ctx, start, o, g, &pl)
				mu.Lock()
				defer mu.Unlock()
				total.add(res)
				if err != nil {
					errs = append(errs, err)
				}
			}()
		}
		wg.Wait()
		err = errors.Join(errs...)
	}
	r.logPass(r.cfg.Now(), &pl)
	if total.Batches > 0 {
		r.log.Debug("outbox relay: pass", "batches", total.Batches, "published", total.Published,
			"retried", total.Retried, "dead", total.Dead, "held_back", total.HeldBack,
			"duration", time.Since(start))
	}
	return total, err
}

// drain is one worker's loop of Drain.
//
// With RelayConfig.Overlap, when the dialect's pass can be forked
// (dialects.Forker: PostgreSQL and MySQL), the worker claims the next
// batch on the fork while the current batch is published and marked, so
// that the claim's round trips and server time overlap the broker's; the
// batches are still published one after the other, in claim order, and
// the rows of the next batch whose key had a row left unpublished in the
// current one are held back (batch's prior). The passes run on the
// connections the relay holds (relay_conns.go); after an error they go
// back to the pool instead.
func (r *Relay) drain(ctx context.Context, start time.Time, opts dialects.ClaimOptions, g *idleGroup, pl *passLog) (DrainResult, error) {
	var total DrainResult
	conn, err := r.conns.get(ctx)
	if err != nil {
		g.leave()
		return total, err
	}
	opts.Conn = conn
	pass, err := r.d.Open(ctx, r.db, r.table, opts)
	if err != nil {
		r.conns.put(conn, false)
		g.leave()
		return total, err
	}
	var (
		fork     dialects.Pass
		forkConn *sql.Conn
	)
	if f, ok := pass.(dialects.Forker); ok && r.cfg.Overlap {
		if forkConn, err = r.conns.get(ctx); err != nil {
			_ = pass.Close()
			r.conns.put(conn, false)
			g.leave()
			return total, err
		}
		fork = f.Fork(forkConn)
	}
	idle := false
	var failed bool // an error: the held connections are not kept
	defer func() {
		ok := !failed
		for _, p := range []dialects.Pass{fork, pass} {
			if p == nil {
				continue
			}
			if cerr := p.Close(); cerr != nil {
				ok = false
				r.log.Error("outbox relay: closing pass", "error", cerr)
			}
		}
		r.conns.put(forkConn, ok)
		r.conns.put(conn, ok)
	}()
	var (
		rows  []Row           // claimed on pass, to publish next
		prior map[string]bool // keys left unpublished by the batch rows were claimed beside
	)
	for ctx.Err() == nil && time.Since(start) < r.cfg.Budget {
		if len(rows) == 0 {
			prior = nil
			kick := r.kicked() // taken before the claim: a Notify during it is not lost
			rows, err = pass.Claim(ctx, r.cfg.Now(), r.cfg.BatchSize)
			if err != nil {
				failed = true
				if !idle {
					g.leave()
				}
				if ctx.Err() != nil {
					return total, ctx.Err() // stopped between batches: nothing in flight
				}
				return total, err
			}
			if len(rows) == 0 {
				// Done when every worker has found nothing; until then keep
				// looking, for the others' pass is not over and new rows of
				// this worker's shards would otherwise wait for the next one.
				if !idle {
					idle = true
					if g.idle() {
						break
					}
				}
				if g.done() {
					break
				}
				t := time.NewTimer(idlePoll)
				select {
				case <-ctx.Done():
				case <-g.overCh:
				case <-kick:
				case <-t.C:
				}
				t.Stop()
				continue
			}
		}
		if idle {
			idle = false
			g.busy()
		}
		// The next claim runs on the fork while this batch is published.
		var (
			next     []Row
			nextErr  error
			nextDone chan struct{}
		)
		if fork != nil {
			nextDone = make(chan struct{})
			go func() {
				defer close(nextDone)
				next, nextErr = fork.Claim(ctx, r.cfg.Now(), r.cfg.BatchSize)
			}()
		}
		res, allFailed, unpublished, err := r.batch(context.WithoutCancel(ctx), pass, rows, pl, prior)
		total.add(res)
		if nextDone != nil {
			<-nextDone
		}
		rows = nil
		if err != nil {
			failed = true
			g.leave()
			return total, err // the fork's claim, if any, is released untouched
		}
		if allFailed {
			break
		}
		if _, paused := r.outage.pausedUntil(r.cfg.Now()); paused {
			break // the broker failed part of the batch: back off
		}
		if fork != nil {
			if nextErr != nil {
				failed = true
				g.leave()
				if ctx.Err() != nil {
					return total, ctx.Err()
				}
				return total, nextErr
			}
			rows, prior = next, unpublished
			pass, fork = fork, pass
		}
	}
	if !idle {
		g.leave()
	}
	return total, nil
}

// idlePoll is how often a worker that found nothing looks again while
// another worker of the pass is still busy.
const idlePoll = 5 * time.Millisecond

// idleGroup ends the workers of one Drain together: a worker that finds
// nothing is idle; when all are idle (or gone) at once, the pass is over.
type idleGroup struct {
	mu         sync.Mutex
	n, idleNow int
	over       bool
	overCh     chan struct{} // closed when over: idle workers stop waiting
}

func newIdleGroup(n int) *idleGroup { return &idleGroup{n: n, overCh: make(chan struct{})} }

// end marks the pass over; g.mu is held.
func (g *idleGroup) end() {
	if !g.over {
		g.over = true
		close(g.overCh)
	}
}

// idle marks one worker idle and reports whether the pass is over.
func (g *idleGroup) idle() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.idleNow++
	if g.idleNow >= g.n {
		g.end()
	}
	return g.over
}

// busy marks an idle worker busy again.
func (g *idleGroup) busy() {
	g.mu.Lock()
	g.idleNow--
	g.mu.Unlock()
}

// leave removes a busy worker for good (it stopped: budget, error).
func (g *idleGroup) leave() {
	g.mu.Lock()
	g.n--
	if g.idleNow >= g.n {
		g.end()
	}
	g.mu.Unlock()
}

func (g *idleGroup) done() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.over
}
