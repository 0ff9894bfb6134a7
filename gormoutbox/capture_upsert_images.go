package gormoutbox

import (
	"reflect"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// upsertImages returns the after-images of an upsert on the primary key
// without reading them back, where the statement says what they are: the
// database returns every default an INSERT sets (Capabilities.
// ReturnsDefaults) and stores times as written, cut to its precision
// (timesKnown), and every DO UPDATE assignment sets a column either to
// the value the row was inserted with (excluded.column, as
// OnConflict{UpdateAll} and clause.AssignmentColumns write it) or to a
// value (UpdateAll's updated_at). A row that existed (prepare read it under
// lock) is then its before-image with the assigned columns set; a new row
// is the struct as inserted, as for a create. It returns false when an
// assignment is an expression, the DO UPDATE has a WHERE, or a key comes
// twice: captureUpsert then reads the rows back.
func (p *Plugin) upsertImages(db *gorm.DB, st *stmtState, elems []reflect.Value, keys [][]any) (map[string]reflect.Value, bool) {
	stmt, m := db.Statement, st.m
	if st.conflict != nil || st.doNothing || !p.caps.ReturnsDefaults || !p.timesKnown() || len(keys) != len(elems) {
		return nil, false
	}
	c, ok := stmt.Clauses["ON CONFLICT"]
	if !ok {
		return nil, false
	}
	oc, ok := c.Expression.(clause.OnConflict)
	if !ok || len(oc.DoUpdates) == 0 || len(oc.Where.Exprs) > 0 || len(oc.TargetWhere.Exprs) > 0 || oc.OnConstraint != "" {
		return nil, false
	}
	vc, ok := stmt.Clauses["VALUES"]
	if !ok {
		return nil, false
	}
	values, ok := vc.Expression.(clause.Values)
	if !ok {
		return nil, false
	}
	inserted := make(map[string]bool, len(values.Columns))
	for _, col := range values.Columns {
		inserted[col.Name] = true
	}
	type set struct {
		f      *schema.Field
		value  any
		copied bool // the value the row was inserted with
	}
	sets := make([]set, 0, len(oc.DoUpdates))
	for _, a := range oc.DoUpdates {
		f := m.schema.LookUpField(a.Column.Name)
		if f == nil || f.DBName == "" || f.PrimaryKey || (a.Column.Table != "" && a.Column.Table != clause.CurrentTable) {
			return nil, false
		}
		switch v := a.Value.(type) {
		case clause.Column:
			if v.Table != "excluded" || v.Name != f.DBName || v.Raw || !inserted[f.DBName] {
				return nil, false
			}
			sets = append(sets, set{f: f, copied: true})
		case clause.Expression, *gorm.DB, nil:
			return nil, false // computed by the database, or NULL
		default:
			sets = append(sets, set{f: f, value: v})
		}
	}
	ctx := stmt.Context
	if len(m.timeFields) > 0 {
		elems = m.roundTimes(ctx, elems, p.caps.TimePrecision)
	}
	out := make(map[string]reflect.Value, len(elems))
	for i, e := range elems {
		ks := keyString(keys[i])
		if _, dup := out[ks]; dup {
			return nil, false
		}
		before, existed := st.live[ks]
		if !existed {
			out[ks] = e
			continue
		}
		after := reflect.New(before.Type()).Elem()
		after.Set(before)
		for _, s := range sets {
			v := s.value
			if s.copied {
				v, _ = s.f.ValueOf(ctx, e)
			} else if t, ok := v.(time.Time); ok {
				v = t.Truncate(p.caps.TimePrecision)
			}
			if err := s.f.Set(ctx, after, v); err != nil {
				return nil, false
			}
		}
		out[ks] = after
	}
	return out, true
}

// sameValue reports whether two values of a field are the same: times by
// their instant (a time read back and a time written differ in location
// and monotonic reading only), the rest by reflect.DeepEqual.
func sameValue(a, b any) bool {
	if ta, ok := timeOf(a); ok {
		if tb, ok := timeOf(b); ok {
			return ta.Equal(tb)
		}
	}
	return reflect.DeepEqual(a, b)
}

func timeOf(v any) (time.Time, bool) {
	switch t := v.(type) {
	case time.Time:
		return t, true
	case *time.Time:
		if t != nil {
			return *t, true
		}
	}
	return time.Time{}, false
}
