package gormoutbox

import (
	"context"
	"fmt"

	"github.com/go-outbox/outbox/dialects"
)

// ListenOptions configure Relay.ListenWith.
type ListenOptions struct {
	// Listener receives the database's commit notifications. On
	// PostgreSQL give pgxlisten.New() (package
	// github.com/go-outbox/outbox/dialects/postgres/pgxlisten, a package
	// of its own so that a service on MySQL does not link pgx). Without
	// it, ListenWith returns ErrListenerNotLinked.
	Listener dialects.CommitListener

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

// ListenWith calls wake after commits that wrote outbox rows, from any
// process, until ctx is done: on PostgreSQL through LISTEN on a
// connection of its own, by o.Listener, reconnecting when it drops
// (backing off up to 5 s; logged). The outbox table's trigger sends NOTIFY
// (delivered at commit) while a listener waits for one; while writers are
// at work, the leading listener wakes every listener itself every few
// milliseconds instead, so that the writers' commits are not serialised
// by NOTIFY (package pgxlisten). It returns nil once ctx is done. wake
// must not block; scheduler.Wake fits:
//
//	go relay.ListenWith(ctx, func() { _ = sched.Wake("outbox-relay") },
//		gormoutbox.ListenOptions{Listener: pgxlisten.New()})
//
// The connection is taken from the relay's *gorm.DB, or with o.DSN set
// opened from it, so that a relay whose database sits behind PgBouncer in
// transaction pooling mode can still be woken by commits:
//
//	gormoutbox.ListenOptions{Listener: pgxlisten.New(), DSN: "postgres://user:pass@db-primary:5432/app"}
//
// It returns at once an error wrapping ErrUnsupportedDialect on a database
// that sends no commit notifications (MySQL: there, Config.Wake wakes the
// relay of the writing process), ErrListenerNotLinked without
// o.Listener, ErrInvalidConfig for a DSN the listener cannot parse, and,
// within about 2 s, ErrTransactionPooler when the connection turns out to
// go through a transaction pooler.
func (r *Relay) ListenWith(ctx context.Context, wake func(), o ListenOptions) error {
	if !r.d.Capabilities().Notify {
		return fmt.Errorf("%w: %s sends no commit notifications; use gormoutbox.Config.Wake", ErrUnsupportedDialect, r.d.Name())
	}
	if o.Listener == nil {
		return ErrListenerNotLinked
	}
	if o.DSN != "" {
		if err := o.Listener.CheckDSN(o.DSN); err != nil {
			return fmt.Errorf("%w: ListenOptions.DSN: %v", ErrInvalidConfig, err)
		}
	}
	return o.Listener.Listen(ctx, dialects.ListenParams{
		Table:   r.table,
		DB:      r.db,
		DSN:     o.DSN,
		Notify:  func() { r.Notify(); wake() },
		OnError: r.logListenLost,
	})
}
