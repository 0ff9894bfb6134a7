package gormoutbox

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"time"

	"gorm.io/gorm/schema"
)

// writtenKeyOf returns the primary key values of e as a create writes
// them: a zero value is a key (GORM writes it, as in a composite key
// CouponProduct{CouponID: 2, ProductID: ""}) unless the database generates
// the column (auto increment, a database default), which GORM leaves out.
// ok is false when such a generated part is still zero.
func (m *model) writtenKeyOf(ctx context.Context, e reflect.Value) ([]any, bool) {
	k := make([]any, len(m.pkFields))
	for i, f := range m.pkFields {
		v, zero := f.ValueOf(ctx, e)
		if zero && f.HasDefaultValue && f.DefaultValueInterface == nil {
			return nil, false
		}
		k[i] = v
	}
	return k, true
}

// writtenKeysOf is writtenKeyOf of every entity; complete is false when
// one has no key.
func (m *model) writtenKeysOf(ctx context.Context, elems []reflect.Value) (keys [][]any, complete bool) {
	keys = make([][]any, 0, len(elems))
	for _, e := range elems {
		k, ok := m.writtenKeyOf(ctx, e)
		if !ok {
			return keys, false
		}
		keys = append(keys, k)
	}
	return keys, true
}

// keysOf returns the primary key values of elems; complete is false when a
// key is zero (the entity does not identify a row).
func (m *model) keysOf(ctx context.Context, elems []reflect.Value) (keys [][]any, complete bool) {
	keys = make([][]any, 0, len(elems))
	for _, e := range elems {
		k := make([]any, len(m.pkFields))
		for i, f := range m.pkFields {
			v, zero := f.ValueOf(ctx, e)
			if zero {
				return keys, false
			}
			k[i] = v
		}
		keys = append(keys, k)
	}
	return keys, true
}

func fieldValues(ctx context.Context, fields []*schema.Field, e reflect.Value) []any {
	vs := make([]any, len(fields))
	for i, f := range fields {
		vs[i], _ = f.ValueOf(ctx, e)
	}
	return vs
}

func sameFields(a, b []*schema.Field) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// uniqueFields reports whether fields, as a set, are unique in the model's
// table by its tags: one field tagged unique, or a unique index (not a
// partial one) over exactly these fields. Writers of one such key then
// meet on the entity's row or on the index, as for the primary key.
func uniqueFields(sch *schema.Schema, fields []*schema.Field) bool {
	if len(fields) == 1 && fields[0].Unique {
		return true
	}
	for _, idx := range sch.ParseIndexes() {
		if idx.Class != "UNIQUE" || idx.Where != "" || len(idx.Fields) != len(fields) {
			continue
		}
		all := true
		for _, f := range fields {
			if !slices.ContainsFunc(idx.Fields, func(o schema.IndexOption) bool { return o.Field == f }) {
				all = false
				break
			}
		}
		if all {
			return true
		}
	}
	return false
}

// keyString renders key values as a message key / aggregate id: the value
// itself for a single column, a JSON array of the values for several.
func keyString(vals []any) string {
	if len(vals) == 1 {
		return formatKey(vals[0])
	}
	parts := make([]string, len(vals))
	for i, v := range vals {
		parts[i] = formatKey(v)
	}
	b, _ := json.Marshal(parts)
	return string(b)
}

func formatKey(v any) string {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return ""
		}
		rv = rv.Elem()
		v = rv.Interface()
	}
	switch x := v.(type) {
	case string:
		return x
	case []byte:
		return string(x)
	case time.Time:
		return x.UTC().Truncate(time.Microsecond).Format(time.RFC3339Nano)
	case fmt.Stringer:
		return x.String()
	}
	switch rv.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return strconv.FormatInt(rv.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return strconv.FormatUint(rv.Uint(), 10)
	case reflect.String:
		return rv.String()
	}
	return fmt.Sprint(v)
}

// isEntityValue reports whether rv is a struct or a slice/array of structs
// (or pointers to them): values that carry whole entities.
func isEntityValue(rv reflect.Value) bool {
	if !rv.IsValid() {
		return false
	}
	t := rv.Type()
	switch t.Kind() {
	case reflect.Struct:
		return true
	case reflect.Slice, reflect.Array:
		et := t.Elem()
		for et.Kind() == reflect.Pointer {
			et = et.Elem()
		}
		return et.Kind() == reflect.Struct
	}
	return false
}

// entities returns the struct values held by rv, in order.
func entities(rv reflect.Value) []reflect.Value {
	switch rv.Kind() {
	case reflect.Struct:
		return []reflect.Value{rv}
	case reflect.Slice, reflect.Array:
		out := make([]reflect.Value, 0, rv.Len())
		for i := 0; i < rv.Len(); i++ {
			e := rv.Index(i)
			for e.Kind() == reflect.Pointer || e.Kind() == reflect.Interface {
				if e.IsNil() {
					break
				}
				e = e.Elem()
			}
			if e.Kind() == reflect.Struct {
				out = append(out, e)
			}
		}
		return out
	}
	return nil
}

// generatedKey returns the model's primary key field when it is a single
// column the database generates (auto increment, serial, identity).
func (m *model) generatedKey() *schema.Field {
	if len(m.pkFields) != 1 {
		return nil
	}
	f := m.pkFields[0]
	if f.HasDefaultValue && f.DefaultValueInterface == nil {
		return f
	}
	return nil
}

// uniqueKeys lists the model's unique indexes and unique columns (the
// primary key excluded), for finding rows created from maps.
func uniqueKeys(sch *schema.Schema) [][]*schema.Field {
	var out [][]*schema.Field
	for _, f := range sch.Fields {
		if f.Unique && f.DBName != "" && !f.PrimaryKey {
			out = append(out, []*schema.Field{f})
		}
	}
	for _, idx := range sch.ParseIndexes() {
		if idx.Class != "UNIQUE" || idx.Where != "" {
			continue // a partial index does not identify every row
		}
		var fs []*schema.Field
		for _, o := range idx.Fields {
			if o.Field == nil || o.Field.DBName == "" || o.Expression != "" {
				fs = nil
				break
			}
			fs = append(fs, o.Field)
		}
		if len(fs) > 0 {
			out = append(out, fs)
		}
	}
	return out
}
