package gormoutbox

import (
	"fmt"
	"reflect"

	"gorm.io/gorm"
)

// captureDelete emits the delete events of a delete: for a soft delete the
// rows read back after it (deleted_at set), for a hard delete (the purge
// type on a soft-delete model) the rows prepare read under lock before it.
func (p *Plugin) captureDelete(db *gorm.DB) {
	st := stateOf(db)
	if st == nil || db.Error != nil {
		return
	}
	stmt, m := db.Statement, st.m
	var elems, befores []reflect.Value
	typ, img := m.deleteType, imageGone
	if st.softScoped(stmt) {
		img = imageChange
		// Soft delete: the event carries the row as it is now, deleted_at set.
		var keys [][]any
		for _, k := range st.keys {
			if _, ok := st.live[keyString(k)]; ok {
				keys = append(keys, k)
			}
		}
		rows, err := p.load(db, m, keys, false, false)
		if err != nil {
			_ = db.AddError(fmt.Errorf("gormoutbox: delete of %s: read the rows after the write: %w", m.name, err))
			return
		}
		for _, k := range keys {
			if row, ok := rows[keyString(k)]; ok {
				elems = append(elems, row)
				befores = append(befores, st.live[keyString(k)])
			}
		}
	} else {
		// Hard delete: the event carries the last state of the row.
		if m.softDelete {
			typ = m.purgeType
		}
		for _, k := range st.keys {
			if row, ok := st.live[keyString(k)]; ok {
				elems = append(elems, row)
			}
		}
	}
	if int64(len(elems)) != db.RowsAffected {
		_ = db.AddError(fmt.Errorf("gormoutbox: delete of %s: %d rows deleted but %d read under lock", m.name, db.RowsAffected, len(elems)))
		return
	}
	p.emitImages(db, m, elems, repeat(typ, len(elems)), befores, img)
}
