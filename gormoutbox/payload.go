package gormoutbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"

	"gorm.io/gorm/schema"
)

// encoder turns an entity into its JSON payload: the model's own JSON
// encoding (json tags and MarshalJSON honoured) without the fields tagged
// `outbox:"-"`, the associations and the fields that are not columns, so
// that the payload is the row and nothing else.
type encoder struct {
	model string
	drop  map[string]bool // top-level JSON member names to remove
	// fields are the schema fields, for naming the one that fails to encode.
	fields []*schema.Field
}

func newEncoder(sch *schema.Schema, model string, excluded map[*schema.Field]bool) (encoder, error) {
	e := encoder{model: model, drop: map[string]bool{}, fields: sch.Fields}
	custom := sch.ModelType.Implements(jsonMarshalerType) || reflect.PointerTo(sch.ModelType).Implements(jsonMarshalerType)
	for f := range excluded {
		if custom {
			return e, tagError(model, f.Name, "`outbox:\"-\"` cannot be enforced on a model with its own MarshalJSON: leave the field out there instead")
		}
		n, ok := jsonName(sch.ModelType, f)
		if !ok {
			if f.StructField.Tag.Get("json") == "-" {
				continue // never encoded anyway
			}
			return e, tagError(model, f.Name, "`outbox:\"-\"` on a field nested in a JSON member of its own is not supported: exclude the enclosing field, or give it `json:\"-\"`")
		}
		e.drop[n] = true
	}
	if !custom {
		// Not part of the row: associations and fields that are not columns.
		for _, rel := range sch.Relationships.Relations {
			if n, ok := jsonName(sch.ModelType, rel.Field); ok {
				e.drop[n] = true
			}
		}
		for _, f := range sch.Fields {
			if !f.Readable || f.DBName == "" {
				if n, ok := jsonName(sch.ModelType, f); ok {
					e.drop[n] = true
				}
			}
		}
	}
	// Fail at registration, not at the first write, on types JSON cannot
	// encode at all (channels, functions, complex numbers).
	if _, err := e.encode(reflect.New(sch.ModelType)); err != nil {
		var ute *json.UnsupportedTypeError
		if errors.As(err, &ute) {
			return e, err
		}
	}
	return e, nil
}

// encode returns the payload of the entity v (a struct or pointer to one).
func (e *encoder) encode(v reflect.Value) ([]byte, error) {
	for v.Kind() == reflect.Pointer && !v.IsNil() && v.Elem().Kind() == reflect.Pointer {
		v = v.Elem()
	}
	if v.Kind() != reflect.Pointer && v.CanAddr() {
		v = v.Addr() // so that pointer-receiver MarshalJSON methods apply
	}
	b, err := json.Marshal(v.Interface())
	if err != nil {
		return nil, e.explain(v, err)
	}
	if len(e.drop) == 0 {
		return b, nil
	}
	out, err := dropMembers(b, e.drop)
	if err != nil {
		return nil, fmt.Errorf("%w: model %s: %v", ErrEncodePayload, e.model, err)
	}
	return out, nil
}

// explain names the field that makes err happen, when one can be found.
func (e *encoder) explain(v reflect.Value, err error) error {
	rv := reflect.Indirect(v)
	if rv.Kind() == reflect.Struct {
		for _, f := range e.fields {
			fv, _ := f.ValueOf(context.Background(), rv)
			if _, ferr := json.Marshal(fv); ferr != nil {
				return fmt.Errorf("%w: model %s field %s: %v", ErrEncodePayload, e.model, f.Name, ferr)
			}
		}
	}
	return fmt.Errorf("%w: model %s: %v", ErrEncodePayload, e.model, err)
}

// dropMembers removes the top-level members named in drop from the compact
// JSON object b (as produced by json.Marshal), keeping the others in order.
func dropMembers(b []byte, drop map[string]bool) ([]byte, error) {
	if len(b) < 2 || b[0] != '{' {
		return nil, errors.New("payload is not a JSON object, so fields cannot be left out of it")
	}
	out := make([]byte, 0, len(b))
	out = append(out, '{')
	i, first := 1, true
	for i < len(b) && b[i] != '}' {
		start := i
		kEnd, err := skipString(b, i)
		if err != nil {
			return nil, err
		}
		key := string(b[start+1 : kEnd-1])
		if bytes.IndexByte(b[start:kEnd], '\\') >= 0 {
			if err := json.Unmarshal(b[start:kEnd], &key); err != nil {
				return nil, err
			}
		}
		if kEnd >= len(b) || b[kEnd] != ':' {
			return nil, errors.New("malformed JSON object")
		}
		end, err := skipValue(b, kEnd+1)
		if err != nil {
			return nil, err
		}
		if !drop[key] {
			if !first {
				out = append(out, ',')
			}
			out = append(out, b[start:end]...)
			first = false
		}
		i = end
		if i < len(b) && b[i] == ',' {
			i++
		}
	}
	return append(out, '}'), nil
}

// skipString returns the index just past the JSON string starting at b[i].
func skipString(b []byte, i int) (int, error) {
	if i >= len(b) || b[i] != '"' {
		return 0, errors.New("malformed JSON: expected a string")
	}
	for j := i + 1; j < len(b); j++ {
		switch b[j] {
		case '\\':
			j++
		case '"':
			return j + 1, nil
		}
	}
	return 0, errors.New("malformed JSON: unterminated string")
}

// skipValue returns the index just past the compact JSON value at b[i].
func skipValue(b []byte, i int) (int, error) {
	depth := 0
	for j := i; j < len(b); j++ {
		switch b[j] {
		case '"':
			end, err := skipString(b, j)
			if err != nil {
				return 0, err
			}
			j = end - 1
			if depth == 0 {
				return end, nil
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return j, nil
			}
			depth--
			if depth == 0 {
				return j + 1, nil
			}
		case ',':
			if depth == 0 {
				return j, nil
			}
		}
	}
	return 0, errors.New("malformed JSON: unterminated value")
}
