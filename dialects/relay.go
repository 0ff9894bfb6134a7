package dialects

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Row is one outbox row as the relay reads it.
type Row struct {
	// ID is the outbox row id (relay order).
	ID      int64
	EventID string
	Topic   string
	// Key is the message key; nil means none.
	Key           []byte
	EventType     string
	AggregateType string
	AggregateID   string
	Payload       []byte
	// Headers may be shared between rows read together: do not modify.
	Headers map[string]string
	Shard   int
	// Attempts counts failed publications so far.
	Attempts    int
	AvailableAt time.Time
	CreatedAt   time.Time
	// LastError is the error of the last failed publication, "" if none.
	LastError string
	// PublishedAt and DeadAt are set on published and dead-lettered rows.
	PublishedAt *time.Time
	DeadAt      *time.Time
	// ProcessAttempts is the send for processing the row stands for (1,
	// then more for re-sends after FAILED answers; see Acknowledge).
	ProcessAttempts int
	// FailedAt is set on rows whose last process attempt was answered
	// FAILED.
	FailedAt *time.Time

	// prev is the id of the previous pending row of the same topic and key
	// (0 when there is none) and prevAvail its available_at, read by Claim
	// for the order guard.
	prev      int64
	prevAvail time.Time
}

// Retry is the new state of a row whose publication failed.
type Retry struct {
	ID int64
	// Attempts is the new number of failed attempts.
	Attempts int
	// AvailableAt is when the row may be tried again.
	AvailableAt time.Time
	// Dead dead-letters the row now (AvailableAt is then ignored).
	Dead bool
	// Error is kept in last_error.
	Error string
}

// Outcome is what became of a claimed batch.
type Outcome struct {
	// Now stamps published_at and dead_at.
	Now time.Time
	// Published rows were written to the broker.
	Published []int64
	// Delete removes published rows instead of marking them.
	Delete bool
	// Retries are rows that failed, in id order. A retry that is not dead
	// also pushes back the later pending rows of its topic and key to its
	// AvailableAt, so that they do not fill the next claims only to be
	// held back by the order guard.
	Retries []Retry
	// Keys holds the topic and key of each retry, same index.
	Keys []TopicKey
}

// TopicKey is the unit of ordering: a topic and a message key.
type TopicKey struct {
	Topic string
	Key   []byte
}

// ClaimOptions tune a relay pass. Every dialect reads Shards, ShardMod
// and ShardRem; ShardLocks only concerns the dialects that lock shards
// (see ShardLocker), and the others ignore it.
type ClaimOptions struct {
	// Shards is the table's shard count (the plugin's Config.Shards).
	Shards int
	// ShardMod and ShardRem, when ShardMod > 1, restrict the pass to the
	// shards s with s % ShardMod == ShardRem: the passes of one relay's
	// workers take disjoint keys.
	ShardMod, ShardRem int
	// ShardLocks bound the shard locks of a pass, for the dialects that
	// lock shards.
	ShardLocks ShardLocks
}

// ShardLocks tune the passes of a dialect that takes a lock per shard
// (a ShardLocker, MySQL): relays share the table by shards, each pass
// holding the shards it locked.
type ShardLocks struct {
	// Max bounds the shard locks one pass holds; 0 means every free
	// shard.
	Max int
	// Wait is how long a pass that finds every shard held waits for one
	// (a standby relay takes over within Wait of the holder's death); 0
	// means it does not wait.
	Wait time.Duration
}

// ShardLocker is implemented by the dialects whose relay passes lock
// shards, and so read ClaimOptions.ShardLocks (MySQL, with GET_LOCK). The
// others share rows among relays another way (PostgreSQL: FOR UPDATE SKIP
// LOCKED) and ignore ShardLocks.
type ShardLocker interface {
	// LocksShards reports whether the dialect's passes lock shards.
	LocksShards() bool
}

// Pass is one relay pass: a sequence of claims, each followed by Finish.
// It is not safe for concurrent use.
type Pass interface {
	// Claim returns up to limit rows due at now, in id order, such that no
	// returned row has an earlier pending row of the same topic and key
	// outside the returned set: publishing them in order keeps each key's
	// order. The rows stay claimed (no other relay can take them) until
	// Finish or Close.
	Claim(ctx context.Context, now time.Time, limit int) ([]Row, error)
	// Finish records what became of the last claim and releases its rows.
	Finish(ctx context.Context, o Outcome) error
	// Close ends the pass; a claim not finished is released untouched.
	Close() error
}

// DeadQuery selects dead-lettered rows.
type DeadQuery struct {
	// Topic restricts to one topic when set.
	Topic string
	// AfterID pages: rows with a larger id only.
	AfterID int64
	// Limit bounds the rows returned (default 100).
	Limit int
}

// Stats are counts over the outbox table.
type Stats struct {
	// Pending rows: neither published nor dead.
	Pending int64
	// Dead rows (dead-lettered, not replayed).
	Dead int64
	// OldestPending is the created_at of the oldest pending row, zero if none.
	OldestPending time.Time
	// Awaiting rows are published and wait for a consumer's
	// acknowledgement (rows that asked for one).
	Awaiting int64
	// Failed rows were answered FAILED on their last process attempt.
	Failed int64
	// Published rows that wait for nothing, and Processed rows
	// (acknowledged): filled only by CountDone, which reads them all.
	Published, Processed int64
}

// Predicates of the row states.
const (
	PendingWhere  = `published_at IS NULL AND dead_at IS NULL`
	DeadWhere     = `dead_at IS NOT NULL`
	AwaitingWhere = `processed_at IS NULL AND failed_at IS NULL AND ack_topic IS NOT NULL AND published_at IS NOT NULL`
	FailedWhere   = `failed_at IS NOT NULL`
)

// Relayer is the relay side of a dialect.
type Relayer interface {
	// Open starts a relay pass over table.
	Open(ctx context.Context, db *sql.DB, t Table, o ClaimOptions) (Pass, error)
	// Replay puts dead-lettered rows back: attempts 0, due at now.
	// It returns how many rows it put back.
	Replay(ctx context.Context, db *sql.DB, t Table, now time.Time, ids []int64) (int64, error)
	// DeadLetters lists dead-lettered rows in id order.
	DeadLetters(ctx context.Context, db *sql.DB, t Table, q DeadQuery) ([]Row, error)
	// Cleanup deletes up to limit rows published before before and returns
	// how many it deleted.
	Cleanup(ctx context.Context, db *sql.DB, t Table, before time.Time, limit int) (int64, error)
	// Stats counts pending and dead rows.
	Stats(ctx context.Context, db *sql.DB, t Table) (Stats, error)
}

// QueryStats counts the pending and dead rows of t (SQL both dialects
// accept).
func QueryStats(ctx context.Context, db *sql.DB, d interface{ Quote(string) string }, t Table) (Stats, error) {
	q := t.Qualified(d)
	var (
		s      Stats
		oldest Time
	)
	err := db.QueryRowContext(ctx, `SELECT
	(SELECT COUNT(*) FROM `+q+` WHERE `+PendingWhere+`),
	(SELECT COUNT(*) FROM `+q+` WHERE `+DeadWhere+`),
	(SELECT MIN(created_at) FROM `+q+` WHERE `+PendingWhere+`),
	(SELECT COUNT(*) FROM `+q+` WHERE `+AwaitingWhere+`),
	(SELECT COUNT(*) FROM `+q+` WHERE `+FailedWhere+`)`).
		Scan(&s.Pending, &s.Dead, &oldest, &s.Awaiting, &s.Failed)
	if err != nil {
		return s, fmt.Errorf("stats of %s: %w", t, err)
	}
	s.OldestPending = oldest.Time
	return s, nil
}

// QueryTopicStats implements Admin.TopicStats for both dialects:
// QueryStats per topic (SQL both dialects accept). It
// runs one GROUP BY per state, each with the exact predicate of its index
// (pending, dead, awaiting, failed), so that published rows that wait for
// nothing are never read.
func QueryTopicStats(ctx context.Context, db *sql.DB, d interface{ Quote(string) string }, t Table) (map[string]Stats, error) {
	q := t.Qualified(d)
	out := map[string]Stats{}
	queries := []string{
		`SELECT topic, COUNT(*), MIN(created_at) FROM ` + q + ` WHERE ` + PendingWhere + ` GROUP BY topic`,
		`SELECT topic, COUNT(*), NULL FROM ` + q + ` WHERE ` + DeadWhere + ` GROUP BY topic`,
		`SELECT topic, COUNT(*), NULL FROM ` + q + ` WHERE ` + AwaitingWhere + ` GROUP BY topic`,
		`SELECT topic, COUNT(*), NULL FROM ` + q + ` WHERE ` + FailedWhere + ` GROUP BY topic`,
	}
	for qi, query := range queries {
		rows, err := db.QueryContext(ctx, query)
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", t, err)
		}
		for rows.Next() {
			var (
				topic  string
				n      int64
				oldest Time
			)
			if err := rows.Scan(&topic, &n, &oldest); err != nil {
				rows.Close()
				return nil, fmt.Errorf("stats of %s: %w", t, err)
			}
			s := out[topic]
			switch qi {
			case 0:
				s.Pending, s.OldestPending = n, oldest.Time
			case 1:
				s.Dead = n
			case 2:
				s.Awaiting = n
			case 3:
				s.Failed = n
			}
			out[topic] = s
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, fmt.Errorf("stats of %s: %w", t, err)
		}
	}
	return out, nil
}

// CountDone implements Admin.CountDone for both dialects: it adds to
// stats, per topic, the published rows that wait for nothing and the
// processed ones. It reads every published row: for an
// operator's question, not for metrics collected every few seconds.
func CountDone(ctx context.Context, db *sql.DB, d interface{ Quote(string) string }, t Table, stats map[string]Stats) error {
	rows, err := db.QueryContext(ctx, `SELECT topic,
	SUM(CASE WHEN processed_at IS NOT NULL THEN 1 ELSE 0 END),
	SUM(CASE WHEN ack_topic IS NULL THEN 1 ELSE 0 END)
FROM `+t.Qualified(d)+` WHERE published_at IS NOT NULL GROUP BY topic`)
	if err != nil {
		return fmt.Errorf("count published rows of %s: %w", t, err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			topic          string
			processed, pub int64
		)
		if err := rows.Scan(&topic, &processed, &pub); err != nil {
			return fmt.Errorf("count published rows of %s: %w", t, err)
		}
		s := stats[topic]
		s.Processed, s.Published = processed, pub
		stats[topic] = s
	}
	return rows.Err()
}

// Listener is implemented by dialects that can tell the relay when outbox
// rows are committed (PostgreSQL: LISTEN/NOTIFY). Listen blocks until ctx
// is done, calling notify after each commit that wrote rows; onError (if
// not nil) hears of connection trouble, after which it reconnects.
type Listener interface {
	Listen(ctx context.Context, db *sql.DB, t Table, notify func(), onError func(error)) error
}

// RowColumns are the columns ScanRows reads, in order.
const RowColumns = `id, event_id, topic, msg_key, event_type, aggregate_type, aggregate_id, payload, headers,
	shard, attempts, available_at, created_at, last_error, published_at, dead_at, process_attempts, failed_at`

// RowColumnsOf is RowColumns with each column qualified by alias.
func RowColumnsOf(alias string) string {
	cols := strings.Split(RowColumns, ",")
	for i, c := range cols {
		cols[i] = alias + "." + strings.TrimSpace(c)
	}
	return strings.Join(cols, ", ")
}

// scanner scans rows with reused destinations and decodes each distinct
// headers text once: the rows of one statement, and most rows of a
// service, share their headers (content type, schema version).
type scanner struct {
	r                               Row
	key, headers                    []byte
	lastErr                         sql.NullString
	avail, created, published, dead Time
	failed                          Time
	prev                            sql.NullInt64
	prevAvail                       Time
	dest                            []any
	lastHeaders                     string
	lastMap                         map[string]string
}

func (sc *scanner) scan(rows *sql.Rows, withPrev bool) (Row, error) {
	if sc.dest == nil {
		r := &sc.r
		sc.dest = []any{&r.ID, &r.EventID, &r.Topic, &sc.key, &r.EventType, &r.AggregateType, &r.AggregateID,
			&r.Payload, &sc.headers, &r.Shard, &r.Attempts, &sc.avail, &sc.created, &sc.lastErr, &sc.published, &sc.dead,
			&r.ProcessAttempts, &sc.failed, &sc.prev, &sc.prevAvail}
	}
	dest := sc.dest
	if !withPrev {
		dest = dest[:len(dest)-2]
	}
	// Scan copies []byte columns into fresh slices, so these can be kept.
	sc.r.Payload, sc.key = nil, nil
	sc.prev, sc.prevAvail = sql.NullInt64{}, Time{}
	if err := rows.Scan(dest...); err != nil {
		return Row{}, err
	}
	r := sc.r
	r.Key = sc.key
	if len(sc.headers) > 0 && string(sc.headers) != "{}" {
		if string(sc.headers) != sc.lastHeaders || sc.lastMap == nil {
			m := map[string]string{}
			if err := json.Unmarshal(sc.headers, &m); err != nil {
				return Row{}, fmt.Errorf("outbox row %d: headers: %w", r.ID, err)
			}
			sc.lastHeaders, sc.lastMap = string(sc.headers), m
		}
		r.Headers = sc.lastMap // shared between rows with the same headers: read-only
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
	r.prev, r.prevAvail = sc.prev.Int64, sc.prevAvail.Time
	return r, nil
}

// ScanRows reads every row of rows — RowColumns, followed, when withPrev,
// by the id and the available_at of the previous pending row of the same
// topic and key — and closes rows. sizeHint is the expected row count.
func ScanRows(rows *sql.Rows, withPrev bool, sizeHint int) ([]Row, error) {
	defer rows.Close()
	out := make([]Row, 0, sizeHint)
	var sc scanner
	for rows.Next() {
		r, err := sc.scan(rows, withPrev)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// Pending is a pending row's id and available_at, as a previous-row probe
// reads it.
type Pending struct {
	ID          int64
	AvailableAt time.Time
}

// SetPrevs sets the previous pending row of each row of topic and key in
// rows (which are in id order) from those rows themselves and the other
// pending rows of the key a probe found (any order): the last pending row
// before a key's first claimed row, and the pending rows between its first
// and last claimed rows.
func SetPrevs(rows []Row, topic string, key []byte, others []Pending) {
	all := make([]Pending, 0, len(others)+8)
	all = append(all, others...)
	idx := make([]int, 0, 8)
	for i := range rows {
		if rows[i].Topic == topic && rows[i].Key != nil && string(rows[i].Key) == string(key) {
			all = append(all, Pending{rows[i].ID, rows[i].AvailableAt})
			idx = append(idx, i)
		}
	}
	slices.SortFunc(all, func(a, b Pending) int { return cmp.Compare(a.ID, b.ID) })
	for _, i := range idx {
		r := &rows[i]
		j, _ := slices.BinarySearchFunc(all, r.ID, func(p Pending, id int64) int { return cmp.Compare(p.ID, id) })
		r.prev, r.prevAvail = 0, time.Time{}
		if j > 0 {
			r.prev, r.prevAvail = all[j-1].ID, all[j-1].AvailableAt
		}
	}
}

// Park is a claimed row the order guard holds back because an earlier row
// of its key waits for a retry: it is made due when that row is, so that
// it does not fill claims in the meantime only to be held back again.
type Park struct {
	ID    int64
	Until time.Time
}

// OrderedPrefix keeps, of rows read with their previous pending row (in id
// order), those whose whole chain of earlier pending rows of the same topic
// and key is in rows: a row is kept when it has no earlier pending row or
// when that row was kept. Rows without a key are always kept.
//
// Of the rows held back, those behind a row that is not due at now (it
// waits for a retry) are returned in park with the time that row is due;
// the others are behind a row another relay holds, and wait for the next
// claim.
func OrderedPrefix(rows []Row, now time.Time) (kept []Row, park []Park) {
	last := make(map[string]int64)
	until := make(map[string]time.Time)
	kept = rows[:0]
	for _, r := range rows {
		if r.Key == nil {
			kept = append(kept, r)
			continue
		}
		k := r.Topic + "\x00" + string(r.Key)
		if r.prev == 0 || r.prev == last[k] {
			last[k] = r.ID
			kept = append(kept, r)
			continue
		}
		u, ok := until[k]
		if !ok && r.prevAvail.After(now) {
			u, ok = r.prevAvail, true
			until[k] = u
		}
		if ok {
			park = append(park, Park{ID: r.ID, Until: u})
		}
	}
	return kept, park
}

// MaxClaimRounds bounds the claims one Claim call runs when every row it
// got was parked.
const MaxClaimRounds = 8

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

// IDList renders ids as a comma-separated list of integers for an IN (...)
// clause (ids are integers, so this is injection-safe and avoids a bind
// variable per id).
func IDList(ids []int64) string {
	var b strings.Builder
	for i, id := range ids {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.FormatInt(id, 10))
	}
	return b.String()
}

// ErrNoIDs is returned by Replay when it is given no ids.
var ErrNoIDs = errors.New("no outbox row ids given")

// QueryFailed implements Admin.FailedRows for both dialects: the rows
// whose last process attempt failed, in id order (SQL both dialects
// accept).
func QueryFailed(ctx context.Context, db *sql.DB, d interface {
	Quote(string) string
	Placeholder(int) string
}, t Table, q DeadQuery) ([]Row, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	rows, err := db.QueryContext(ctx, `SELECT `+RowColumns+` FROM `+t.Qualified(d)+
		` WHERE `+FailedWhere+` AND id > `+d.Placeholder(1)+` AND (`+d.Placeholder(2)+` = '' OR topic = `+d.Placeholder(3)+
		`) ORDER BY id LIMIT `+d.Placeholder(4), q.AfterID, q.Topic, q.Topic, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("failed rows of %s: %w", t, err)
	}
	return ScanRows(rows, false, q.Limit)
}
