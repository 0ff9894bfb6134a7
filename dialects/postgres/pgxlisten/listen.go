// Package pgxlisten is PostgreSQL's LISTEN for the relay's wake-ups, on
// pgx. Give its listener to the relay where it runs on PostgreSQL:
//
//	go relay.ListenWith(ctx, wake, gormoutbox.ListenOptions{Listener: pgxlisten.New()})
//
// It is a package of its own so that a service on MySQL, which has no
// LISTEN, does not link pgx.
package pgxlisten

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
	"github.com/go-outbox/outbox/dialects/postgres"
)

// Listener LISTENs on the channel of an outbox table, whose trigger sends
// NOTIFY at the commit of a transaction that wrote rows to it while a
// listener waits for one (wake.go: while writers are at work, the leading
// listener notifies instead). It holds no state: the zero value is ready
// to use.
type Listener struct{}

var _ dialects.CommitListener = Listener{}

// New returns the listener.
func New() Listener { return Listener{} }

// Listen implements dialects.CommitListener: on a connection of its own,
// taken from p.DB (whose driver must be pgx) or opened from p.DSN (a pgx
// connection string, URL or key=value), it LISTENs on p.Table's channel and
// calls p.Notify for every notification: after a commit that wrote outbox
// rows, within about 2 ms (wake.go). When the connection drops it takes
// another (backing off up to 5 s), tells p.OnError, and calls p.Notify
// once, for what it may have missed. It returns nil when ctx is done; at once an error if p.DB's
// driver is not pgx or p.DSN cannot be parsed, and an error wrapping
// postgres.ErrTransactionPooler if the connection reaches the server
// through a transaction pooler (PgBouncer with pool_mode = transaction):
// p.DSN must then name the server itself, or a pool in session mode.
func (Listener) Listen(ctx context.Context, p dialects.ListenParams) error {
	if p.DSN == "" {
		if p.DB == nil {
			return fmt.Errorf("listen on %s: neither a DB nor a DSN given", p.Table)
		}
		return listen(ctx, poolConn(p.DB), p.Table, p.Notify, p.OnError)
	}
	cfg, err := pgx.ParseConfig(p.DSN)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", p.Table, err)
	}
	return listen(ctx, dsnConn(cfg), p.Table, p.Notify, p.OnError)
}

// CheckDSN implements dialects.CommitListener: it reports whether pgx can
// parse dsn.
func (Listener) CheckDSN(dsn string) error {
	_, err := pgx.ParseConfig(dsn)
	return err
}

// probeTimeout is how long Listen waits, when its connection goes through
// a pooler, for a notification sent from a second connection before it
// concludes that the pooler does not keep its session (ErrTransactionPooler).
// Through a pool in session mode it arrives within milliseconds.
const probeTimeout = 2 * time.Second

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

func listen(ctx context.Context, with withConn, t dialects.Table, notify func(), onError func(error)) error {
	wait := 100 * time.Millisecond
	for first := true; ctx.Err() == nil; first = false {
		err := with(ctx, func(pc *pgx.Conn) error { return listenOn(ctx, pc, t, notify, !first) })
		if ctx.Err() != nil {
			return nil
		}
		if errors.Is(err, errNotPgx) || errors.Is(err, postgres.ErrTransactionPooler) {
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

func listenOn(ctx context.Context, pc *pgx.Conn, t dialects.Table, notify func(), missed bool) error {
	serverPID, err := checkSession(ctx, pc, t)
	if err != nil {
		return err
	}
	// The broadcasts the leader sends (wake.go) need not wait for their
	// commit to be flushed: they change nothing.
	if _, err := pc.Exec(ctx, `SET synchronous_commit = off`); err != nil {
		return err
	}
	// Without arguments pgx sends these with the simple protocol: no
	// prepared statement, whatever the connection's query exec mode.
	if _, err := pc.Exec(ctx, listenSQL(t)); err != nil {
		return err
	}
	if missed {
		notify() // rows may have been committed while no one listened
	}
	return (&waker{pc: pc, t: t, pid: serverPID, notify: notify}).run(ctx)
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
func checkSession(ctx context.Context, pc *pgx.Conn, t dialects.Table) (uint32, error) {
	var serverPID uint32
	if err := pc.QueryRow(ctx, `SELECT pg_backend_pid()`, pgx.QueryExecModeSimpleProtocol).Scan(&serverPID); err != nil {
		return 0, err
	}
	keyPID := pc.PgConn().PID()
	if serverPID == keyPID {
		return serverPID, nil
	}
	var b [8]byte
	_, _ = rand.Read(b[:])
	probe := `gormoutbox_probe_` + hex.EncodeToString(b[:])
	if _, err := pc.Exec(ctx, `LISTEN `+probe); err != nil {
		return 0, err
	}
	// pc's config carries pc's own notification handler (pgx installs it
	// at connect): copied as it is, the second connection would hand its
	// notifications to pc, and a NOTIFY the pooler routes back to the
	// notifier would look like one that reached the listener.
	cfg := pc.Config()
	cfg.OnNotification = nil
	other, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return 0, fmt.Errorf("probe whether the pooler keeps the session: %w", err)
	}
	_, err = other.Exec(ctx, `NOTIFY `+probe)
	cctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = other.Close(cctx)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("probe whether the pooler keeps the session: %w", err)
	}
	wctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	// Any notification will do: a transaction pooler forwards nothing to
	// a client between its transactions. (With an OnNotification handler
	// of the user's in the config, pgx reports it without its channel.)
	_, err = pc.WaitForNotification(wctx)
	if err == nil {
		_, err = pc.Exec(ctx, `UNLISTEN `+probe)
		return serverPID, err
	}
	if ctx.Err() != nil || wctx.Err() == nil {
		return 0, err
	}
	// Best effort: the server connection that ran LISTEN is likely the one
	// the pooler gives us now.
	uctx, ucancel := context.WithTimeout(ctx, time.Second)
	_, _ = pc.Exec(uctx, `UNLISTEN `+probe)
	ucancel()
	c := pc.Config()
	return 0, fmt.Errorf("listen on %s via %s:%d/%s: %w: the connection is pooled (its cancel key names process %d, the server says it is process %d) "+
		"and a NOTIFY from a second connection did not reach it within %v; "+
		"give the listener a connection that bypasses the pooler: gormoutbox Relay.ListenWith(ctx, wake, gormoutbox.ListenOptions{DSN: \"postgres://…the server itself…\"}) "+
		"(or a PgBouncer database with pool_mode = session)",
		t, c.Host, c.Port, c.Database, postgres.ErrTransactionPooler, keyPID, serverPID, probeTimeout)
}
