package gormoutbox

import (
	"fmt"
	"reflect"

	"gorm.io/gorm"
)

// captureUpdate emits the Updated events of an update, each with the row
// as committed, read back by its key.
func (p *Plugin) captureUpdate(db *gorm.DB) {
	st := stateOf(db)
	if st == nil {
		return
	}
	if st.ret != nil {
		st.endReturning()
		if db.Error == nil {
			p.captureReturned(db, st)
		}
		return
	}
	if db.Error != nil {
		return
	}
	stmt, m := db.Statement, st.m
	// The keys as they are now: an update may have changed a key column.
	keys, complete := m.keysOf(stmt.Context, entities(stmt.ReflectValue))
	if !complete || st.byCondition {
		keys = st.keys
	}
	if st.live != nil && !st.byCondition {
		// Soft-delete model: only the rows that were live matched.
		kept := keys[:0:0]
		for i, k := range st.keys {
			if _, ok := st.live[keyString(k)]; ok {
				kept = append(kept, keys[i])
			}
		}
		keys = kept
	}
	rows, err := p.load(db, m, keys, false, false)
	if err != nil {
		_ = db.AddError(fmt.Errorf("gormoutbox: update of %s: read the rows after the write: %w", m.name, err))
		return
	}
	if int64(len(rows)) < db.RowsAffected {
		_ = db.AddError(fmt.Errorf("gormoutbox: update of %s: %d rows changed but %d found after the write", m.name, db.RowsAffected, len(rows)))
		return
	}
	elems := make([]reflect.Value, 0, len(keys))
	befores := make([]reflect.Value, 0, len(keys))
	for _, k := range keys {
		if row, ok := rows[keyString(k)]; ok {
			elems = append(elems, row)
			befores = append(befores, st.live[keyString(k)])
		}
	}
	p.emitImages(db, m, elems, repeat(m.updateType, len(elems)), befores, imageChange)
}
