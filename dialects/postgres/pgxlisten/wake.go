package pgxlisten

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/postgres"
)

// How a commit wakes the relays of every process without serialising the
// writers' commits (PostgreSQL holds a database-wide lock from a notifying
// transaction's pre-commit until its commit is flushed, so commits that
// NOTIFY queue behind each other).
//
// One listener of all processes leads (it holds the table's lead lock for
// its session; the others only listen and try to lead every leadRetry).
// The leader is armed while it holds the arm lock (postgres.WakeLocks)
// exclusively: the outbox table's trigger cannot take that lock shared
// then, and notifies. Every other writer takes it shared until its commit
// and does not notify. So:
//
//   - idle: the leader is armed and waits; the first commit notifies;
//   - a writer's notification: the leader disarms (unlocks) and wakes;
//   - disarmed, every probeEvery: the leader tries to arm. It fails while
//     a writer holds the lock shared, that is, while rows that nobody
//     announced are being written: it wakes every listener (a NOTIFY of
//     its own, outside any writer's transaction) and tries again later.
//     It succeeds when no such writer is left: every one of them has
//     committed (or rolled back), so one more wake-up covers them all, and
//     from then on the next writer notifies again.
//
// Under load the writers hardly ever notify: the leader polls, one
// round trip and one notification per probeEvery, instead. Nothing waits
// for the lock on either side (both only try it).
const (
	// probeEvery is how often a disarmed leader tries to arm (and wakes
	// the relays while it cannot): the wake-up latency under load.
	probeEvery = 2 * time.Millisecond
	// busyWithin: a writer that notifies sooner than this after the
	// leader armed finds the table busy, and the leader stays disarmed
	// longer next time (up to maxHold): the writers then notify a few
	// times per maxHold, whatever their rate.
	busyWithin = 20 * time.Millisecond
	maxHold    = 100 * time.Millisecond
	// leadRetry is how often a listener that does not lead tries to: how
	// long after a leader is gone (its connection closed) another takes
	// over.
	leadRetry = time.Second
)

// waker runs the protocol above on a listening connection.
type waker struct {
	pc     *pgx.Conn
	t      dialects.Table
	pid    uint32 // the server process of pc: its own NOTIFYs come back to it
	notify func()

	leads, armed bool
}

// listenSQL is LISTEN on t's channel.
func listenSQL(t dialects.Table) string {
	return `LISTEN ` + postgres.Dialect{}.Quote(postgres.Channel(t))
}

// do runs stmt on the listening connection and returns the first column
// of its last row ("t" or "f" for a lock function). The LISTEN ahead of
// it (a no-op: the session listens already) keeps pg_stat_activity
// showing the connection as a listener, as operators and the tests look
// for it ("query LIKE 'LISTEN %'").
func (w *waker) do(ctx context.Context, stmt string) (string, error) {
	res, err := w.pc.PgConn().Exec(ctx, listenSQL(w.t)+`; `+stmt).ReadAll()
	if err != nil {
		return "", err
	}
	last := res[len(res)-1]
	if len(last.Rows) == 0 || len(last.Rows[0]) == 0 {
		return "", nil
	}
	return string(last.Rows[0][0]), nil
}

func (w *waker) run(ctx context.Context) error {
	arm, lead := postgres.WakeLocks(w.t)
	tryLead := func() error {
		got, err := w.do(ctx, `SELECT pg_try_advisory_lock(`+strconv.FormatInt(lead, 10)+`)`)
		w.leads = got == "t"
		return err
	}
	// tryArm reports whether the leader armed, or whether writers that
	// did not notify are still at work.
	tryArm := func() (bool, error) {
		got, err := w.do(ctx, `SELECT pg_try_advisory_lock(`+strconv.FormatInt(arm, 10)+`)`)
		w.armed = got == "t"
		return w.armed, err
	}
	broadcast := func() error {
		w.notify()
		_, err := w.do(ctx, `NOTIFY `+postgres.Dialect{}.Quote(postgres.Channel(w.t)))
		return err
	}
	if err := tryLead(); err != nil {
		return err
	}
	if w.leads {
		// Armed at once, silently: nothing was written unannounced yet
		// (what was written before this listener, Listen's caller
		// reports as missed).
		if _, err := tryArm(); err != nil {
			return err
		}
	}
	var (
		next    time.Time // when a disarmed leader tries to arm again
		armedAt time.Time
		hold    = probeEvery
		probed  time.Time // the disarmed leader's last round
	)
	if w.armed {
		armedAt = time.Now()
	}
	for {
		var wait time.Duration // 0: until a notification
		switch {
		case !w.leads:
			wait = leadRetry
		case w.armed:
		case time.Since(probed) < probeEvery:
			// Woken early (the leader's own broadcast): wait out the round.
			wait = probeEvery - time.Since(probed)
		default:
			probed = time.Now()
			if !probed.Before(next) {
				armed, err := tryArm()
				if err != nil {
					return err
				}
				if armed {
					armedAt = time.Now()
				}
			}
			// Armed: the writers that did not notify are done; wake the
			// relays once for them. Not armed: writers may be at work.
			if err := broadcast(); err != nil {
				return err
			}
			if !w.armed {
				wait = probeEvery
			}
		}
		n, err := w.wait(ctx, wait)
		switch {
		case err != nil:
			return err
		case n == nil: // the wait ended
			if !w.leads {
				if err := tryLead(); err != nil {
					return err
				}
			}
		case n.PID == w.pid: // this leader's own broadcast
		default:
			w.notify()
			if w.armed {
				// A writer notified: the relays are awake. Writers stop
				// notifying until the leader arms again: after probeEvery
				// when the table was quiet, after twice the last hold (up
				// to maxHold) when a writer notified soon after the arming
				// (a busy table: the leader wakes the relays every
				// probeEvery meanwhile, which costs the writers nothing).
				if _, err := w.do(ctx, `SELECT pg_advisory_unlock(`+strconv.FormatInt(arm, 10)+`)`); err != nil {
					return err
				}
				w.armed = false
				if time.Since(armedAt) < busyWithin {
					hold = min(2*hold, maxHold)
				} else {
					hold = probeEvery
				}
				next = time.Now().Add(hold)
			}
		}
	}
}

// wait waits up to d (0: without end) for a notification; nil when d
// passed without one.
func (w *waker) wait(ctx context.Context, d time.Duration) (*pgconn.Notification, error) {
	if d == 0 {
		return w.pc.WaitForNotification(ctx)
	}
	wctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	n, err := w.pc.WaitForNotification(wctx)
	if err != nil && ctx.Err() == nil && errors.Is(wctx.Err(), context.DeadlineExceeded) {
		return nil, nil // the connection survives a timed-out wait (pgconn only closes it on other errors)
	}
	return n, err
}
