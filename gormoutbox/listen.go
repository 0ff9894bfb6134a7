package gormoutbox

import (
	"context"
	"errors"
	"fmt"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/postgres"
)

// ErrTransactionPooler: Relay.Listen or ListenWith was given a connection
// that goes through a connection pooler in transaction or statement
// pooling mode (PgBouncer's pool_mode = transaction, and the like), where
// LISTEN cannot work: LISTEN is session state, and such a pooler hands the
// server connection to other clients after every transaction. Give
// ListenWith a ListenOptions.DSN that reaches PostgreSQL without the pooler
// (or through a pool in session mode).
var ErrTransactionPooler = postgres.ErrTransactionPooler

// ErrListenerNotLinked: Listen or ListenWith on PostgreSQL in a program that
// does not import the LISTEN implementation, which needs pgx:
//
//	import _ "github.com/go-outbox/outbox/dialects/postgres/pgxlisten"
//
// It is a package of its own so that a service on MySQL does not link pgx.
var ErrListenerNotLinked = postgres.ErrListenerNotLinked

// ListenOptions configure Relay.ListenWith.
type ListenOptions struct {
	// DSN, when set, is the PostgreSQL connection string (a URL or
	// key=value pairs, as pgx reads them) of the connection Listen holds,
	// which it then opens itself instead of taking one from the relay's
	// *gorm.DB.
	//
	// Set it when the relay's database is reached through a connection
	// pooler in transaction pooling mode (PgBouncer with pool_mode =
	// transaction, as managed PostgreSQL services often have): capture,
	// the relay's claims and marks, and the inbox all run in transactions
	// and work through it, but LISTEN needs a session of its own, which
	// such a pooler does not keep. Point DSN at the PostgreSQL server
	// itself (or at a pool in session mode); it costs one server
	// connection per listening relay. Without it, Listen through a
	// transaction pooler returns an error wrapping ErrTransactionPooler.
	DSN string
}

// Listen calls wake after every commit that wrote outbox rows, from any
// process, until ctx is done (on PostgreSQL, import
// github.com/go-outbox/outbox/dialects/postgres/pgxlisten for its side
// effect, else ErrListenerNotLinked): on PostgreSQL through LISTEN on a connection
// of its own (the outbox table's trigger sends NOTIFY, which PostgreSQL
// delivers at commit, one per transaction), reconnecting when it drops.
// It returns nil once ctx is done. Other dialects return at once an error
// wrapping ErrUnsupportedDialect; there, Config.Wake wakes the relay of the
// writing process. wake must not block;
// scheduler.Wake fits:
//
//	go relay.Listen(ctx, func() { _ = sched.Wake("outbox-relay") })
//
// The connection is taken from the relay's *gorm.DB. When that reaches
// PostgreSQL through a transaction pooler (PgBouncer with pool_mode =
// transaction), LISTEN cannot work there and Listen returns, within about
// 2 s, an error wrapping ErrTransactionPooler: use ListenWith with a DSN
// that bypasses the pooler.
func (r *Relay) Listen(ctx context.Context, wake func()) error {
	l, ok := r.d.(dialects.Listener)
	if !ok {
		return fmt.Errorf("%w: %s sends no commit notifications; use gormoutbox.Config.Wake", ErrUnsupportedDialect, r.d.Name())
	}
	return l.Listen(ctx, r.db, r.table, func() { r.Notify(); wake() }, r.logListenLost)
}

// dsnListener is implemented by dialects whose Listen can open its own
// connection (PostgreSQL).
type dsnListener interface {
	ListenDSN(ctx context.Context, dsn string, t dialects.Table, notify func(), onError func(error)) error
}

// ListenWith is Listen with options: with o.DSN set, the listening
// connection is opened from it instead of being taken from the relay's
// *gorm.DB, so that a relay whose database sits behind PgBouncer in
// transaction pooling mode can still be woken by commits:
//
//	go relay.ListenWith(ctx, wake, gormoutbox.ListenOptions{DSN: "postgres://user:pass@db-primary:5432/app"})
//
// Like Listen, it returns nil once ctx is done, and at once an error
// wrapping ErrUnsupportedDialect on MySQL, ErrInvalidConfig for a DSN pgx
// cannot parse, or ErrTransactionPooler when the connection turns out to
// go through a transaction pooler. A dropped connection is opened again
// (backing off up to 5 s) and logged as Listen logs it.
func (r *Relay) ListenWith(ctx context.Context, wake func(), o ListenOptions) error {
	if o.DSN == "" {
		return r.Listen(ctx, wake)
	}
	l, ok := r.d.(dsnListener)
	if !ok {
		return fmt.Errorf("%w: %s sends no commit notifications; use gormoutbox.Config.Wake", ErrUnsupportedDialect, r.d.Name())
	}
	if err := postgres.ParseListenDSN(o.DSN); errors.Is(err, postgres.ErrListenerNotLinked) {
		return err
	} else if err != nil {
		return fmt.Errorf("%w: ListenOptions.DSN: %v", ErrInvalidConfig, err)
	}
	return l.ListenDSN(ctx, o.DSN, r.table, func() { r.Notify(); wake() }, r.logListenLost)
}
