// Package headers encodes message headers for the JSON headers columns
// of the outbox and the inbox.
package headers

import (
	"encoding/json"
	"reflect"
)

// Encoder encodes headers for a JSON headers column ("{}" when there are
// none). The records of one captured statement share one headers map, so
// it encodes a map once and reuses the result while the same map comes
// back. The zero value is ready to use.
type Encoder struct {
	last map[string]string
	enc  string
}

// Encode returns the JSON text of h.
func (e *Encoder) Encode(h map[string]string) (string, error) {
	if len(h) == 0 {
		return "{}", nil
	}
	if e.last != nil && reflect.ValueOf(e.last).UnsafePointer() == reflect.ValueOf(h).UnsafePointer() {
		return e.enc, nil
	}
	b, err := json.Marshal(h)
	if err != nil {
		return "", err
	}
	e.last, e.enc = h, string(b)
	return e.enc, nil
}
