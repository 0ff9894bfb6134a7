package postgres

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/stdlib"

	"github.com/go-outbox/outbox/dialects"
)

var _ dialects.Listener = Dialect{}

// Listen implements dialects.Listener: on a connection of its own taken
// from db (pgx), it LISTENs on the table's channel and calls notify for
// every notification, that is, after every commit that wrote outbox rows.
// When the connection drops it takes another (backing off up to 5 s) and
// calls notify once, for what it may have missed. It returns when ctx is
// done, or at once if db's driver is not pgx.
func (d Dialect) Listen(ctx context.Context, db *sql.DB, t dialects.Table, notify func(), onError func(error)) error {
	wait := 100 * time.Millisecond
	for first := true; ctx.Err() == nil; first = false {
		err := d.listenOnce(ctx, db, t, notify, !first)
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errNotPgx) {
			return err
		}
		if onError != nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		wait = min(wait*2, 5*time.Second)
	}
	return nil
}

var errNotPgx = errors.New("postgres Listen needs the pgx driver (gorm.io/driver/postgres's default)")

func (d Dialect) listenOnce(ctx context.Context, db *sql.DB, t dialects.Table, notify func(), missed bool) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", t, err)
	}
	defer conn.Close()
	return conn.Raw(func(dc any) error {
		sc, ok := dc.(*stdlib.Conn)
		if !ok {
			return errNotPgx
		}
		pc := sc.Conn()
		if _, err := pc.Exec(ctx, `LISTEN `+d.Quote(Channel(t))); err != nil {
			return badConn(ctx, fmt.Errorf("listen on %s: %w", t, err))
		}
		if missed {
			notify() // rows may have been committed while no one listened
		}
		for {
			if _, err := pc.WaitForNotification(ctx); err != nil {
				return badConn(ctx, fmt.Errorf("listen on %s: %w", t, err))
			}
			notify()
		}
	})
}

// badConn makes database/sql discard the connection (it is listening, or
// broken) instead of returning it to the pool; err is still reported.
func badConn(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return errors.Join(driver.ErrBadConn, ctx.Err())
	}
	return errors.Join(driver.ErrBadConn, err)
}

// SetNotify enables or disables the outbox table's NOTIFY trigger, only
// when it is not already in that state (ALTER TABLE takes a brief ACCESS
// EXCLUSIVE lock on the table, which must not happen at every start-up).
func (d Dialect) SetNotify(ctx context.Context, db *sql.DB, t dialects.Table, on bool) error {
	var enabled string
	err := db.QueryRowContext(ctx, `SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2`,
		t.Qualified(d), t.Name+"_notify").Scan(&enabled)
	if err != nil {
		return fmt.Errorf("notify trigger of %s: %w", t, err)
	}
	if (enabled != "D") == on {
		return nil
	}
	verb := "DISABLE"
	if on {
		verb = "ENABLE"
	}
	if _, err := db.ExecContext(ctx, `ALTER TABLE `+t.Qualified(d)+` `+verb+` TRIGGER `+d.Quote(t.Name+"_notify")); err != nil {
		return fmt.Errorf("notify trigger of %s: %w", t, err)
	}
	return nil
}
