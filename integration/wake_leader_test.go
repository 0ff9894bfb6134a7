package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/postgres"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// The PostgreSQL wake-up protocol (pgxlisten, schema version 7): a writer
// notifies only while the leading listener is armed; while a writer that
// did not notify is at work, the leader stays disarmed and wakes the
// relays itself; once it is done, the leader arms again and writers
// notify again.
func TestWakeArmed(t *testing.T) {
	for _, d := range testenv.Dialects() {
		if d.Name != "postgres" {
			continue
		}
		ctx := context.Background()
		const table = "outbox_armed" // a channel and locks of its own
		db, p := setup(t, d, nil, gormoutbox.Config{Table: table}, &Inventory{})
		sqlDB, _ := db.DB()
		tbl, err := dialects.ParseTable(p.Table())
		if err != nil {
			t.Fatal(err)
		}
		arm, _ := postgres.WakeLocks(tbl)

		// A plain LISTEN session, which does not arm: what do writers send?
		heard := make(chan uint32, 1000)
		plain, err := sqlDB.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		lctx, stopPlain := context.WithCancel(ctx)
		plainDone := make(chan struct{})
		go func() {
			defer close(plainDone)
			_ = plain.Raw(func(dc any) error {
				pc := dc.(*stdlib.Conn).Conn()
				if _, err := pc.Exec(lctx, `LISTEN `+postgres.Dialect{}.Quote(postgres.Channel(tbl))); err != nil {
					t.Error(err)
					return err
				}
				for {
					n, err := pc.WaitForNotification(lctx)
					if err != nil {
						return errors.New("done") // the connection is discarded
					}
					heard <- n.PID
				}
			})
		}()
		t.Cleanup(func() { stopPlain(); <-plainDone; _ = plain.Close() })
		time.Sleep(100 * time.Millisecond) // LISTEN issued
		drain := func() int {
			n := 0
			for {
				select {
				case <-heard:
					n++
				default:
					return n
				}
			}
		}

		// No listener leads: commits do not notify.
		if err := db.Create(&Inventory{SKU: "unheard"}).Error; err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if n := drain(); n != 0 {
			t.Fatalf("%d notifications of a commit while no listener waits, want 0", n)
		}

		// A leader arms: the next commit notifies.
		r := newRelay(t, db, &slowPublisher{}, gormoutbox.RelayConfig{Table: table})
		var woken atomic.Int64
		rctx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- r.ListenWith(rctx, func() { woken.Add(1) }, pgListen("")) }()
		t.Cleanup(func() { stop(); <-done })
		armedBy := func() (pid int, ok bool) {
			err := sqlDB.QueryRow(`SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2
  AND objsubid = 1 AND mode = 'ExclusiveLock' AND granted`, int64(uint32(arm>>32)), int64(uint32(arm))).Scan(&pid)
			if errors.Is(err, sql.ErrNoRows) {
				return 0, false
			}
			if err != nil {
				t.Fatal(err)
			}
			return pid, true
		}
		waitFor(t, 10*time.Second, "the leader to arm", func() bool { _, ok := armedBy(); return ok })
		leader, _ := armedBy()
		if err := db.Create(&Inventory{SKU: "heard"}).Error; err != nil {
			t.Fatal(err)
		}
		select {
		case pid := <-heard:
			if int(pid) == leader {
				t.Fatalf("first notification after a commit came from the leader (%d), want the writer's", pid)
			}
		case <-time.After(2 * time.Second):
			t.Fatal("no notification of a commit while the leader is armed")
		}

		// A transaction holding the arm lock shared, as a writer that did
		// not notify: the leader cannot arm and wakes the relays itself.
		tx, err := sqlDB.BeginTx(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = tx.Rollback() }()
		// Try (never wait: the leader may have armed again, and then only
		// a writer's notification disarms it), nudging the leader with a
		// commit between tries.
		for i := 0; ; i++ {
			var got bool
			if err := tx.QueryRow(`SELECT pg_try_advisory_xact_lock_shared($1)`, arm).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got {
				break
			}
			if i == 200 {
				t.Fatal("the leader stays armed after 200 notifying commits")
			}
			if err := db.Create(&Inventory{SKU: fmt.Sprint("nudge-", i)}).Error; err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
		before := woken.Load()
		time.Sleep(200 * time.Millisecond)
		if _, ok := armedBy(); ok {
			t.Fatal("the leader armed while a writer holds the arm lock")
		}
		if n := woken.Load() - before; n < 5 {
			t.Fatalf("%d wake-ups in 200ms while a writer that did not notify is at work, want several", n)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 2*time.Second, "the leader to arm again", func() bool { _, ok := armedBy(); return ok })
		drain()
		if err := db.Create(&Inventory{SKU: "heard-again"}).Error; err != nil {
			t.Fatal(err)
		}
		select {
		case <-heard:
		case <-time.After(2 * time.Second):
			t.Fatal("no notification of a commit after the leader armed again")
		}
	}
}
