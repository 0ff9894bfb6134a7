package gormoutbox

import (
	"context"
	"fmt"
	"reflect"
	"time"

	"gorm.io/gorm"
)

func (p *Plugin) captureCreate(db *gorm.DB) {
	st := stateOf(db)
	if st == nil || db.Error != nil {
		return
	}
	stmt, m := db.Statement, st.m
	if st.maps > 0 {
		p.captureMapCreate(db, st)
		return
	}
	elems := entities(stmt.ReflectValue)
	if len(elems) == 0 {
		return
	}
	if st.upsert {
		p.captureUpsert(db, st, elems)
		return
	}
	if p.dialect.Name() != "postgres" && m.needsReload(stmt.Context, elems) {
		keys, complete := m.writtenKeysOf(stmt.Context, elems)
		if !complete {
			_ = db.AddError(fmt.Errorf("gormoutbox: create of %s: primary key not set after the insert", m.name))
			return
		}
		rows, err := p.load(db, m, keys, false, false)
		if err != nil {
			_ = db.AddError(fmt.Errorf("gormoutbox: create of %s: read database defaults after the insert: %w", m.name, err))
			return
		}
		for i, k := range keys {
			row, ok := rows[keyString(k)]
			if !ok {
				_ = db.AddError(fmt.Errorf("gormoutbox: create of %s: row %s not found after the insert", m.name, keyString(k)))
				return
			}
			elems[i] = row
		}
	}
	if p.dialect.Name() == "postgres" && len(m.timeFields) > 0 {
		elems = m.roundTimes(stmt.Context, elems)
	}
	p.emit(db, m, elems, repeat(m.createType, len(elems)))
}

// roundTimes returns copies of elems whose time values are cut to the
// microsecond as PostgreSQL stores them (pgx sends whole microseconds,
// truncating), so that a create's payload shows the committed values, not
// the nanoseconds the struct holds (GORM's NowFunc keeps them on
// PostgreSQL).
func (m *model) roundTimes(ctx context.Context, elems []reflect.Value) []reflect.Value {
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
			if r := t.Truncate(time.Microsecond); !r.Equal(t) {
				_ = f.Set(ctx, c, r)
			}
		}
		out[i] = c
	}
	return out
}

// needsReload reports whether a created entity still lacks values the
// database computed (defaults that are expressions), which only a read
// after the insert can fill in where INSERT … RETURNING is not used.
func (m *model) needsReload(ctx context.Context, elems []reflect.Value) bool {
	for _, f := range m.dbDefaults {
		for _, e := range elems {
			if _, zero := f.ValueOf(ctx, e); zero {
				return true
			}
		}
	}
	return false
}
