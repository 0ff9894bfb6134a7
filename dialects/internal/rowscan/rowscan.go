// Package rowscan reads outbox rows (and time columns) the way both
// dialects select them.
package rowscan

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/claim"
)

// Columns are the columns Rows reads, in order.
const Columns = `id, event_id, topic, msg_key, event_type, aggregate_type, aggregate_id, payload, headers,
	shard, attempts, available_at, created_at, last_error, published_at, dead_at, process_attempts, failed_at, seq`

// ColumnsOf is Columns with each column qualified by alias.
func ColumnsOf(alias string) string {
	cols := strings.Split(Columns, ",")
	for i, c := range cols {
		cols[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// scanner scans rows with reused destinations and decodes each distinct
// headers text once: the rows of one statement, and most rows of a
// service, share their headers (content type, schema version).
type scanner struct {
	r                               dialects.Row
	key, headers                    []byte
	lastErr                         sql.NullString
	avail, created, published, dead Time
	failed                          Time
	seq                             sql.NullInt64
	prev                            sql.NullInt64
	prevAvail                       Time
	dest                            []any
	lastHeaders                     string
	lastMap                         map[string]string
	lastTopic                       string // the last valid topic seen
}

func (sc *scanner) scan(rows *sql.Rows, withPrev bool) (claim.Candidate, error) {
	if sc.dest == nil {
		r := &sc.r
		sc.dest = []any{&r.ID, &r.EventID, &r.Topic, &sc.key, &r.EventType, &r.AggregateType, &r.AggregateID,
			&r.Payload, &sc.headers, &r.Shard, &r.Attempts, &sc.avail, &sc.created, &sc.lastErr, &sc.published, &sc.dead,
			&r.ProcessAttempts, &sc.failed, &sc.seq, &sc.prev, &sc.prevAvail}
	}
	dest := sc.dest
	if !withPrev {
		dest = dest[:len(dest)-2]
	}
	// Scan copies []byte columns into fresh slices, so these can be kept.
	sc.r.Payload, sc.key = nil, nil
	sc.prev, sc.prevAvail = sql.NullInt64{}, Time{}
	if err := rows.Scan(dest...); err != nil {
		return claim.Candidate{}, err
	}
	r := sc.r
	r.Key, r.Sequence = sc.key, 0
	if r.Key != nil { // x-sequence: the id, unless Replay renumbered the row
		r.Sequence = r.ID
		if sc.seq.Valid {
			r.Sequence = sc.seq.Int64
		}
	}
	r.Headers, r.Invalid = nil, nil
	if len(sc.headers) > 0 && string(sc.headers) != "{}" {
		if string(sc.headers) != sc.lastHeaders || sc.lastMap == nil {
			m, err := decodeHeaders(sc.headers)
			if err != nil {
				r.Invalid = fmt.Errorf("outbox row %d: column headers: not a JSON object of strings: %v", r.ID, err)
			} else {
				sc.lastHeaders, sc.lastMap = string(sc.headers), m
			}
		}
		if r.Invalid == nil {
			r.Headers = sc.lastMap // shared between rows with the same headers: read-only
		}
	}
	if r.Invalid == nil {
		r.Invalid = sc.check(&r)
	}
	r.AvailableAt, r.CreatedAt, r.LastError = sc.avail.Time, sc.created.Time, sc.lastErr.String
	if sc.published.Valid {
		t := sc.published.Time
		r.PublishedAt = &t
	}
	if sc.dead.Valid {
		t := sc.dead.Time
		r.DeadAt = &t
	}
	r.FailedAt = nil
	if sc.failed.Valid {
		t := sc.failed.Time
		r.FailedAt = &t
	}
	return claim.Candidate{Row: r, Prev: sc.prev.Int64, PrevAvail: sc.prevAvail.Time}, nil
}

// MaxKeyLen is the longest message key a row may carry, in bytes (the
// plugin's gormoutbox.MaxKeyLen, the MySQL msg_key column's width).
const MaxKeyLen = 1024

// decodeHeaders decodes a headers column, which must hold a JSON object
// whose values are strings.
func decodeHeaders(b []byte) (map[string]string, error) {
	m := map[string]string{}
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%v (%s)", err, quote(b))
	}
	if m == nil { // JSON null
		return nil, fmt.Errorf("null (%s)", quote(b))
	}
	return m, nil
}

// quote shows the start of a column's bytes in an error.
func quote(b []byte) string {
	const n = 64
	if len(b) > n {
		return strconv.Quote(string(b[:n])) + "…"
	}
	return strconv.Quote(string(b))
}

// check returns why r cannot be published as stored (see
// dialects.Row.Invalid), nil when it can. The headers were checked by the
// caller.
func (sc *scanner) check(r *dialects.Row) error {
	if r.Topic != sc.lastTopic || r.Topic == "" {
		if !ValidTopic(r.Topic) {
			return fmt.Errorf("outbox row %d: column topic: %s is not a valid Kafka topic name (1-249 of [a-zA-Z0-9._-])",
				r.ID, quote([]byte(r.Topic)))
		}
		sc.lastTopic = r.Topic
	}
	if r.Payload == nil {
		return fmt.Errorf("outbox row %d: column payload: NULL", r.ID)
	}
	if len(r.Key) > MaxKeyLen {
		return fmt.Errorf("outbox row %d: column msg_key: %d bytes, over the limit of %d", r.ID, len(r.Key), MaxKeyLen)
	}
	return nil
}

// ValidTopic reports whether t is a valid Kafka topic name: 1 to 249
// characters of [a-zA-Z0-9._-], and neither "." nor "..".
func ValidTopic(t string) bool {
	if len(t) == 0 || len(t) > 249 || t == "." || t == ".." {
		return false
	}
	for i := 0; i < len(t); i++ {
		c := t[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// Rows reads every row of rows (Columns) and closes rows. sizeHint is the
// expected row count.
func Rows(rows *sql.Rows, sizeHint int) ([]dialects.Row, error) {
	defer rows.Close()
	out := make([]dialects.Row, 0, sizeHint)
	var sc scanner
	for rows.Next() {
		c, err := sc.scan(rows, false)
		if err != nil {
			return nil, err
		}
		out = append(out, c.Row)
	}
	return out, rows.Err()
}

// Candidates reads every row of rows — Columns, followed, when withPrev,
// by the id and the available_at of the previous pending row of the same
// topic and key — and closes rows. sizeHint is the expected row count.
func Candidates(rows *sql.Rows, withPrev bool, sizeHint int) ([]claim.Candidate, error) {
	defer rows.Close()
	out := make([]claim.Candidate, 0, sizeHint)
	var sc scanner
	for rows.Next() {
		c, err := sc.scan(rows, withPrev)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// CandidatesWithin is Candidates that stops reading once the payloads read
// reach maxBytes: it returns the id-order prefix whose payloads add up to
// at most maxBytes, always the first row however large, and whether it cut
// anything off. The rows past the bound are never held in memory (closing
// rows discards them). maxBytes ≤ 0 reads every row.
func CandidatesWithin(rows *sql.Rows, withPrev bool, sizeHint int, maxBytes int64) ([]claim.Candidate, bool, error) {
	if maxBytes <= 0 {
		out, err := Candidates(rows, withPrev, sizeHint)
		return out, false, err
	}
	defer rows.Close()
	out := make([]claim.Candidate, 0, sizeHint)
	var (
		sc    scanner
		total int64
	)
	for rows.Next() {
		c, err := sc.scan(rows, withPrev)
		if err != nil {
			return nil, false, err
		}
		total += int64(len(c.Payload))
		if len(out) > 0 && total > maxBytes {
			return out, true, rows.Close()
		}
		out = append(out, c)
	}
	return out, false, rows.Err()
}

// Time scans a time column from drivers that return time.Time and from
// those that return text (MySQL without parseTime). The zero value is NULL.
type Time struct {
	Time  time.Time
	Valid bool
}

// Scan implements sql.Scanner.
func (t *Time) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*t = Time{}
	case time.Time:
		*t = Time{Time: x.UTC(), Valid: true}
	case []byte:
		return t.parse(string(x))
	case string:
		return t.parse(x)
	default:
		return fmt.Errorf("cannot scan %T into a time", v)
	}
	return nil
}

func (t *Time) parse(s string) error {
	for _, layout := range []string{"2006-01-02 15:04:05.999999999", time.RFC3339Nano} {
		if p, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			*t = Time{Time: p, Valid: true}
			return nil
		}
	}
	return fmt.Errorf("cannot parse %q as a time", s)
}
