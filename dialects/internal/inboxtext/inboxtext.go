// Package inboxtext makes a parked inbox message's text storable: the
// dead-letter row keeps its headers in a JSON column and its last error in
// a text column, and neither takes invalid UTF-8 or (PostgreSQL) a NUL.
package inboxtext

import (
	"encoding/base64"
	"strings"
	"unicode/utf8"
)

// Prefix starts the stored name of a header kept in base64.
const Prefix = "base64:"

// Storable reports whether s can be stored as text on every database:
// valid UTF-8 without a NUL.
func Storable(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// EncodeHeaders returns h with every header whose name or value is not
// Storable (or whose name starts with Prefix) stored as
// Prefix+base64(name): base64(value). DecodeHeaders reverses it; h is
// returned as it is when nothing needs encoding.
func EncodeHeaders(h map[string]string) map[string]string {
	clean := true
	for k, v := range h {
		if needs(k, v) {
			clean = false
			break
		}
	}
	if clean {
		return h
	}
	out := make(map[string]string, len(h))
	for k, v := range h {
		if needs(k, v) {
			out[Prefix+base64.StdEncoding.EncodeToString([]byte(k))] = base64.StdEncoding.EncodeToString([]byte(v))
		} else {
			out[k] = v
		}
	}
	return out
}

func needs(k, v string) bool {
	return !Storable(k) || !Storable(v) || strings.HasPrefix(k, Prefix)
}

// DecodeHeaders reverses EncodeHeaders. A header that looks encoded but is
// not valid base64 is kept as it is.
func DecodeHeaders(h map[string]string) map[string]string {
	var out map[string]string
	for k, v := range h {
		if !strings.HasPrefix(k, Prefix) {
			continue
		}
		name, err1 := base64.StdEncoding.DecodeString(k[len(Prefix):])
		val, err2 := base64.StdEncoding.DecodeString(v)
		if err1 != nil || err2 != nil {
			continue
		}
		if out == nil {
			out = make(map[string]string, len(h))
			for k2, v2 := range h {
				out[k2] = v2
			}
		}
		delete(out, k)
		out[string(name)] = string(val)
	}
	if out == nil {
		return h
	}
	return out
}

// Text returns s as storable text: invalid UTF-8 bytes become U+FFFD and
// a NUL becomes the four characters \x00 (for messages, such as a last
// error, that are read by people).
func Text(s string) string {
	if Storable(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", `\x00`)
}
