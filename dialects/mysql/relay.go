package mysql

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/claim"
	"github.com/go-outbox/outbox/dialects/internal/rowscan"
	"github.com/go-outbox/outbox/dialects/internal/rowsql"
	"github.com/go-outbox/outbox/dialects/internal/sequence"
)

var _ dialects.Relayer = Dialect{}

// ShardLockName is the GET_LOCK name a relay holds for one shard of table
// t in database database (used when t names none). Named locks are
// server-wide, so the name covers the database as well as the table; names
// are limited to 64 characters, so both are hashed. IS_USED_LOCK(name)
// tells which session holds it.
func ShardLockName(database string, t dialects.Table, shard int) string {
	return "gormoutbox:relay:" + tableHash(database, t) + ":" + strconv.Itoa(shard)
}

// tableHash identifies table t of database (its schema when qualified) in
// server-wide lock names.
func tableHash(database string, t dialects.Table) string {
	if t.Schema != "" {
		database = t.Schema
	}
	return strconv.FormatUint(uint64(dialects.HashKey([]byte(database+"."+t.Name))), 16)
}

// currentDatabase returns the session's default database.
func currentDatabase(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}) (string, error) {
	var db sql.NullString
	if err := q.QueryRowContext(ctx, `SELECT DATABASE()`).Scan(&db); err != nil {
		return "", err
	}
	return db.String, nil
}

// Open implements dialects.Relayer. A MySQL pass takes one dedicated
// connection from the pool and, on it, one GET_LOCK per shard it can get
// (starting at a random shard, at most o.ShardLocks.Max): the locks belong to
// that session, so every claim and mark of the pass runs on it, and a relay
// that dies frees its shards when its session ends. Other relays take the
// other shards; a key lives in one shard, so it stays with one relay.
func (d Dialect) Open(ctx context.Context, db *sql.DB, t dialects.Table, o dialects.ClaimOptions) (dialects.Pass, error) {
	if o.Shards <= 0 {
		return nil, fmt.Errorf("relay on %s: shard count %d must be positive", t, o.Shards)
	}
	conn := o.Conn
	if conn == nil {
		var err error
		if conn, err = db.Conn(ctx); err != nil {
			return nil, fmt.Errorf("relay on %s: %w", t, err)
		}
	}
	p := &pass{d: d, db: db, t: t, conn: conn, o: o, pair: &claim.Pair{}}
	var err error
	if p.database, err = currentDatabase(ctx, conn); err != nil {
		return nil, errors.Join(fmt.Errorf("relay on %s: %w", t, err), p.Close())
	}
	limit := o.ShardLocks.Max
	if limit <= 0 || limit > o.Shards {
		limit = o.Shards
	}
	mine := func(s int) bool { return o.ShardMod <= 1 || s%o.ShardMod == o.ShardRem }
	start := rand.IntN(o.Shards)
	for !mine(start) {
		start = (start + 1) % o.Shards
	}
	for i := 0; i < o.Shards && len(p.held) < limit; i++ {
		s := (start + i) % o.Shards
		if !mine(s) {
			continue
		}
		ok, err := p.lock(ctx, s, 0)
		if err != nil {
			return nil, errors.Join(err, p.Close())
		}
		if ok {
			p.held = append(p.held, s)
		}
	}
	if len(p.held) == 0 && o.ShardLocks.Wait > 0 {
		// Every shard is held by another relay: stand by on one of them,
		// so that this relay takes over as soon as its holder dies.
		secs := int((o.ShardLocks.Wait + time.Second - 1) / time.Second)
		ok, err := p.lock(ctx, start, secs)
		if err != nil {
			return nil, errors.Join(err, p.Close())
		}
		if ok {
			p.held = append(p.held, start)
		}
	}
	return p, nil
}

var _ dialects.Forker = (*pass)(nil)

type pass struct {
	d        Dialect
	db       *sql.DB
	t        dialects.Table
	database string
	conn     *sql.Conn
	held     []int
	last     []int // rows per held shard in the last claim; -1: it filled its quota
	claimed  bool
	o        dialects.ClaimOptions
	// attempt is the process attempt of each row of the last claim: the
	// mark is conditional on it (see Finish).
	attempt map[int64]int
	// pair holds the open claims of the pass and of its fork, if any
	// (slot 0 the original, 1 the fork); forked is set on the fork.
	pair   *claim.Pair
	slot   int
	forked bool
}

// Fork implements dialects.Forker: a second pass over the shards this one
// holds, on its own connection (conn, else one from the pool at its first
// claim). The fork takes no shard lock: it claims under the original's,
// and the relay publishes its batch only after the original's batch before
// it was published and marked (so on a live session). There are no row
// locks on MySQL: each pass's claim leaves out the rows of the other's
// open claim, and its order probe counts them as claimed; an open claim
// closes when its Finish has written everything.
func (p *pass) Fork(conn *sql.Conn) dialects.Pass {
	f := &pass{d: p.d, db: p.db, t: p.t, database: p.database, conn: conn, held: p.held, o: p.o,
		pair: p.pair, slot: 1 - p.slot, forked: true}
	f.o.Conn = conn
	return f
}

func (p *pass) lock(ctx context.Context, shard, waitSecs int) (bool, error) {
	var got sql.NullInt64
	if err := p.conn.QueryRowContext(ctx, `SELECT GET_LOCK(?, ?)`, ShardLockName(p.database, p.t, shard), waitSecs).Scan(&got); err != nil {
		return false, fmt.Errorf("relay on %s: lock shard %d: %w", p.t, shard, err)
	}
	return got.Valid && got.Int64 == 1, nil
}

// Shards reports the shards the pass holds (for tests and logs).
func (p *pass) Shards() []int { return append([]int(nil), p.held...) }

func (p *pass) Claim(ctx context.Context, now time.Time, limit int) ([]dialects.Row, error) {
	if len(p.held) == 0 {
		return nil, nil
	}
	if p.conn == nil && p.forked {
		conn, err := p.db.Conn(ctx)
		if err != nil {
			return nil, fmt.Errorf("claim from %s: %w", p.t, err)
		}
		p.conn = conn
	}
	// The sibling's open claim, taken before the statements: a row it
	// finished since is marked (or retried) in what they read.
	sibling := p.pair.Sibling(p.slot)
	skip := ""
	if len(sibling.IDs) > 0 {
		ids := make([]int64, 0, len(sibling.IDs))
		for id := range sibling.IDs {
			ids = append(ids, id)
		}
		skip = ` AND id NOT IN (` + rowsql.IDList(ids) + `)`
	}
	q := p.t.Qualified(p.d)
	// One range of the due index (published_at, dead_at, shard,
	// available_at, id) per shard, read in (available_at, id) order up to
	// now and cut at its quota: rows that are not due are past its end and
	// never read. The union is cut again, in id order. A single
	// "shard IN (...) ORDER BY …" would sort every due row.
	var b strings.Builder
	args := make([]any, 0, len(p.held)+1)
	quota := p.quotas(limit)
	for i, s := range p.held {
		if i > 0 {
			b.WriteString(" UNION ALL ")
		}
		b.WriteString(`(SELECT id FROM ` + q + ` WHERE published_at IS NULL AND dead_at IS NULL AND shard = ` +
			strconv.Itoa(s) + ` AND available_at <= ?` + skip + ` ORDER BY available_at, id LIMIT ` + strconv.Itoa(quota[i]) + `)`)
		args = append(args, now.UTC())
	}
	// The bytes bound (ClaimOptions.MaxBytes) is applied while the rows
	// are read (rowscan.CandidatesWithin): the shards are this pass's
	// alone, so the rows past it simply wait for the next claim. (A window
	// SUM of LENGTH(payload) in the statement made InnoDB read every
	// candidate's blob twice: about a tenth of the relay's throughput.)
	stmt := `SELECT ` + rowscan.ColumnsOf("o") + ` FROM ` + q + ` o JOIN (` + b.String() +
		`) c ON c.id = o.id ORDER BY o.id LIMIT ` + strconv.Itoa(limit)
	var out []dialects.Row
	for round := 0; round < claim.MaxRounds; round++ {
		rows, err := p.conn.QueryContext(ctx, stmt, args...)
		if err != nil {
			return nil, fmt.Errorf("claim from %s: %w", p.t, err)
		}
		all, cut, err := rowscan.CandidatesWithin(rows, false, limit, p.o.MaxBytes)
		if err != nil {
			return nil, fmt.Errorf("claim from %s: %w", p.t, err)
		}
		if err := p.prevs(ctx, all, now, sibling.ByKey); err != nil {
			return nil, fmt.Errorf("claim from %s: order guard: %w", p.t, err)
		}
		if !cut {
			// A claim cut by bytes says nothing of how many rows each
			// shard holds.
			p.learn(all, quota)
		}
		kept, park := claim.Guard(all, now)
		if len(park) > 0 {
			if err := p.park(ctx, park); err != nil {
				return nil, err
			}
		}
		out = kept
		clear(p.attempt)
		if p.attempt == nil {
			p.attempt = make(map[int64]int, len(kept))
		}
		for _, r := range kept {
			p.attempt[r.ID] = r.ProcessAttempts
		}
		if len(kept) > 0 || len(park) == 0 {
			break // rows to publish, or nothing more to learn
		}
	}
	p.claimed = len(out) > 0
	p.pair.Set(p.slot, out)
	return out, nil
}

// quotas splits a claim of limit rows between the held shards. Order needs
// each shard's rows in id order, not the globally oldest rows, so a shard
// is read only as far as its share: reading limit rows from each of 16
// shards to keep 500 was most of the claim's cost. Shards that came back
// short last time get what they had plus room to grow; the rest is split
// between the shards that filled their share.
func (p *pass) quotas(limit int) []int {
	q := make([]int, len(p.held))
	if p.last == nil {
		for i := range q {
			q[i] = (limit + len(q) - 1) / len(q)
		}
		return q
	}
	full, spare := 0, limit
	for i := range q {
		if p.last[i] < 0 { // filled its share: gets a part of what is left
			full++
			continue
		}
		q[i] = p.last[i] + max(8, p.last[i]/2)
		spare -= min(q[i], spare)
	}
	for i := range q {
		if p.last[i] < 0 {
			q[i] = max(8, (spare+full-1)/max(full, 1))
		}
	}
	return q
}

// learn records, per held shard, how many rows the claim got (or -1 when
// the shard filled its quota and may hold more).
func (p *pass) learn(rows []claim.Candidate, quota []int) {
	got := make(map[int]int, len(p.held))
	for i := range rows {
		got[rows[i].Shard]++
	}
	if p.last == nil {
		p.last = make([]int, len(p.held))
	}
	for i, s := range p.held {
		if got[s] >= quota[i] {
			p.last[i] = -1
		} else {
			p.last[i] = got[s]
		}
	}
}

// prevs finds, for each claimed row with a key, the previous pending row of
// its topic and key that matters for order.
//
// The claim reads each shard's due rows in (available_at, id) order, so an
// earlier pending row of a claimed row's key can be missing from the claim
// whether it is due or not (a row released by Replay or captured during a
// backoff can be due before an earlier row of its key). Per key, one index
// range on (topic, msg_key, published_at, dead_at, id, available_at), index
// only, finds the first pending row before its last claimed row that is
// not in the claim: the key's claimed rows before it are kept, the ones
// after it held back (parked until it is due when it is not). The range
// stops there, so it reads the key's claimed rows and one more. (A
// correlated "MAX(id) … id < o.id" per row, the obvious SQL, made MariaDB
// read every pending row of the key for each claimed row: 90% of the
// claim's time on a 100k-row backlog.)
//
// sibling holds, per topic and key, the rows of the fork's (or the
// original's) open claim: they count as claimed.
func (p *pass) prevs(ctx context.Context, rows []claim.Candidate, now time.Time, sibling map[string][]int64) error {
	type span struct {
		topic   string
		key     []byte
		max     int64
		ids     []int64
		pending []claim.Pending
	}
	spans := map[string]*span{}
	var order []*span
	for i := range rows {
		r := &rows[i]
		if r.Key == nil {
			continue
		}
		k := r.Topic + "\x00" + string(r.Key)
		sp, ok := spans[k]
		if !ok {
			sp = &span{topic: r.Topic, key: r.Key}
			sp.ids = append(sp.ids, sibling[k]...)
			spans[k] = sp
			order = append(order, sp)
		}
		sp.max = r.ID // rows come in id order
		sp.ids = append(sp.ids, r.ID)
	}
	if len(order) == 0 {
		return nil
	}
	q := p.t.Qualified(p.d)
	var b strings.Builder
	args := make([]any, 0, len(order)*6)
	for i, sp := range order {
		if i > 0 {
			b.WriteString(" UNION ALL ")
		}
		n := strconv.Itoa(i)
		b.WriteString(`(SELECT ` + n + ` AS k, id, available_at, 0 AS dead FROM ` + q +
			` WHERE topic = ? AND msg_key = ? AND published_at IS NULL AND dead_at IS NULL AND id < ? AND id NOT IN (` +
			rowsql.IDList(sp.ids) + `) ORDER BY id LIMIT 1)`)
		args = append(args, sp.topic, sp.key, sp.max)
		if !p.o.SkipDeadKeys {
			// The first dead row of the key before its last claimed row
			// (same index, dead_at range): it blocks the rows after it.
			b.WriteString(` UNION ALL (SELECT ` + n + ` AS k, id, available_at, 1 AS dead FROM ` + q +
				` WHERE topic = ? AND msg_key = ? AND published_at IS NULL AND dead_at IS NOT NULL AND id < ? ORDER BY id LIMIT 1)`)
			args = append(args, sp.topic, sp.key, sp.max)
		}
	}
	blocked := now.Add(claim.BlockedRecheck(p.o))
	res, err := p.conn.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return err
	}
	defer res.Close()
	for res.Next() {
		var (
			k    int
			pd   claim.Pending
			av   rowscan.Time
			dead int
		)
		if err := res.Scan(&k, &pd.ID, &av, &dead); err != nil {
			return err
		}
		pd.AvailableAt = av.Time
		if dead == 1 {
			// A dead row stands as a previous row due at the recheck: the
			// rows after it are held back and parked until then.
			pd.AvailableAt = blocked
		}
		if k < 0 || k >= len(order) {
			return fmt.Errorf("probe returned key index %d of %d", k, len(order))
		}
		order[k].pending = append(order[k].pending, pd)
	}
	if err := res.Err(); err != nil {
		return err
	}
	for _, sp := range order {
		claim.SetPrevs(rows, sp.topic, sp.key, sp.pending)
	}
	return nil
}

// park makes held-back rows due when the row they wait for is.
func (p *pass) park(ctx context.Context, park []claim.Park) error {
	if err := parkRows(ctx, p.conn, p.t.Qualified(p.d), park); err != nil {
		return fmt.Errorf("claim from %s: park held-back rows: %w", p.t, err)
	}
	return nil
}

func (p *pass) Finish(ctx context.Context, o dialects.Outcome) error {
	if !p.claimed {
		return errors.New("mysql relay: Finish without a claim")
	}
	p.claimed = false
	// Closed once written (or failed): until then the sibling's claims
	// must not read these rows as pending.
	defer p.pair.Set(p.slot, nil)
	q := p.t.Qualified(p.d)
	// The mark is conditional on the process attempt claimed: a consumer's
	// FAILED answer may have put a row back to pending for its next
	// attempt (Acknowledge) between the write to Kafka and this mark —
	// there is no row lock between them on MySQL — and that re-send must
	// not be marked as done. Nearly every batch has one attempt value.
	groups := map[int][]int64{}
	var order []int
	for _, id := range o.Published {
		a := p.attempt[id]
		if _, ok := groups[a]; !ok {
			order = append(order, a)
		}
		groups[a] = append(groups[a], id)
	}
	for _, a := range order {
		for ids := groups[a]; len(ids) > 0; {
			n := min(len(ids), 5000)
			stmt := `UPDATE ` + q + ` SET published_at = ? WHERE id IN (` + rowsql.IDList(ids[:n]) + `) AND process_attempts = ?`
			if o.Delete {
				// Rows waiting for an acknowledgement are kept (marked).
				if err := execRetry(ctx, p.conn, `DELETE FROM `+q+` WHERE id IN (`+rowsql.IDList(ids[:n])+`) AND ack_topic IS NULL`); err != nil {
					return fmt.Errorf("delete published rows of %s: %w", p.t, err)
				}
				stmt += ` AND ack_topic IS NOT NULL`
			}
			if err := execRetry(ctx, p.conn, stmt, o.Now.UTC(), a); err != nil {
				return fmt.Errorf("mark published on %s: %w", p.t, err)
			}
			ids = ids[n:]
		}
	}
	if len(o.Retries) == 0 {
		return nil
	}
	return retry(ctx, p.d, p.conn, p.t, o)
}

// retry records failed rows in one UPDATE by primary key, each column set
// by a CASE on the id (attempts, last_error, and available_at or dead_at),
// then pushes back the later rows of each failed key.
func retry(ctx context.Context, d Dialect, conn *sql.Conn, t dialects.Table, o dialects.Outcome) error {
	q := t.Qualified(d)
	ids := make([]int64, len(o.Retries))
	var attempts, avail, errs, dead caseBuilder
	for i, r := range o.Retries {
		ids[i] = r.ID
		attempts.when(r.ID, r.Attempts)
		errs.when(r.ID, r.Error)
		if r.Dead {
			dead.when(r.ID, o.Now.UTC())
		} else {
			avail.when(r.ID, r.AvailableAt.UTC())
		}
	}
	list := rowsql.IDList(ids)
	set := []string{"attempts = " + attempts.sql("attempts"), "last_error = " + errs.sql("last_error")}
	args := append(attempts.args, errs.args...)
	if len(avail.args) > 0 {
		set = append(set, "available_at = "+avail.sql("available_at"))
		args = append(args, avail.args...)
	}
	if len(dead.args) > 0 {
		set = append(set, "dead_at = "+dead.sql("dead_at"))
		args = append(args, dead.args...)
	}
	if err := execRetry(ctx, conn, `UPDATE `+q+` SET `+strings.Join(set, ", ")+` WHERE id IN (`+list+`)`, args...); err != nil {
		return fmt.Errorf("record failed publications on %s: %w", t, err)
	}
	// Push back the later pending rows of each failed key, found by a
	// plain read and updated by primary key: a range UPDATE on the key
	// index would take gap locks that collide with other workers and with
	// new outbox rows.
	var push []claim.Park
	for i, r := range o.Retries {
		if r.Dead || i >= len(o.Keys) || o.Keys[i].Key == nil {
			continue
		}
		rows, err := conn.QueryContext(ctx, `SELECT id FROM `+q+`
WHERE topic = ? AND msg_key = ? AND published_at IS NULL AND dead_at IS NULL
  AND id > ? AND available_at < ? AND id NOT IN (`+list+`)`,
			o.Keys[i].Topic, o.Keys[i].Key, r.ID, r.AvailableAt.UTC())
		if err != nil {
			return fmt.Errorf("hold back key of row %d on %s: %w", r.ID, t, err)
		}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return err
			}
			push = append(push, claim.Park{ID: id, Until: r.AvailableAt})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
	}
	if len(push) > 0 {
		if err := parkRows(ctx, conn, q, push); err != nil {
			return fmt.Errorf("hold back keys on %s: %w", t, err)
		}
	}
	return nil
}

// parkRows sets available_at of rows by primary key, never earlier than
// it is.
func parkRows(ctx context.Context, conn *sql.Conn, q string, park []claim.Park) error {
	ids := make([]int64, len(park))
	var until caseBuilder
	for i, pk := range park {
		ids[i] = pk.ID
		until.when(pk.ID, pk.Until.UTC())
	}
	return execRetry(ctx, conn, `UPDATE `+q+` SET available_at = GREATEST(available_at, `+until.sql("available_at")+
		`) WHERE id IN (`+rowsql.IDList(ids)+`)`, until.args...)
}

// caseBuilder builds "CASE id WHEN ? THEN ? … ELSE col END".
type caseBuilder struct {
	b    strings.Builder
	args []any
}

func (c *caseBuilder) when(id int64, v any) {
	c.b.WriteString(" WHEN ")
	c.b.WriteString(strconv.FormatInt(id, 10))
	c.b.WriteString(" THEN ?")
	c.args = append(c.args, v)
}

func (c *caseBuilder) sql(col string) string {
	return "CASE id" + c.b.String() + " ELSE " + col + " END"
}

// execRetry runs a statement, again when InnoDB picked it as a deadlock
// victim (1213) or it timed out on a lock (1205): relay statements set
// absolute values by primary key, so running one again is safe.
func execRetry(ctx context.Context, conn *sql.Conn, stmt string, args ...any) error {
	var err error
	for attempt := 0; attempt < 4; attempt++ {
		if _, err = conn.ExecContext(ctx, stmt, args...); err == nil {
			return nil
		}
		if !isErrorNumber(err, 1213, 1205) { // deadlock, lock wait timeout
			return err
		}
		time.Sleep(time.Duration(attempt+1) * 10 * time.Millisecond)
	}
	return err
}

// Close releases the shard locks and returns the connection to the pool;
// a connection whose locks could not be released is discarded instead, so
// that no pooled session keeps a shard.
func (p *pass) Close() error {
	if p.conn == nil {
		return nil
	}
	conn := p.conn
	p.conn = nil
	p.claimed = false
	p.pair.Set(p.slot, nil)
	var err error
	if len(p.held) > 0 && !p.forked { // a fork holds no lock
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err = conn.ExecContext(ctx, `DO RELEASE_ALL_LOCKS()`)
		if err != nil {
			_ = conn.Raw(func(any) error { return driver.ErrBadConn })
			err = fmt.Errorf("relay on %s: release shard locks: %w", p.t, err)
		}
	}
	p.held = nil
	if conn == p.o.Conn {
		return err // the caller's: left open (marked bad when the locks were not released)
	}
	return errors.Join(err, conn.Close())
}

// Replay implements dialects.Relayer.
func (d Dialect) Replay(ctx context.Context, db *sql.DB, t dialects.Table, now time.Time, ids []int64) (int64, error) {
	if len(ids) == 0 {
		return 0, dialects.ErrNoIDs
	}
	q := t.Qualified(d)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("replay on %s: %w", t, err)
	}
	defer func() { _ = tx.Rollback() }()
	// The later pending rows of the replayed rows' keys, blocked behind
	// them (parked), are made due too: they follow the replayed rows, in
	// order (the guard holds them behind).
	if _, err := tx.ExecContext(ctx, `UPDATE `+q+` o JOIN (
	SELECT topic, msg_key, MIN(id) AS id FROM `+q+`
	WHERE dead_at IS NOT NULL AND msg_key IS NOT NULL AND id IN (`+rowsql.IDList(ids)+`)
	GROUP BY topic, msg_key) k ON o.topic = k.topic AND o.msg_key = k.msg_key
SET o.available_at = ?
WHERE o.id > k.id AND o.published_at IS NULL AND o.dead_at IS NULL AND o.available_at > ?`, now.UTC(), now.UTC()); err != nil {
		return 0, fmt.Errorf("replay on %s: release the blocked rows: %w", t, err)
	}
	res, err := tx.ExecContext(ctx, `UPDATE `+q+
		` SET dead_at = NULL, attempts = 0, available_at = ? WHERE dead_at IS NOT NULL AND id IN (`+rowsql.IDList(ids)+`)`,
		now.UTC())
	if err != nil {
		return 0, fmt.Errorf("replay on %s: %w", t, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("replay on %s: %w", t, err)
	}
	if n > 0 {
		if err := sequence.Renumber(ctx, tx, d, t, ids); err != nil {
			return 0, fmt.Errorf("replay on %s: %w", t, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("replay on %s: commit: %w", t, err)
	}
	return n, nil
}

// DeadLetters implements dialects.Relayer.
func (d Dialect) DeadLetters(ctx context.Context, db *sql.DB, t dialects.Table, q dialects.DeadQuery) ([]dialects.Row, error) {
	if q.Limit <= 0 {
		q.Limit = 100
	}
	rows, err := db.QueryContext(ctx, `SELECT `+rowscan.Columns+` FROM `+t.Qualified(d)+
		` WHERE dead_at IS NOT NULL AND id > ? AND (? = '' OR topic = ?) ORDER BY id LIMIT ?`,
		q.AfterID, q.Topic, q.Topic, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("dead letters of %s: %w", t, err)
	}
	return rowscan.Rows(rows, q.Limit)
}

// Cleanup implements dialects.Relayer. It runs at READ COMMITTED so that
// the range delete takes no gap locks that could block new outbox rows.
func (d Dialect) Cleanup(ctx context.Context, db *sql.DB, t dialects.Table, before time.Time, limit int) (n int64, err error) {
	tx, err := db.BeginTx(ctx, &sql.TxOptions{Isolation: sql.LevelReadCommitted})
	if err != nil {
		return 0, fmt.Errorf("cleanup of %s: %w", t, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	res, err := tx.ExecContext(ctx, `DELETE FROM `+t.Qualified(d)+
		` WHERE published_at IS NOT NULL AND published_at < ? AND (ack_topic IS NULL OR processed_at IS NOT NULL) ORDER BY published_at LIMIT `+strconv.Itoa(limit), before.UTC())
	if err != nil {
		return 0, fmt.Errorf("cleanup of %s: %w", t, err)
	}
	if n, err = res.RowsAffected(); err != nil {
		return 0, err
	}
	if err = tx.Commit(); err != nil {
		return 0, fmt.Errorf("cleanup of %s: commit: %w", t, err)
	}
	return n, nil
}

// Stats implements dialects.Relayer.
func (d Dialect) Stats(ctx context.Context, db *sql.DB, t dialects.Table) (dialects.Stats, error) {
	return rowsql.Stats(ctx, db, d, t)
}

// ProcessAttemptHeaders returns SQL for the headers column with its
// "process-attempt" header set to the text of the integer SQL expression
// expr (the shared acknowledge and resend statements use it).
func (Dialect) ProcessAttemptHeaders(expr string) string {
	return `JSON_SET(headers, '$."process-attempt"', CAST(` + expr + ` AS CHAR))`
}
