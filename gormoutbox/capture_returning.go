package gormoutbox

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"fmt"
	"reflect"
	"slices"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/dialects"
)

// Updates by condition on a dialect whose UPDATE returns its rows
// (dialects.UpdateReturner, PostgreSQL). Without Config.BeforeImage the
// whole write is one statement, which locks the matching rows in key
// order, refuses to write when more than MaxConditionRows match, writes
// them and returns them as written: no locking read before it and no read
// after it. With BeforeImage, prepare still locks and reads the rows (their
// before-images) and restricts the write to them; the write returns the
// after-images.
//
// GORM builds the UPDATE as always (its SET, its WHERE with the model's
// scopes), with two clauses of the plugin around it and a condition among
// the WHERE's, each written by the dialect; the statement's connection is
// wrapped for the one ExecContext GORM runs it with, which runs it as a
// query and reads the rows it returns (GORM itself would scan returned
// rows into the caller's model). captureUpdate unwraps it.

// Names of the plugin's clauses in Statement.Clauses and BuildClauses.
const (
	clauseLock   = "GORMOUTBOX_LOCK"
	clauseReturn = "GORMOUTBOX_RETURN"
)

// returning is what an update that returns its rows keeps between prepare
// and captureUpdate.
type returning struct {
	// plain: prepare locked and read the rows, the write returns them
	// (Config.BeforeImage); otherwise the write locks them too.
	plain bool
	stmt  *gorm.Statement
	pool  *returningPool
	// orig are the statement's connection and build clauses before.
	orig      gorm.ConnPool
	origBuild []string
	restrict  *lockedRestriction
	ended     bool
}

// returningPool is the statement's connection, but for the first
// ExecContext: that one, the UPDATE, runs as a query whose rows read
// keeps; it reports them as the rows affected.
type returningPool struct {
	gorm.ConnPool
	read func(*sql.Rows) (int64, error)
	used bool
}

// ExecContext runs the first statement as a query (see returningPool).
func (r *returningPool) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if r.used {
		return r.ConnPool.ExecContext(ctx, query, args...)
	}
	r.used = true
	rows, err := r.ConnPool.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	n, err := r.read(rows)
	if err != nil {
		return nil, err
	}
	return driver.RowsAffected(n), nil
}

// Commit implements gorm.TxCommitter: the pool stands in for the
// statement's transaction (prepareReturning runs only in one), so that a
// callback between the write and captureUpdate that asks whether the
// statement runs in a transaction gets the same answer.
func (r *returningPool) Commit() error {
	if c, ok := r.ConnPool.(gorm.TxCommitter); ok {
		return c.Commit()
	}
	return gorm.ErrInvalidTransaction
}

// Rollback implements gorm.TxCommitter (see Commit).
func (r *returningPool) Rollback() error {
	if c, ok := r.ConnPool.(gorm.TxCommitter); ok {
		return c.Rollback()
	}
	return gorm.ErrInvalidTransaction
}

// lockedRestriction is the condition (dialects.PartRestrict) that lets the
// UPDATE write only when its own locking read locked no more than
// MaxConditionRows rows.
type lockedRestriction struct {
	p  *Plugin
	st *stmtState
}

// Build implements clause.Expression.
func (c *lockedRestriction) Build(b clause.Builder) {
	c.p.updateReturner().WriteUpdateReturning(dialects.PartRestrict, c.p.returningUpdate(b, c.st))
}

// updateReturner returns the dialect's UpdateReturner, or nil.
func (p *Plugin) updateReturner() dialects.UpdateReturner {
	u, _ := p.dialect.(dialects.UpdateReturner)
	return u
}

// returnsUpdate reports whether the update by condition st can return its
// rows: the dialect can, GORM runs it as a plain UPDATE (no RETURNING of
// the caller's, no UPDATE … FROM, no LIMIT) and the model has a key.
func (p *Plugin) returnsUpdate(stmt *gorm.Statement, st *stmtState) bool {
	if st.op != opUpdate || !st.byCondition || p.updateReturner() == nil || len(st.m.pkDBNames) == 0 {
		return false
	}
	if _, ok := stmt.Clauses["RETURNING"]; ok {
		return false
	}
	if _, ok := writeLimit(stmt); ok || updateFrom(stmt) != nil || stmt.SQL.Len() > 0 {
		return false
	}
	return slices.Contains(stmt.BuildClauses, "WHERE")
}

// prepareReturning sets the statement up to lock (unless plain), write and
// return its rows.
func (p *Plugin) prepareReturning(db *gorm.DB, st *stmtState, plain bool) {
	stmt := db.Statement
	r := &returning{plain: plain, stmt: stmt, orig: stmt.ConnPool, origBuild: stmt.BuildClauses}
	r.pool = &returningPool{ConnPool: stmt.ConnPool, read: func(rows *sql.Rows) (int64, error) {
		elems, err := p.scanModelRows(db, st.m, rows)
		if err != nil {
			return 0, err
		}
		st.returned = elems
		return int64(len(elems)), nil
	}}
	build := make([]string, 0, len(stmt.BuildClauses)+2)
	if !plain {
		build = append(build, clauseLock)
		stmt.Clauses[clauseLock] = clause.Clause{Builder: func(_ clause.Clause, b clause.Builder) {
			p.updateReturner().WriteUpdateReturning(dialects.PartLock, p.returningUpdate(b, st))
		}}
		r.restrict = &lockedRestriction{p: p, st: st}
		// (the caller's conditions) AND the restriction: GORM joins an
		// Or(…) to what precedes it, so the conditions are grouped first.
		if c, ok := stmt.Clauses["WHERE"]; ok {
			if w, ok := c.Expression.(clause.Where); ok && len(w.Exprs) > 0 {
				c.Expression = clause.Where{Exprs: []clause.Expression{clause.And(w.Exprs...)}}
				stmt.Clauses["WHERE"] = c
			}
		}
		stmt.AddClause(clause.Where{Exprs: []clause.Expression{r.restrict}})
	}
	build = append(build, stmt.BuildClauses...)
	build = append(build, clauseReturn)
	stmt.Clauses[clauseReturn] = clause.Clause{Builder: func(_ clause.Clause, b clause.Builder) {
		u := p.returningUpdate(b, st)
		u.Plain = plain
		p.updateReturner().WriteUpdateReturning(dialects.PartReturn, u)
	}}
	stmt.BuildClauses = build
	stmt.ConnPool = r.pool
	st.ret = r
}

// returningUpdate describes st's update to the dialect, writing into b.
func (p *Plugin) returningUpdate(b clause.Builder, st *stmtState) dialects.ReturningUpdate {
	u := dialects.ReturningUpdate{
		W:     b,
		Keys:  st.m.pkDBNames,
		Limit: MaxConditionRows,
		Table: func() { b.WriteQuoted(clause.Table{Name: clause.CurrentTable}) },
	}
	if st.ret != nil {
		if exprs := st.ret.conditions(); len(exprs) > 0 {
			u.Where = func() { clause.Where{Exprs: exprs}.Build(b) }
		}
	}
	return u
}

// conditions returns the conditions of the statement's WHERE as GORM
// builds it (the caller's, the model's primary key, the scopes), without
// the plugin's restriction.
func (r *returning) conditions() []clause.Expression {
	c, ok := r.stmt.Clauses["WHERE"]
	if !ok {
		return nil
	}
	w, ok := c.Expression.(clause.Where)
	if !ok {
		return nil
	}
	out := make([]clause.Expression, 0, len(w.Exprs))
	for _, e := range w.Exprs {
		if x, ok := e.(*lockedRestriction); ok && x == r.restrict {
			continue
		}
		out = append(out, e)
	}
	return out
}

// endReturning gives the statement back its connection and clauses.
func (st *stmtState) endReturning() {
	r := st.ret
	if r == nil || r.ended {
		return
	}
	r.ended = true
	stmt := r.stmt
	if stmt.ConnPool == gorm.ConnPool(r.pool) {
		stmt.ConnPool = r.orig
	}
	stmt.BuildClauses = r.origBuild
	delete(stmt.Clauses, clauseLock)
	delete(stmt.Clauses, clauseReturn)
	if c, ok := stmt.Clauses["WHERE"]; ok && r.restrict != nil {
		c.Expression = clause.Where{Exprs: r.conditions()}
		stmt.Clauses["WHERE"] = c
	}
}

// captureReturned emits the Updated events of an update that returned
// its rows.
func (p *Plugin) captureReturned(db *gorm.DB, st *stmtState) {
	stmt, m := db.Statement, st.m
	if !st.ret.pool.used {
		return // GORM wrote nothing (no column to set)
	}
	rows := st.returned
	if !st.ret.plain && len(rows) == 0 {
		// Nothing written: nothing matched, or more than
		// MaxConditionRows did (the statement then writes none).
		_, order, err := p.selectRows(db, m, rowRead{exprs: st.ret.conditions(), limit: MaxConditionRows + 1})
		if err != nil {
			_ = db.AddError(fmt.Errorf("gormoutbox: update of %s: count the rows matched: %w", m.name, err))
			return
		}
		if len(order) > MaxConditionRows {
			_ = db.AddError(fmt.Errorf("gormoutbox: update of %s: %w", m.name, uncaptured(m.name, st.op,
				fmt.Sprintf("by condition matching more than %d rows", MaxConditionRows),
				"split the write into smaller ones (by key range, say)")))
		}
		return
	}
	var befores []reflect.Value
	if st.ret.plain {
		// In the order prepare locked them, with their before-images.
		byKey := make(map[string]reflect.Value, len(rows))
		for _, r := range rows {
			byKey[keyString(fieldValues(stmt.Context, m.pkFields, r))] = r
		}
		rows = make([]reflect.Value, 0, len(st.keys))
		for _, k := range st.keys {
			if r, ok := byKey[keyString(k)]; ok {
				rows = append(rows, r)
				befores = append(befores, st.live[keyString(k)])
			}
		}
		if int64(len(rows)) < db.RowsAffected {
			_ = db.AddError(fmt.Errorf("gormoutbox: update of %s: %d rows changed but %d found after the write", m.name, db.RowsAffected, len(rows)))
			return
		}
	}
	p.emitImages(db, m, rows, repeat(m.updateType, len(rows)), befores, imageChange)
}
