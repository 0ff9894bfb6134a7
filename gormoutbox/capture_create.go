package gormoutbox

import (
	"context"
	"fmt"
	"reflect"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
)

// captureCreate emits the Created events of a create of structs, as
// committed: the database defaults that did not come back are read back,
// and times cut as the database stores them. Creates from maps and upserts
// go their own way (captureMapCreate, captureUpsert).
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
	if !p.caps.ReturnsDefaults && m.needsReload(stmt.Context, elems) {
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
	if p.timesKnown() && len(m.timeFields) > 0 {
		elems = m.roundTimes(stmt.Context, elems, p.caps.TimePrecision)
	}
	p.emit(db, m, elems, repeat(m.createType, len(elems)))
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

func refuseInsertIgnore(stmt *gorm.Statement, m *model, o op) error {
	if c, ok := stmt.Clauses["INSERT"]; ok {
		if ins, ok := c.Expression.(clause.Insert); ok && strings.Contains(strings.ToUpper(ins.Modifier), "IGNORE") {
			return uncaptured(m.name, o, "with INSERT "+ins.Modifier+" (the rows skipped cannot be told apart)",
				"use clause.OnConflict{DoNothing: true} on a single row")
		}
	}
	return nil
}
