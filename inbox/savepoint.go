package inbox

import (
	"context"
	"database/sql"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
)

const savepointName = "inbox_msg"

// savepointPool is the connection a handler's *gorm.DB runs on: the batch's
// transaction, behind a savepoint taken lazily before the handler's first
// statement. A handler that touches no table (or only its first failing
// statement) costs no savepoint round trip; one that does can be undone
// alone, without undoing the other messages of the batch.
//
// It is a gorm.TxCommitter, so GORM and the outbox plugin see a
// transaction: GORM opens none of its own, nested db.Transaction calls
// become savepoints, and gormoutbox.Publish writes into it.
type savepointPool struct {
	tx gorm.ConnPool
	// raw is tx without GORM's prepared-statement wrapper: savepoint
	// commands (a multi-statement text on PostgreSQL) are not prepared.
	raw gorm.ConnPool
	// d writes the savepoint statements.
	d    dialects.Inboxer
	made bool
	// fold defers the release of a kept message's savepoint to the next
	// savepoint, sent together in one round trip (the dialect
	// FoldsRelease: PostgreSQL runs several statements in one
	// simple-protocol Exec): one round trip per writing handler instead of
	// two. The commit ends a savepoint still open.
	fold, releasePending bool
	// pending are the OnCommit functions of the message being handled,
	// committed those of the messages kept.
	pending, committed []func()
}

var (
	_ gorm.ConnPool    = (*savepointPool)(nil)
	_ gorm.TxCommitter = (*savepointPool)(nil)
)

// newSavepointPool wraps the connection pool of a transaction, whose
// savepoints d writes.
func newSavepointPool(tx gorm.ConnPool, d dialects.Inboxer, fold bool) *savepointPool {
	return &savepointPool{tx: tx, raw: rawTx(tx), d: d, fold: fold}
}

// rawTx unwraps GORM's prepared-statement transaction.
func rawTx(pool gorm.ConnPool) gorm.ConnPool {
	if p, ok := pool.(*gorm.PreparedStmtTX); ok && p.Tx != nil {
		return p.Tx
	}
	return pool
}

func (p *savepointPool) ensure(ctx context.Context) error {
	if p.made {
		return nil
	}
	if err := p.d.Savepoint(ctx, p.raw, savepointName, p.releasePending); err != nil {
		return err
	}
	p.made, p.releasePending = true, false
	return nil
}

func (p *savepointPool) PrepareContext(ctx context.Context, query string) (*sql.Stmt, error) {
	if err := p.ensure(ctx); err != nil {
		return nil, err
	}
	return p.tx.PrepareContext(ctx, query)
}

func (p *savepointPool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if err := p.ensure(ctx); err != nil {
		return nil, err
	}
	return p.tx.ExecContext(ctx, query, args...)
}

func (p *savepointPool) QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	if err := p.ensure(ctx); err != nil {
		return nil, err
	}
	return p.tx.QueryContext(ctx, query, args...)
}

func (p *savepointPool) QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	// A failed savepoint leaves the transaction failed, so the query
	// reports it.
	_ = p.ensure(ctx)
	return p.tx.QueryRowContext(ctx, query, args...)
}

// Commit and Rollback refuse: the batch's transaction is the inbox's.
func (p *savepointPool) Commit() error   { return errTxOwned }
func (p *savepointPool) Rollback() error { return errTxOwned }

// undo rolls the handler's writes back, if it made any.
func (p *savepointPool) undo(ctx context.Context) error {
	p.pending = nil
	if !p.made {
		return nil
	}
	p.made = false
	if err := p.d.RollbackToSavepoint(ctx, p.raw, savepointName); err != nil {
		return err
	}
	if p.fold {
		p.releasePending = true
		return nil
	}
	return p.d.ReleaseSavepoint(ctx, p.raw, savepointName)
}

// keep ends the savepoint, keeping the handler's writes.
func (p *savepointPool) keep(ctx context.Context) error {
	p.committed = append(p.committed, p.pending...)
	p.pending = nil
	if !p.made {
		return nil
	}
	p.made = false
	if p.fold {
		p.releasePending = true
		return nil
	}
	return p.d.ReleaseSavepoint(ctx, p.raw, savepointName)
}

// OnCommit registers f to run after the transaction of tx commits, if the
// handler that got tx succeeds: for effects outside the database that must
// follow the commit (notifications, metrics), which run once per handled
// message, unless the process dies between the commit and f. tx is the
// handler's transaction (or a session made from it).
func OnCommit(tx *gorm.DB, f func()) error {
	if tx == nil || tx.Statement == nil {
		return ErrNotInHandler
	}
	p, ok := tx.Statement.ConnPool.(*savepointPool)
	if !ok {
		return ErrNotInHandler
	}
	p.pending = append(p.pending, f)
	return nil
}

// runCommitted runs the functions of the kept messages.
func (p *savepointPool) runCommitted() {
	fs := p.committed
	p.committed = nil
	for _, f := range fs {
		f()
	}
}
