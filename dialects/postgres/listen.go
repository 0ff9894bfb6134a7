package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/go-outbox/outbox/dialects"
)

// ErrTransactionPooler is returned by the listener of package pgxlisten
// when its connection goes through a connection pooler in transaction (or
// statement) pooling mode, such as PgBouncer with pool_mode = transaction.
// LISTEN is session state: such a pooler hands the server connection that
// ran LISTEN to other clients after each transaction, so notifications
// never reach the listener (and the server connection, back in the pool,
// keeps listening for whoever uses it next). The way out is a connection of
// the listener's own that bypasses the pooler: the PostgreSQL server itself,
// or a pool in session mode.
var ErrTransactionPooler = errors.New("LISTEN does not work through a transaction pooler (PgBouncer pool_mode = transaction or statement)")

// SetNotify implements dialects.Dialect: it enables or disables the outbox
// table's NOTIFY trigger (which package pgxlisten listens to), only
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
