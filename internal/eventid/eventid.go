// Package eventid generates event ids: UUIDv7 (RFC 9562), unique and
// ordered by creation time.
package eventid

import (
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"sync"
	"time"
)

// Generator produces UUIDv7 strings. Within one generator ids are strictly
// increasing: the 12-bit rand_a field holds a counter that is reseeded every
// millisecond and, should it overflow, borrows the next millisecond
// (RFC 9562 §6.2, method 1). The zero value is ready to use.
type Generator struct {
	mu     sync.Mutex
	lastMs int64
	seq    uint16
	now    func() time.Time
}

// New returns the next id, e.g. "01936b2e-7f3a-7c41-9d2e-5b8f0c1a2d3e".
func (g *Generator) New() string {
	var b [16]byte
	_, _ = rand.Read(b[6:]) // crypto/rand.Read never fails (Go 1.24+)
	g.mu.Lock()
	now := time.Now
	if g.now != nil {
		now = g.now
	}
	ms := now().UnixMilli()
	if ms > g.lastMs {
		g.lastMs = ms
		// Start the counter in the lower half so that it rarely overflows.
		g.seq = binary.BigEndian.Uint16(b[6:8]) & 0x07ff
	} else {
		g.seq++
		if g.seq > 0x0fff {
			g.lastMs++
			g.seq = 0
		}
	}
	ms, seq := g.lastMs, g.seq
	g.mu.Unlock()

	b[0] = byte(ms >> 40)
	b[1] = byte(ms >> 32)
	b[2] = byte(ms >> 24)
	b[3] = byte(ms >> 16)
	b[4] = byte(ms >> 8)
	b[5] = byte(ms)
	b[6] = 0x70 | byte(seq>>8)
	b[7] = byte(seq)
	b[8] = 0x80 | (b[8] & 0x3f)
	return format(b)
}

func format(b [16]byte) string {
	var s [36]byte
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:], b[10:16])
	return string(s[:])
}

// Time returns the millisecond timestamp encoded in a UUIDv7 string, and
// false when id is not one.
func Time(id string) (time.Time, bool) {
	if len(id) != 36 || id[14] != '7' {
		return time.Time{}, false
	}
	var b [6]byte
	if _, err := hex.Decode(b[0:4], []byte(id[0:8])); err != nil {
		return time.Time{}, false
	}
	if _, err := hex.Decode(b[4:6], []byte(id[9:13])); err != nil {
		return time.Time{}, false
	}
	ms := int64(b[0])<<40 | int64(b[1])<<32 | int64(b[2])<<24 | int64(b[3])<<16 | int64(b[4])<<8 | int64(b[5])
	return time.UnixMilli(ms), true
}
