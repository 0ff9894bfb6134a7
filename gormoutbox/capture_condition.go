package gormoutbox

import (
	"fmt"
	"slices"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// MaxConditionRows bounds the rows one update or delete by condition may
// touch: prepare locks and reads them all, and restricts the write to their
// primary keys (one bind variable per key column per row). A write that
// matches more is refused with ErrUncapturedWrite; split it.
const MaxConditionRows = 20000

// lockMatching reads, FOR UPDATE and in primary-key order, the rows a write
// by condition is about to touch, and restricts the write to them: the
// statement's WHERE, the primary keys of the model value when it has them,
// and the soft-delete scope unless Unscoped. Restricting the write to the
// locked keys matters on PostgreSQL, where at READ COMMITTED the write's
// own WHERE could also match a row committed after the read.
func (p *Plugin) lockMatching(db *gorm.DB, st *stmtState) error {
	stmt, m := db.Statement, st.m
	var exprs []clause.Expression
	if c, ok := stmt.Clauses["WHERE"]; ok {
		if w, ok := c.Expression.(clause.Where); ok {
			exprs = append(exprs, w.Exprs...)
		}
	}
	if len(st.keys) > 0 {
		col, vals := schema.ToQueryValues(clause.CurrentTable, m.pkDBNames, st.keys)
		exprs = append(exprs, clause.IN{Column: col, Values: vals})
	}
	read := rowRead{exprs: exprs, scoped: st.softScoped(stmt), lock: true, limit: MaxConditionRows + 1}
	if st.op == opUpdate {
		read.from = updateFrom(stmt)
		// An update's events show the rows read after it: before it only
		// their keys are needed, unless for the before-images.
		read.keysOnly = !p.cfg.BeforeImage
	}
	limited := false
	if n, ok := writeLimit(stmt); ok && n == 0 {
		read.exprs = append(read.exprs, clause.Expr{SQL: "1 = 0"}) // LIMIT 0 touches nothing
	} else if ok && n <= MaxConditionRows {
		// MySQL's UPDATE/DELETE … [ORDER BY …] LIMIT n: lock the n rows it
		// will touch, in its order; restricted to them, it touches them all.
		read.limit, limited = n, true
		if c, ok := stmt.Clauses["ORDER BY"]; ok && slices.Contains(stmt.BuildClauses, "ORDER BY") {
			if ob, ok := c.Expression.(clause.OrderBy); ok {
				read.orderBy = &ob
			}
		}
	}
	rows, order, err := p.selectRows(db, m, read)
	if err != nil {
		return err
	}
	if !limited && len(order) > MaxConditionRows {
		return uncaptured(m.name, st.op, fmt.Sprintf("by condition matching more than %d rows", MaxConditionRows),
			"split the write into smaller ones (by key range, say)")
	}
	st.keys, st.live = order, rows
	if len(order) == 0 {
		// Nothing matches: the write must touch nothing either.
		stmt.AddClause(clause.Where{Exprs: []clause.Expression{clause.Expr{SQL: "1 = 0"}}})
		return nil
	}
	col, vals := schema.ToQueryValues(clause.CurrentTable, m.pkDBNames, order)
	stmt.AddClause(clause.Where{Exprs: []clause.Expression{clause.IN{Column: col, Values: vals}}})
	return nil
}

// writeLimit returns the LIMIT of an update or delete whose dialect writes
// it (MySQL), and whether there is one.
func writeLimit(stmt *gorm.Statement) (int, bool) {
	c, ok := stmt.Clauses["LIMIT"]
	if !ok || !slices.Contains(stmt.BuildClauses, "LIMIT") {
		return 0, false
	}
	l, ok := c.Expression.(clause.Limit)
	if !ok || l.Limit == nil || *l.Limit < 0 {
		return 0, false
	}
	return *l.Limit, true
}

// updateFrom returns the FROM clause of an UPDATE … FROM, or nil.
func updateFrom(stmt *gorm.Statement) *clause.From {
	c, ok := stmt.Clauses["FROM"]
	if !ok || !slices.Contains(stmt.BuildClauses, "FROM") {
		return nil
	}
	f, ok := c.Expression.(clause.From)
	if !ok || (len(f.Tables) == 0 && len(f.Joins) == 0) {
		return nil
	}
	return &f
}

func hasWhere(stmt *gorm.Statement) bool {
	if c, ok := stmt.Clauses["WHERE"]; ok {
		if w, ok := c.Expression.(clause.Where); ok && len(w.Exprs) > 0 {
			return true
		}
	}
	return false
}
