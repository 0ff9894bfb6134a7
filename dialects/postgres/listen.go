package postgres

import (
	"context"
	"crypto/rand"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"

	"github.com/go-outbox/outbox/dialects"
)

var _ dialects.Listener = Dialect{}

// ErrTransactionPooler is returned by Listen and ListenDSN when their
// connection goes through a connection pooler in transaction (or
// statement) pooling mode, such as PgBouncer with pool_mode = transaction.
// LISTEN is session state: such a pooler hands the server connection that
// ran LISTEN to other clients after each transaction, so notifications
// never reach the listener (and the server connection, back in the pool,
// keeps listening for whoever uses it next). The way out is a connection of
// the listener's own that bypasses the pooler: the PostgreSQL server itself,
// or a pool in session mode.
var ErrTransactionPooler = errors.New("LISTEN does not work through a transaction pooler (PgBouncer pool_mode = transaction or statement)")

// probeTimeout is how long Listen waits, when its connection goes through
// a pooler, for a notification sent from a second connection before it
// concludes that the pooler does not keep its session (ErrTransactionPooler).
// Through a pool in session mode it arrives within milliseconds.
const probeTimeout = 2 * time.Second

// Listen implements dialects.Listener: on a connection of its own taken
// from db (pgx), it LISTENs on the table's channel and calls notify for
// every notification, that is, after every commit that wrote outbox rows.
// When the connection drops it takes another (backing off up to 5 s) and
// calls notify once, for what it may have missed. It returns nil when ctx
// is done; at once an error if db's driver is not pgx, and an error
// wrapping ErrTransactionPooler if db reaches the server through a
// transaction pooler (see ListenDSN).
func (d Dialect) Listen(ctx context.Context, db *sql.DB, t dialects.Table, notify func(), onError func(error)) error {
	return d.listen(ctx, poolConn(db), t, notify, onError)
}

// ListenDSN is Listen on connections it opens itself from dsn (a pgx
// connection string, URL or key=value) instead of taking them from the
// relay's pool. It exists for services that reach PostgreSQL through a
// transaction pooler such as PgBouncer: everything else works through the
// pooler, but LISTEN needs a session of its own, so dsn must name the
// server itself (or a pool in session mode). A dsn pgx cannot parse is
// returned at once, as is ErrTransactionPooler when dsn names a transaction
// pooler after all.
func (d Dialect) ListenDSN(ctx context.Context, dsn string, t dialects.Table, notify func(), onError func(error)) error {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", t, err)
	}
	return d.listen(ctx, dsnConn(cfg), t, notify, onError)
}

// withConn runs f on a listening connection, which it closes (or discards)
// when f returns.
type withConn func(ctx context.Context, f func(pc *pgx.Conn) error) error

// poolConn takes the connection from db. When f fails, database/sql
// discards the connection (it is listening, or broken) instead of putting
// it back in the pool.
func poolConn(db *sql.DB) withConn {
	return func(ctx context.Context, f func(pc *pgx.Conn) error) error {
		conn, err := db.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		var ferr error
		err = conn.Raw(func(dc any) error {
			sc, ok := dc.(*stdlib.Conn)
			if !ok {
				return errNotPgx
			}
			if ferr = f(sc.Conn()); ferr != nil {
				return driver.ErrBadConn
			}
			return nil
		})
		if ferr != nil {
			return ferr
		}
		return err
	}
}

// dsnConn opens a connection of its own from cfg.
func dsnConn(cfg *pgx.ConnConfig) withConn {
	return func(ctx context.Context, f func(pc *pgx.Conn) error) error {
		pc, err := pgx.ConnectConfig(ctx, cfg)
		if err != nil {
			return err
		}
		defer func() {
			cctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			_ = pc.Close(cctx)
		}()
		return f(pc)
	}
}

func (d Dialect) listen(ctx context.Context, with withConn, t dialects.Table, notify func(), onError func(error)) error {
	wait := 100 * time.Millisecond
	for first := true; ctx.Err() == nil; first = false {
		err := with(ctx, func(pc *pgx.Conn) error { return d.listenOn(ctx, pc, t, notify, !first) })
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errNotPgx) || errors.Is(err, ErrTransactionPooler) {
			return err
		}
		if onError != nil {
			onError(fmt.Errorf("listen on %s: %w", t, err))
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

func (d Dialect) listenOn(ctx context.Context, pc *pgx.Conn, t dialects.Table, notify func(), missed bool) error {
	if err := checkSession(ctx, pc, t); err != nil {
		return err
	}
	// Without arguments pgx sends these with the simple protocol: no
	// prepared statement, whatever the connection's query exec mode.
	if _, err := pc.Exec(ctx, `LISTEN `+d.Quote(Channel(t))); err != nil {
		return err
	}
	if missed {
		notify() // rows may have been committed while no one listened
	}
	for {
		if _, err := pc.WaitForNotification(ctx); err != nil {
			return err
		}
		notify()
	}
}

// checkSession returns an error wrapping ErrTransactionPooler when pc
// reaches the server through a pooler that does not keep its session.
//
// A direct connection's BackendKeyData names its server process, so its
// key pid is pg_backend_pid(); a pooler hands out keys of its own (it must
// route cancel requests itself), and that is all it costs a direct
// connection: one query. Through a pooler, whether LISTEN works is then
// tried: LISTEN on a probe channel, NOTIFY it from a second connection,
// wait probeTimeout. A session-mode pool delivers it; a transaction pooler
// has given the listening server connection back to its pool, where the
// NOTIFY either lands on it (and the notification goes to the notifier) or
// reaches it idle (and PgBouncer drops it). A LISTEN then NOTIFY on the
// one connection would prove nothing: with an otherwise idle pool both
// statements get the same server connection and the notification comes
// back as if the session were kept.
func checkSession(ctx context.Context, pc *pgx.Conn, t dialects.Table) error {
	var serverPID uint32
	if err := pc.QueryRow(ctx, `SELECT pg_backend_pid()`, pgx.QueryExecModeSimpleProtocol).Scan(&serverPID); err != nil {
		return err
	}
	keyPID := pc.PgConn().PID()
	if serverPID == keyPID {
		return nil
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	probe := `gormoutbox_probe_` + hex.EncodeToString(b[:])
	if _, err := pc.Exec(ctx, `LISTEN `+probe); err != nil {
		return err
	}
	// pc's config carries pc's own notification handler (pgx installs it
	// at connect): copied as it is, the second connection would hand its
	// notifications to pc, and a NOTIFY the pooler routes back to the
	// notifier would look like one that reached the listener.
	cfg := pc.Config()
	cfg.OnNotification = nil
	other, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("probe whether the pooler keeps the session: %w", err)
	}
	_, err = other.Exec(ctx, `NOTIFY `+probe)
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = other.Close(cctx)
	cancel()
	if err != nil {
		return fmt.Errorf("probe whether the pooler keeps the session: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	// Any notification will do: a transaction pooler forwards nothing to
	// a client between its transactions. (With an OnNotification handler
	// of the user's in the config, pgx reports it without its channel.)
	_, err = pc.WaitForNotification(wctx)
	if err == nil {
		_, err = pc.Exec(ctx, `UNLISTEN `+probe)
		return err
	}
	if ctx.Err() != nil || wctx.Err() == nil {
		return err
	}
	// Best effort: the server connection that ran LISTEN is likely the one
	// the pooler gives us now.
	uctx, ucancel := context.WithTimeout(ctx, time.Second)
	_, _ = pc.Exec(uctx, `UNLISTEN `+probe)
	ucancel()
	c := pc.Config()
	return fmt.Errorf("listen on %s via %s:%d/%s: %w: the connection is pooled (its cancel key names process %d, the server says it is process %d) "+
		"and a NOTIFY from a second connection did not reach it within %v; "+
		"give the listener a connection that bypasses the pooler: gormoutbox Relay.ListenWith(ctx, wake, gormoutbox.ListenOptions{DSN: \"postgres://…the server itself…\"}) "+
		"(or a PgBouncer database with pool_mode = session)",
		t, c.Host, c.Port, c.Database, ErrTransactionPooler, keyPID, serverPID, probeTimeout)
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
