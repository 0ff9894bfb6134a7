package gormoutbox

import (
	"fmt"
	"reflect"
	"slices"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"
	"gorm.io/gorm/schema"
)

// Creates from maps: db.Model(&User{}).Create(map[string]any{...}), a
// []map[string]any, db.Table("users").Create(map...), and the maps GORM
// builds itself (the generics API's Set(...).Create, association writes).
// A map is not the row: the events carry the row as committed, read back
// inside the transaction by the key the map gives (written in it, or
// filled in by GORM from RETURNING or LastInsertId) or, failing that, by
// the values of a unique index written in it.

// idColumn is where GORM puts LastInsertId in a map created without a
// model (db.Table("t").Create(map)).
const idColumn = "@id"

// createMaps returns the maps of a create from map[string]any,
// *map[string]any, []map[string]any or *[]map[string]any.
func createMaps(dest any) ([]map[string]any, bool) {
	switch v := dest.(type) {
	case map[string]any:
		return []map[string]any{v}, true
	case *map[string]any:
		if v == nil || *v == nil {
			return nil, true
		}
		return []map[string]any{*v}, true
	case []map[string]any:
		return v, true
	case *[]map[string]any:
		if v == nil {
			return nil, true
		}
		return *v, true
	}
	return nil, false
}

// planMapCreate checks, before the INSERT runs, that every created row can
// be found again, and asks for the generated key with RETURNING where GORM
// would not and LastInsertId does not give it (PostgreSQL).
func (p *Plugin) planMapCreate(db *gorm.DB, st *stmtState, maps []map[string]any) (bool, error) {
	stmt, m := db.Statement, st.m
	if len(maps) == 0 {
		return false, nil // GORM refuses it with ErrEmptySlice
	}
	if err := refuseInsertIgnore(stmt, m, st.op); err != nil {
		return false, err
	}
	if _, ok := stmt.Clauses["ON CONFLICT"]; ok {
		return false, uncaptured(m.name, st.op, "as an upsert (clause.OnConflict) from a map",
			"upsert the model struct, whose rows can be told apart")
	}
	st.maps = len(maps)
	generated := m.generatedKey()
	returning := slices.Contains(stmt.BuildClauses, "RETURNING")
	if !p.caps.ConsecutiveInsertIDs && generated != nil && st.schemaless && returning {
		// Without the model GORM asks for no RETURNING; ask for the key.
		// (A plain []map cannot take the rows RETURNING gives: GORM fails
		// on it, so it is left as it is and found by a unique index.)
		if _, plain := stmt.Dest.([]map[string]any); !plain {
			if _, ok := stmt.Clauses["RETURNING"]; !ok {
				stmt.AddClause(clause.Returning{Columns: []clause.Column{{Name: generated.DBName}}})
			}
		}
	}
	st.mixedKeys = p.mixedKeys(stmt, m, maps)
	for i, row := range maps {
		if _, ok := m.mapKey(row); ok {
			continue
		}
		if generated != nil && p.generatedKeyReadable(stmt) && !st.mixedKeys {
			continue
		}
		if m.uniqueIn(row) != nil {
			continue
		}
		return false, uncaptured(m.name, st.op, fmt.Sprintf(
			"from a map (row %d) that holds neither the primary key (%v) nor all the columns of a unique index, so its row cannot be found after the insert", i, m.pkDBNames),
			"put the key (or the values of a unique index) in the map, or create the model struct")
	}
	return true, nil
}

// mixedKeys reports a multi-row create from maps without RETURNING, on a
// database whose generated keys come back as consecutive LastInsertId
// (MySQL), where some maps hold the key and others leave it to auto
// increment: GORM
// then writes LastInsertId, +1, … into every map in order, the keyed ones
// included, so the ids it gives the others are not theirs. Such rows are
// found by a unique index, or the create is refused.
func (p *Plugin) mixedKeys(stmt *gorm.Statement, m *model, maps []map[string]any) bool {
	if !p.caps.ConsecutiveInsertIDs || willReturn(stmt) || len(maps) < 2 || m.generatedKey() == nil {
		return false // with RETURNING (MariaDB) each row's own key comes back
	}
	keyed := 0
	for _, row := range maps {
		if _, ok := m.mapKey(row); ok {
			keyed++
		}
	}
	return keyed > 0 && keyed < len(maps)
}

// generatedKeyReadable reports whether the database's generated key of a
// map create comes back into the map: from RETURNING when the statement
// carries it (GORM adds it for a model with database defaults;
// planMapCreate for a create without the model on PostgreSQL), else from
// LastInsertId where it is consecutive for one multi-row INSERT (MySQL).
func (p *Plugin) generatedKeyReadable(stmt *gorm.Statement) bool {
	return willReturn(stmt) || p.caps.ConsecutiveInsertIDs
}

// willReturn reports whether a create will run with RETURNING: the
// dialect writes it and the statement carries one, or GORM will add one
// (for a model with database defaults) when it builds the INSERT.
func willReturn(stmt *gorm.Statement) bool {
	if !slices.Contains(stmt.BuildClauses, "RETURNING") {
		return false
	}
	if _, ok := stmt.Clauses["RETURNING"]; ok {
		return true
	}
	return stmt.Schema != nil && len(stmt.Schema.FieldsWithDefaultDBValue) > 0
}

// mapValue returns the value of field f in a map written by GORM: by column
// name, else by field name; expressions (gorm.Expr) are not values.
func mapValue(row map[string]any, f *schema.Field) (any, bool) {
	v, ok := row[f.DBName]
	if !ok {
		v, ok = row[f.Name]
	}
	if !ok || v == nil {
		return nil, false
	}
	if _, expr := v.(clause.Expression); expr {
		return nil, false
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() == reflect.Pointer && rv.IsNil() {
		return nil, false
	}
	return v, true
}

// mapKey returns the primary key values a map holds.
func (m *model) mapKey(row map[string]any) ([]any, bool) {
	return mapValues(row, m.pkFields)
}

func mapValues(row map[string]any, fields []*schema.Field) ([]any, bool) {
	k := make([]any, len(fields))
	for i, f := range fields {
		v, ok := mapValue(row, f)
		if !ok {
			return nil, false
		}
		k[i] = v
	}
	return k, true
}

// uniqueIn returns the fields of a unique index (or unique column) whose
// values are all in row, or nil.
func (m *model) uniqueIn(row map[string]any) []*schema.Field {
	for _, u := range m.uniques {
		if _, ok := mapValues(row, u); ok {
			return u
		}
	}
	return nil
}

// captureMapCreate emits the events of a create from maps: each row built
// from what was written and given back when that is certain (mapImages),
// else read back by its key, or by a unique index it wrote.
func (p *Plugin) captureMapCreate(db *gorm.DB, st *stmtState) {
	stmt, m := db.Statement, st.m
	vals, _ := stmt.Clauses["VALUES"].Expression.(clause.Values)
	n := len(vals.Values)
	if n == 0 || db.RowsAffected == 0 {
		return
	}
	written := make([]map[string]any, n)
	for i, r := range vals.Values {
		row := make(map[string]any, len(vals.Columns)+1)
		for j, c := range vals.Columns {
			if j < len(r) {
				row[c.Name] = r[j]
			}
		}
		written[i] = row
	}
	after, _ := createMaps(stmt.Dest)
	generated := m.generatedKey()
	if generated != nil && !st.mixedKeys {
		for i, row := range written {
			if _, ok := mapValue(row, generated); ok {
				continue
			}
			src := st.returnedRow(after, n, i)
			if src == nil {
				continue
			}
			if v, ok := mapValue(src, generated); ok {
				row[generated.DBName] = v
			} else if v, ok := src[idColumn]; ok && v != nil {
				row[generated.DBName] = v
			}
		}
	}
	// Find the rows by primary key when every row has one, else by the
	// first unique index every row wrote.
	by := m.pkFields
	for _, row := range written {
		if _, ok := m.mapKey(row); !ok {
			by = nil
			break
		}
	}
	if by == nil {
	unique:
		for _, u := range m.uniques {
			for _, row := range written {
				if _, ok := mapValues(row, u); !ok {
					continue unique
				}
			}
			by = u
			break
		}
	}
	if by == nil {
		_ = db.AddError(uncaptured(m.name, st.op, "from maps whose rows cannot be found after the insert (no primary key came back and no unique index was written)",
			"put the key in the map, or create the model struct"))
		return
	}
	if elems, ok := p.mapImages(db, st, written, after); ok {
		p.emit(db, m, elems, repeat(m.createType, len(elems)))
		return
	}
	keys := make([][]any, n)
	for i, row := range written {
		keys[i], _ = mapValues(row, by)
	}
	rows, err := p.loadBy(db, m, by, keys, false, false)
	if err != nil {
		_ = db.AddError(fmt.Errorf("gormoutbox: create of %s: read the rows after the insert: %w", m.name, err))
		return
	}
	elems := make([]reflect.Value, 0, n)
	for _, k := range keys {
		row, ok := rows[keyString(k)]
		if !ok {
			_ = db.AddError(fmt.Errorf("gormoutbox: create of %s: row %s not found after the insert", m.name, keyString(k)))
			return
		}
		elems = append(elems, row)
	}
	p.emit(db, m, elems, repeat(m.createType, len(elems)))
}

// returnedRow returns the map that holds what the database gave back for
// row i of a create of n rows from maps: GORM appends the rows RETURNING
// gives to a *[]map, and writes them (or LastInsertId) into the maps
// themselves otherwise. after is the statement's maps after the write.
func (st *stmtState) returnedRow(after []map[string]any, n, i int) map[string]any {
	switch {
	case len(after) >= st.maps+n && n == st.maps:
		return after[st.maps+i]
	case i < len(after):
		return after[i]
	}
	return nil
}

// mapImages builds the created rows from what the statement wrote and what
// the database gave back, without reading them again, when that is
// certainly the row as committed: every written value is of the field's own
// Go type (or an integer that fits), every column the database filled in
// came back (the generated key; on PostgreSQL RETURNING gives all the
// columns with database defaults), the other columns are NULL or a literal
// default, and no time is written unless the database stores it truncated
// to a known precision (on MySQL its column may round it). Any
// doubt — an expression, a conversion, a serializer — and ok is false: the
// rows are read back.
func (p *Plugin) mapImages(db *gorm.DB, st *stmtState, written, after []map[string]any) ([]reflect.Value, bool) {
	stmt, m := db.Statement, st.m
	times := p.timesKnown()
	n := len(written)
	out := make([]reflect.Value, n)
	for i, row := range written {
		returned := st.returnedRow(after, n, i)
		if st.mixedKeys {
			returned = nil
		}
		e := reflect.New(m.schema.ModelType).Elem()
		for _, f := range m.schema.Fields {
			if f.DBName == "" {
				continue
			}
			v, ok := row[f.DBName]
			if !ok && returned != nil {
				v, ok = returned[f.DBName]
			}
			if !ok {
				switch {
				case !f.HasDefaultValue:
					continue // NULL: the zero value, as a read would give
				case f.DefaultValueInterface != nil:
					v = f.DefaultValueInterface
				default:
					return nil, false // a database default that did not come back
				}
			}
			if v == nil {
				if f.HasDefaultValue {
					return nil, false // NULL written to a column with a default: MySQL's auto increment fills it in
				}
				continue
			}
			if !exactFor(f, v) || (!times && f.IndirectFieldType == timeType) {
				return nil, false
			}
			if err := f.Set(stmt.Context, e, v); err != nil {
				return nil, false
			}
		}
		out[i] = e
	}
	if times && len(m.timeFields) > 0 {
		out = m.roundTimes(stmt.Context, out, p.caps.TimePrecision)
	}
	return out, true
}

// exactFor reports whether v can be stored in f without a conversion that
// could differ from the database's: v's type is the field's (or what its
// pointer points to), or both are integers and v fits.
func exactFor(f *schema.Field, v any) bool {
	if f.Serializer != nil {
		return false
	}
	rv := reflect.ValueOf(v)
	t := rv.Type()
	if t == f.FieldType || t == f.IndirectFieldType {
		return true
	}
	ft := f.IndirectFieldType
	switch {
	case isInt(t.Kind()) && isInt(ft.Kind()):
		return !reflect.New(ft).Elem().OverflowInt(rv.Int())
	case isUint(t.Kind()) && isUint(ft.Kind()):
		return !reflect.New(ft).Elem().OverflowUint(rv.Uint())
	case isUint(t.Kind()) && isInt(ft.Kind()):
		u := rv.Uint()
		return u <= 1<<62 && !reflect.New(ft).Elem().OverflowInt(int64(u))
	case isInt(t.Kind()) && isUint(ft.Kind()):
		n := rv.Int()
		return n >= 0 && !reflect.New(ft).Elem().OverflowUint(uint64(n))
	}
	return false
}

func isInt(k reflect.Kind) bool {
	return k >= reflect.Int && k <= reflect.Int64
}

func isUint(k reflect.Kind) bool {
	return k >= reflect.Uint && k <= reflect.Uintptr
}
