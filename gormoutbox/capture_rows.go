package gormoutbox

import (
	"context"
	"database/sql"
	"reflect"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"

	"github.com/go-outbox/outbox/dialects"
)

// load reads the rows of m with the given primary keys, on the statement's
// transaction, into fresh model values keyed by keyString. scoped applies
// the model's default query scopes (soft delete); lock reads FOR UPDATE.
func (p *Plugin) load(db *gorm.DB, m *model, keys [][]any, scoped, lock bool) (map[string]reflect.Value, error) {
	return p.loadBy(db, m, m.pkFields, keys, scoped, lock)
}

// loadBy is load by the values of other fields than the primary key (a
// unique key); the rows come back keyed by keyString of those values.
func (p *Plugin) loadBy(db *gorm.DB, m *model, by []*schema.Field, keys [][]any, scoped, lock bool) (map[string]reflect.Value, error) {
	names := make([]string, len(by))
	for i, f := range by {
		names[i] = f.DBName
	}
	out := make(map[string]reflect.Value, len(keys))
	for len(keys) > 0 {
		n := min(len(keys), dialects.MaxInsertRows)
		chunk := keys[:n]
		keys = keys[n:]
		col, vals := schema.ToQueryValues(clause.CurrentTable, names, chunk)
		rows, _, err := p.selectRows(db, m, rowRead{exprs: []clause.Expression{clause.IN{Column: col, Values: vals}}, scoped: scoped, lock: lock, by: by})
		if err != nil {
			return nil, err
		}
		for k, v := range rows {
			out[k] = v
		}
	}
	return out, nil
}

// rowRead is what selectRows reads: the rows matching exprs (and the
// soft-delete scope when scoped), FOR UPDATE when lock; limit > 0 reads
// them in order (orderBy, then the key) and at most limit of them; by are
// the fields the rows are keyed by (default the primary key); from holds
// the other tables of an UPDATE … FROM; keysOnly reads only the primary
// key columns (the other fields of the values read are zero).
type rowRead struct {
	exprs        []clause.Expression
	scoped, lock bool
	keysOnly     bool
	limit        int
	by           []*schema.Field
	from         *clause.From
	orderBy      *clause.OrderBy
}

// selectRows reads the rows of m's table that r describes, on the
// statement's own connection, with GORM's clause builders but no query
// callbacks. When r.limit > 0, order lists their keys in the order read.
func (p *Plugin) selectRows(db *gorm.DB, m *model, r rowRead) (map[string]reflect.Value, [][]any, error) {
	exprs, scoped, lock, limit, by, from := r.exprs, r.scoped, r.lock, r.limit, r.by, r.from
	if by == nil {
		by = m.pkFields
	}
	q, slice := m.rowsQuery(db)
	st := q.Statement
	st.Unscoped = !scoped
	if scoped {
		for _, c := range m.schema.QueryClauses {
			st.AddClause(c)
		}
	}
	if len(exprs) > 0 {
		st.AddClause(clause.Where{Exprs: exprs})
	}
	parts := []string{"SELECT", "FROM", "WHERE"}
	if limit > 0 {
		ob := clause.OrderBy{}
		if r.orderBy != nil {
			ob = *r.orderBy // the write's own order first (MySQL's UPDATE … ORDER BY … LIMIT)
		}
		if ob.Expression == nil {
			for _, n := range m.pkDBNames {
				ob.Columns = append(ob.Columns, clause.OrderByColumn{Column: clause.Column{Table: clause.CurrentTable, Name: n}})
			}
		}
		st.AddClause(ob)
		st.AddClause(clause.Limit{Limit: &limit})
		parts = append(parts, "ORDER BY", "LIMIT")
	}
	if from != nil || r.keysOnly {
		// Only m's columns, of m's table: the other tables have theirs.
		names := m.schema.DBNames
		if r.keysOnly {
			names = m.pkDBNames
		}
		cols := make([]clause.Column, 0, len(names))
		for _, n := range names {
			cols = append(cols, clause.Column{Table: clause.CurrentTable, Name: n})
		}
		st.AddClause(clause.Select{Columns: cols})
	}
	if from != nil {
		tables := append([]clause.Table{{Name: clause.CurrentTable}}, from.Tables...)
		st.AddClause(clause.From{Tables: tables, Joins: from.Joins})
	}
	if lock {
		l := clause.Locking{Strength: clause.LockingStrengthUpdate}
		if from != nil {
			l.Table = clause.Table{Name: clause.CurrentTable}
		}
		st.AddClause(l)
		parts = append(parts, "FOR")
	}
	st.AddClauseIfNotExists(clause.Select{})
	st.AddClauseIfNotExists(clause.From{})
	st.Build(parts...)
	rows, err := st.ConnPool.QueryContext(st.Context, st.SQL.String(), st.Vars...)
	if err != nil {
		return nil, nil, err
	}
	elems, err := scanRows(q, slice, rows)
	if err != nil {
		return nil, nil, err
	}
	out := make(map[string]reflect.Value, len(elems))
	var order [][]any
	for _, e := range elems {
		k := fieldValues(st.Context, by, e)
		ks := keyString(k)
		if _, dup := out[ks]; dup {
			continue // joined to several rows of another table
		}
		out[ks] = e
		if limit > 0 {
			order = append(order, k)
		}
	}
	return out, order, nil
}

// rowsQuery returns a query of m's table on the statement's own
// connection, with GORM's clause builders but no callbacks, and the
// pointer to the slice of model values its rows are scanned into.
func (m *model) rowsQuery(db *gorm.DB) (*gorm.DB, reflect.Value) {
	q := db.Session(&gorm.Session{NewDB: true}).Table(db.Statement.Table)
	st := q.Statement
	st.ConnPool = db.Statement.ConnPool
	st.Context = db.Statement.Context
	slice := reflect.New(reflect.SliceOf(m.schema.ModelType))
	st.Dest, st.Model, st.Schema = slice.Interface(), slice.Interface(), m.schema
	return q, slice
}

// scanRows scans rows, which it closes, into the slice of q (rowsQuery)
// and returns its elements.
func scanRows(q *gorm.DB, slice reflect.Value, rows *sql.Rows) ([]reflect.Value, error) {
	q.Statement.ReflectValue = slice.Elem()
	gorm.Scan(rows, q, 0)
	cerr := rows.Close()
	if q.Error != nil {
		return nil, q.Error
	}
	if cerr != nil {
		return nil, cerr
	}
	sv := slice.Elem()
	out := make([]reflect.Value, sv.Len())
	for i := range out {
		out[i] = sv.Index(i)
	}
	return out, nil
}

// scanModelRows reads rows of m's table (every column), which it closes, into
// fresh model values, in the order read.
func (p *Plugin) scanModelRows(db *gorm.DB, m *model, rows *sql.Rows) ([]reflect.Value, error) {
	q, slice := m.rowsQuery(db)
	return scanRows(q, slice, rows)
}

// roundTimes returns copies of elems whose time values are cut to
// precision as the database stores them (Capabilities.TimesTruncated:
// PostgreSQL's microsecond, pgx truncating what it sends), so that a
// create's payload shows the committed values, not the nanoseconds the
// struct holds (GORM's NowFunc keeps them on PostgreSQL), without reading
// the rows back.
func (m *model) roundTimes(ctx context.Context, elems []reflect.Value, precision time.Duration) []reflect.Value {
	out := make([]reflect.Value, len(elems))
	for i, e := range elems {
		c := reflect.New(e.Type()).Elem()
		c.Set(e)
		for _, f := range m.timeFields {
			v, zero := f.ValueOf(ctx, c)
			if zero {
				continue
			}
			var t time.Time
			switch x := v.(type) {
			case time.Time:
				t = x
			case *time.Time:
				t = *x
			default:
				continue
			}
			if r := t.Truncate(precision); !r.Equal(t) {
				_ = f.Set(ctx, c, r)
			}
		}
		out[i] = c
	}
	return out
}
