package gormoutbox

import (
	"context"
	"fmt"
	"reflect"
	"slices"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/dialects"
)

func conflictOnPrimaryKey(oc clause.OnConflict, m *model) bool {
	if len(oc.Columns) == 0 {
		return true // GORM uses the primary key
	}
	if len(oc.Columns) != len(m.pkDBNames) {
		return false
	}
	for _, c := range oc.Columns {
		found := false
		for _, n := range m.pkDBNames {
			if c.Name == n {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// captureUpsert emits the events of an INSERT … ON CONFLICT on the primary
// key: Created for the rows that did not exist (prepare read the others
// under a row lock), Updated for the existing rows the statement changed
// (before and after images compared), nothing for the rest (DO NOTHING, or
// an update that changed nothing). The after-images are known from the
// statement where it can tell them (upsertImages), re-read otherwise. The
// count is cross-checked against RowsAffected where it is reliable, which
// catches a conflict on another unique key (MySQL): the statement fails
// rather than emit the wrong events. PostgreSQL has no gap locks: a row of
// the same key inserted and committed by another transaction between the
// read and the write is reported as Created (with the committed values
// when re-read; with the values inserted when upsertImages knew the rows:
// the columns the DO UPDATE left, created_at say, are then the statement's,
// not the other transaction's).
func (p *Plugin) captureUpsert(db *gorm.DB, st *stmtState, elems []reflect.Value) {
	stmt, m := db.Statement, st.m
	by := m.pkFields
	keys, complete := m.writtenKeysOf(stmt.Context, elems)
	if st.conflict != nil {
		// The rows are found again by their conflict key: on MySQL the
		// ids GORM set on the structs of rows that were updated are not
		// theirs.
		by, keys, complete = st.conflict, st.keys, true
	}
	if !complete {
		_ = db.AddError(fmt.Errorf("gormoutbox: upsert of %s: primary key not set after the write", m.name))
		return
	}
	rows, known := p.upsertImages(db, st, elems, keys)
	if !known {
		var err error
		if rows, err = p.loadBy(db, m, by, keys, false, false); err != nil {
			_ = db.AddError(fmt.Errorf("gormoutbox: upsert of %s: read the rows after the write: %w", m.name, err))
			return
		}
	}
	var (
		out                         []reflect.Value
		types                       []string
		created, changed, unchanged int64
		befores                     []reflect.Value
		seen                        = make(map[string]bool, len(keys))
		dup                         bool
	)
	for _, k := range keys {
		ks := keyString(k)
		if seen[ks] {
			dup = true
			continue // the same row twice in one statement: one event, for its final state
		}
		seen[ks] = true
		after, ok := rows[ks]
		if !ok {
			_ = db.AddError(uncaptured(m.name, st.op, fmt.Sprintf(
				"as an upsert whose row %s is not found after the write (it met another unique key, whose row the database changed instead)", ks),
				"upsert on the primary key with rows whose keys you know, or on the unique key they meet"))
			return
		}
		before, existed := st.live[ks]
		switch {
		case !existed:
			created++
			out, types = append(out, after), append(types, m.createType)
		case st.doNothing || m.sameRow(stmt.Context, before, after):
			unchanged++
		default:
			changed++
			out, types = append(out, after), append(types, m.updateType)
		}
		if len(befores) < len(out) {
			befores = append(befores, before) // invalid for created rows
		}
	}
	// Cross-check with what the database says it did (Capabilities.
	// UpsertCount). MySQL counts 1 per inserted row, 2 per changed row and
	// 0 per unchanged one (1 with clientFoundRows); a conflict on another
	// unique key breaks the count. PostgreSQL counts every row a DO UPDATE
	// touched, changed or not; for DO NOTHING GORM reports the rows it was
	// given, not those inserted, so there is nothing to check.
	counts := p.caps.UpsertCount
	var ok bool
	switch {
	case dup:
		ok = true
	case counts == dialects.UpsertCountsChanges && returned(stmt):
		// MariaDB's INSERT … ON DUPLICATE KEY UPDATE … RETURNING returns
		// one row per row given, inserted, changed or not; GORM counts
		// them and writes the returned key into each struct. A row whose
		// key came back changed met another unique key (its events would
		// name the wrong row): refused below with the count mismatch.
		ok = db.RowsAffected == created+changed+unchanged && !st.keyMoved(stmt.Context, m, elems)
	case counts == dialects.UpsertCountsChanges:
		ok = db.RowsAffected == created+2*changed || db.RowsAffected == created+2*changed+unchanged
	case st.doNothing:
		ok = true
	default:
		ok = db.RowsAffected == created+changed+unchanged
	}
	if !ok {
		_ = db.AddError(uncaptured(m.name, st.op, fmt.Sprintf(
			"as an upsert whose outcome cannot be told apart (%d rows affected, %d created and %d changed expected: a conflict on another unique key, or a row inserted concurrently)",
			db.RowsAffected, created, changed), "upsert on the primary key with rows whose keys you know, or retry"))
		return
	}
	if len(out) == 0 {
		return
	}
	if p.timesKnown() && len(m.timeFields) > 0 {
		out = m.roundTimes(stmt.Context, out, p.caps.TimePrecision)
	}
	p.emitImages(db, m, out, types, befores, imageChange)
}

// returned reports whether the statement ran with a RETURNING clause (GORM
// then counts the rows returned as RowsAffected).
func returned(stmt *gorm.Statement) bool {
	_, ok := stmt.Clauses["RETURNING"]
	return ok && slices.Contains(stmt.BuildClauses, "RETURNING")
}

// keyMoved reports whether an upsert's row came back with another primary
// key than the one it was written with.
func (st *stmtState) keyMoved(ctx context.Context, m *model, elems []reflect.Value) bool {
	if st.conflict != nil || len(st.preKeys) != len(elems) {
		return false
	}
	for i, e := range elems {
		if st.preKeys[i] == "" {
			continue
		}
		if k, ok := m.writtenKeyOf(ctx, e); !ok || keyString(k) != st.preKeys[i] {
			return true
		}
	}
	return false
}

// sameRow reports whether two images of a row hold the same column values.
func (m *model) sameRow(ctx context.Context, a, b reflect.Value) bool {
	for _, f := range m.schema.Fields {
		if f.DBName == "" {
			continue
		}
		va, _ := f.ValueOf(ctx, a)
		vb, _ := f.ValueOf(ctx, b)
		if !sameValue(va, vb) {
			return false
		}
	}
	return true
}
