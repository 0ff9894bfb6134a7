package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"

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

// ErrListenerNotLinked is returned by Listen and ListenDSN in a program that
// does not link the LISTEN implementation, which needs pgx: import
// github.com/go-outbox/outbox/dialects/postgres/pgxlisten (for its side
// effect) where the relay runs. It is a package of its own so that a
// service on MySQL does not link pgx.
var ErrListenerNotLinked = errors.New(`postgres: LISTEN needs pgx: import _ "github.com/go-outbox/outbox/dialects/postgres/pgxlisten"`)

// ListenImpl is the LISTEN implementation package pgxlisten registers.
type ListenImpl interface {
	// Listen LISTENs on t's channel on a connection of its own taken from
	// db, as Dialect.Listen describes.
	Listen(ctx context.Context, db *sql.DB, t dialects.Table, notify func(), onError func(error)) error
	// ListenDSN is Listen on connections it opens from dsn.
	ListenDSN(ctx context.Context, dsn string, t dialects.Table, notify func(), onError func(error)) error
	// ParseDSN reports whether dsn is a connection string it can use.
	ParseDSN(dsn string) error
}

// listenImpl is the registered implementation: like database/sql's
// drivers, the one process-wide registry, written once at init.
var listenImpl struct {
	sync.RWMutex
	impl ListenImpl
}

// RegisterListener makes impl the LISTEN implementation; package pgxlisten
// calls it from its init.
func RegisterListener(impl ListenImpl) {
	listenImpl.Lock()
	defer listenImpl.Unlock()
	listenImpl.impl = impl
}

func listener() (ListenImpl, error) {
	listenImpl.RLock()
	defer listenImpl.RUnlock()
	if listenImpl.impl == nil {
		return nil, ErrListenerNotLinked
	}
	return listenImpl.impl, nil
}

// Listen implements dialects.Listener: on a connection of its own taken
// from db (pgx), it LISTENs on the table's channel and calls notify for
// every notification, that is, after every commit that wrote outbox rows.
// When the connection drops it takes another (backing off up to 5 s) and
// calls notify once, for what it may have missed. It returns nil when ctx
// is done; at once an error if db's driver is not pgx, an error wrapping
// ErrTransactionPooler if db reaches the server through a transaction
// pooler (see ListenDSN), and ErrListenerNotLinked when the program does
// not import package pgxlisten.
func (d Dialect) Listen(ctx context.Context, db *sql.DB, t dialects.Table, notify func(), onError func(error)) error {
	l, err := listener()
	if err != nil {
		return err
	}
	return l.Listen(ctx, db, t, notify, onError)
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
	l, err := listener()
	if err != nil {
		return err
	}
	return l.ListenDSN(ctx, dsn, t, notify, onError)
}

// ParseListenDSN reports whether dsn is a connection string ListenDSN can
// use (ErrListenerNotLinked without package pgxlisten).
func ParseListenDSN(dsn string) error {
	l, err := listener()
	if err != nil {
		return err
	}
	if err := l.ParseDSN(dsn); err != nil {
		return fmt.Errorf("listen DSN: %w", err)
	}
	return nil
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
