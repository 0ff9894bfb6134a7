package postgres

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/internal/claim"
	"github.com/go-outbox/outbox/dialects/internal/rowscan"
	"github.com/go-outbox/outbox/dialects/internal/rowsql"
	"github.com/go-outbox/outbox/dialects/internal/sequence"
)

var _ dialects.Relayer = Dialect{}

// Open implements dialects.Relayer. A PostgreSQL pass holds no connection
// between batches: each claim is a transaction that locks its rows with
// FOR UPDATE SKIP LOCKED and ends in Finish (commit) or Close (rollback).
// If the relay dies, its transaction is rolled back by the server and the
// rows are free again; nothing was marked, so they are published again.
// Relays share rows, not shards: o.ShardLocks is ignored (its
// Capabilities have no LocksShards).
func (d Dialect) Open(_ context.Context, db *sql.DB, t dialects.Table, o dialects.ClaimOptions) (dialects.Pass, error) {
	p := &pass{d: d, db: db, t: t, o: o, claimStmt: claimSQL(d, t, o), pair: &claim.Pair{}}
	p.on = p.beginOn(o.Conn)
	return p, nil
}

var _ dialects.Forker = (*pass)(nil)

type pass struct {
	d         Dialect
	db        *sql.DB
	on        beginner // o.Conn, or db
	t         dialects.Table
	tx        *sql.Tx
	o         dialects.ClaimOptions
	claimStmt string // claimSQL of the pass's options, built once
	// pair holds the open claims of the pass and of its fork, if any
	// (slot 0 the original, 1 the fork).
	pair *claim.Pair
	slot int
}

// Fork implements dialects.Forker: a second pass with its own transaction
// over the same table and options. The two passes' claims skip each
// other's locked rows (SKIP LOCKED) and take a row whose previous pending
// row is in the other's open claim as in order.
func (p *pass) Fork(conn *sql.Conn) dialects.Pass {
	f := &pass{d: p.d, db: p.db, t: p.t, o: p.o, claimStmt: p.claimStmt, pair: p.pair, slot: 1 - p.slot}
	f.o.Conn = conn
	f.on = f.beginOn(conn)
	return f
}

// beginner is what a pass begins its claims on.
type beginner interface {
	BeginTx(context.Context, *sql.TxOptions) (*sql.Tx, error)
}

// beginOn returns what the pass begins its claims on: conn, or the pass's
// pool when conn is nil.
func (p *pass) beginOn(conn *sql.Conn) beginner {
	if conn != nil {
		return conn
	}
	return p.db
}

// claimSQL locks the first due pending rows in (available_at, id) order
// (the due index: rows not due are past the end of the range it reads and
// are never scanned), skipping rows other relays hold, and reads for each
// the id and available_at of the previous pending row of its topic and
// key, from which claim.Guard drops the rows whose earlier rows are held
// elsewhere or not due. The rows it drops stay locked until the claim ends.
//
// The previous pending row of a key's first claimed row is found by a
// backward probe of the pending-key index (LIMIT 1, a LATERAL subquery: as
// a join on a correlated MAX, the planner chose a hash join over the whole
// table on small tables). For the key's later claimed rows it is the
// claimed row before, unless the claim skipped a pending row of the key
// between its first and last claimed id (one held by another relay, or not
// due): a count of the key's pending rows in that range (g, one range of
// the pending-key index per key, stopped one row past the claimed count;
// its ORDER BY keeps the planner on that index — on a table not analysed
// since a big insert it chose the primary key's id range, which held every
// other key's rows too) tells, and only then are all the key's rows
// probed. The probe is gated by a one-time filter, so that a claim of 500
// rows of 100 keys runs 100 probes, not 500 (the probes were most of the
// claim's time: 6–7 ms per 500 rows at 100k pending, against 1 ms for the
// locking scan).
//
// Unless o.SkipDeadKeys, a second probe (of the dead-key index, small)
// finds the nearest earlier dead row of the key: when it is nearer than
// the previous pending row it stands as the previous row, with $3 (now
// plus BlockedRecheck) as its available_at, so that the guard holds the
// row back and parks it until then. A row behind a pending row that is
// itself behind a dead row is held back through that row.
//
// o.ShardMod restricts the claim to the pass's shards; o.MaxBytes keeps
// the locked rows' id-order prefix whose running sum of payload lengths
// stays within the bound, and always the first row (octet_length reads a
// TOASTed payload's length from its pointer, not the payload; the rows cut
// off stay locked, untouched, until the claim ends).
func claimSQL(d Dialect, t dialects.Table, o dialects.ClaimOptions) string {
	q := t.Qualified(d)
	var shardFilter, bytesCut, bytesWhere string
	if o.ShardMod > 1 {
		shardFilter = ` AND shard % ` + strconv.Itoa(o.ShardMod) + ` <> ALL('{` + otherRemainders(o) + `}'::int[])`
	}
	if o.MaxBytes > 0 {
		bytesCut = `,
cut AS (
	SELECT id FROM (
		SELECT id, coalesce(octet_length(payload), 0) AS n,
			sum(coalesce(octet_length(payload), 0)) OVER (ORDER BY id ROWS UNBOUNDED PRECEDING) AS run
		FROM c) w
	WHERE run <= ` + strconv.FormatInt(o.MaxBytes, 10) + ` OR run = n
)`
		bytesWhere = `
WHERE k.id IN (SELECT id FROM cut)`
	}
	pid := `CASE WHEN k.lid IS NOT NULL AND NOT g.gap THEN k.lid ELSE pv.id END`
	pav := `CASE WHEN k.lid IS NOT NULL AND NOT g.gap THEN k.lav ELSE pv.available_at END`
	// (g.gap is NULL for rows without a key: they are neither probed nor
	// given a previous row, and need none.)
	prev, dead := pid+`, `+pav, ``
	if !o.SkipDeadKeys {
		prev = `CASE WHEN dv.id > COALESCE(` + pid + `, 0) THEN dv.id ELSE ` + pid + ` END,
	CASE WHEN dv.id > COALESCE(` + pid + `, 0) THEN $3 ELSE ` + pav + ` END`
		// Probed only when the table has a dead row at all (one look at
		// the dead index — its order, so that the planner keeps to it on
		// a table not analysed —, a one-time filter): 500 probes of an
		// empty index were a tenth of the claim.
		dead = ` LEFT JOIN LATERAL (
	SELECT d.id FROM ` + q + ` d
	WHERE (SELECT EXISTS (SELECT 1 FROM ` + q + ` x WHERE x.dead_at IS NOT NULL ORDER BY x.dead_at, x.id LIMIT 1))
	  AND d.topic = k.topic AND d.msg_key = k.msg_key AND d.id < k.id AND d.dead_at IS NOT NULL
	ORDER BY d.id DESC LIMIT 1
) dv ON true`
	}
	return `WITH c AS MATERIALIZED (
	SELECT ` + rowscan.Columns + ` FROM ` + q + `
	WHERE published_at IS NULL AND dead_at IS NULL AND available_at <= $1` + shardFilter + `
	ORDER BY available_at, id LIMIT $2
	FOR UPDATE SKIP LOCKED
)` + bytesCut + `,
g AS MATERIALIZED (
	SELECT r.topic, r.msg_key, r.n < (
		SELECT count(*) FROM (
			SELECT 1 FROM ` + q + ` p
			WHERE p.topic = r.topic AND p.msg_key = r.msg_key AND p.id BETWEEN r.lo AND r.hi
			  AND p.published_at IS NULL AND p.dead_at IS NULL
			ORDER BY p.topic, p.msg_key, p.id LIMIT r.n + 1) x) AS gap
	FROM (SELECT topic, msg_key, min(id) AS lo, max(id) AS hi, count(*) AS n
		FROM c WHERE msg_key IS NOT NULL GROUP BY topic, msg_key) r
),
k AS (
	SELECT c.*, lag(c.id) OVER w AS lid, lag(c.available_at) OVER w AS lav
	FROM c WINDOW w AS (PARTITION BY c.topic, c.msg_key ORDER BY c.id)
)
SELECT ` + rowscan.ColumnsOf("k") + `, ` + prev + `
FROM k LEFT JOIN g ON g.topic = k.topic AND g.msg_key = k.msg_key LEFT JOIN LATERAL (
	SELECT p.id, p.available_at FROM ` + q + ` p
	WHERE (k.lid IS NULL OR g.gap)
	  AND p.topic = k.topic AND p.msg_key = k.msg_key AND p.id < k.id
	  AND p.published_at IS NULL AND p.dead_at IS NULL
	ORDER BY p.id DESC LIMIT 1
) pv ON true` + dead + bytesWhere + `
ORDER BY k.id`
}

// otherRemainders lists, comma-separated, the remainders modulo
// o.ShardMod other than o.ShardRem. The claim's shard filter is written as
// "shard % m <> ALL(others)" rather than "shard % m = rem": the planner
// knows nothing of the expression and estimates an equality at 0.5 % of
// the rows, so with two workers it chose a sequential scan and a sort of
// every pending row over the due index's order (20 ms instead of
// 6 ms per 500-row claim at 100k pending rows); an inequality it estimates
// at 99.5 %, and it walks the index.
func otherRemainders(o dialects.ClaimOptions) string {
	var b []byte
	for r := 0; r < o.ShardMod; r++ {
		if r == o.ShardRem {
			continue
		}
		if len(b) > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, int64(r), 10)
	}
	return string(b)
}

func (p *pass) Claim(ctx context.Context, now time.Time, limit int) ([]dialects.Row, error) {
	if p.tx != nil {
		return nil, errors.New("postgres relay: Claim before the previous claim was finished")
	}
	// database/sql rolls a transaction back when the context given to
	// BeginTx is done; a claim must outlive a cancelled pass so that the
	// batch in flight can still be marked. The statements honour ctx.
	tx, err := p.on.BeginTx(context.WithoutCancel(ctx), nil)
	if err != nil {
		return nil, fmt.Errorf("claim from %s: %w", p.t, err)
	}
	fail := func(err error) ([]dialects.Row, error) {
		_ = tx.Rollback()
		return nil, fmt.Errorf("claim from %s: %w", p.t, err)
	}
	if p.o.TxTimeout > 0 {
		// The transaction holds its rows while the batch is published:
		// the server ends it if the relay hangs (both settings are this
		// transaction's only).
		ms := strconv.FormatInt(max(p.o.TxTimeout.Milliseconds(), 1), 10)
		if _, err := tx.ExecContext(ctx, `SELECT set_config('idle_in_transaction_session_timeout', $1, true),
	set_config('statement_timeout', $1, true)`, ms); err != nil {
			return fail(err)
		}
	}
	var (
		out    []dialects.Row
		parked bool
	)
	// Taken before the claim's snapshot: a sibling row finished meanwhile
	// is no longer pending in it, so no row can lean on a stale set.
	sibling := p.pair.Sibling(p.slot).IDs
	for round := 0; round < claim.MaxRounds; round++ {
		args := []any{now.UTC(), limit}
		if !p.o.SkipDeadKeys {
			args = append(args, now.Add(claim.BlockedRecheck(p.o)).UTC())
		}
		rows, err := tx.QueryContext(ctx, p.claimStmt, args...)
		if err != nil {
			return fail(err)
		}
		all, err := rowscan.Candidates(rows, true, limit)
		if err != nil {
			return fail(err)
		}
		for i := range all {
			if sibling[all[i].Prev] {
				// In order: the previous row is in the sibling's batch,
				// published before this one.
				all[i].Prev = 0
			}
		}
		kept, park := claim.Guard(all, now)
		if len(park) > 0 {
			parked = true
			ids := make([]int64, len(park))
			until := make([]time.Time, len(park))
			for i, pk := range park {
				ids[i], until[i] = pk.ID, pk.Until.UTC()
			}
			if _, err := tx.ExecContext(ctx, `UPDATE `+p.t.Qualified(p.d)+` o SET available_at = GREATEST(o.available_at, u.until)
FROM unnest($1::bigint[], $2::timestamptz[]) AS u(id, until) WHERE o.id = u.id`, ids, until); err != nil {
				return fail(err)
			}
		}
		out = kept
		if len(kept) > 0 || len(park) == 0 {
			break // rows to publish, or nothing more to learn
		}
	}
	if len(out) == 0 {
		// Nothing to publish: release the locks at once (keeping what was
		// parked).
		if parked {
			return nil, tx.Commit()
		}
		return nil, tx.Rollback()
	}
	p.tx = tx
	p.pair.Set(p.slot, out)
	return out, nil
}

func (p *pass) Finish(ctx context.Context, o dialects.Outcome) error {
	tx := p.tx
	if tx == nil {
		return errors.New("postgres relay: Finish without a claim")
	}
	p.tx = nil
	p.pair.Set(p.slot, nil)
	if err := finish(ctx, p.d, tx, p.t, o); err != nil {
		_ = tx.Rollback()
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("finish claim on %s: commit: %w", p.t, err)
	}
	return nil
}

// finish writes an outcome in one statement: the published rows and the
// retries are disjoint, so one data-modifying CTE per kind runs them
// together in a single round trip.
//
// The push-back of a failed key's later rows takes them FOR UPDATE SKIP
// LOCKED: it never waits on a row another relay holds (such a row is in
// that relay's claim, whose own guard holds it back). Waiting there
// deadlocked two relays pushing back each other's rows during outages.
//
// The statement also turns synchronous_commit off for the commit that
// follows (this transaction only): the commit then does not wait for the
// WAL flush. A server crash in the next few hundred milliseconds can lose
// the marking — never a message: the rows are published again
// (at-least-once), as after a relay crash. It saves the flush wait
// (about 1.3 ms of a 500-row batch here).
func finish(ctx context.Context, d Dialect, tx *sql.Tx, t dialects.Table, o dialects.Outcome) error {
	q := t.Qualified(d)
	var (
		ids        = make([]int64, len(o.Retries))
		attempts   = make([]int32, len(o.Retries))
		avail      = make([]time.Time, len(o.Retries))
		errs       = make([]string, len(o.Retries))
		dead       = make([]bool, len(o.Retries))
		pushTopics []string
		pushKeys   [][]byte
		pushFrom   []int64
		pushUntil  []time.Time
	)
	for i, r := range o.Retries {
		ids[i], attempts[i], avail[i], errs[i], dead[i] = r.ID, int32(r.Attempts), r.AvailableAt.UTC(), r.Error, r.Dead
		if !r.Dead && i < len(o.Keys) && o.Keys[i].Key != nil {
			pushTopics = append(pushTopics, o.Keys[i].Topic)
			pushKeys = append(pushKeys, o.Keys[i].Key)
			pushFrom = append(pushFrom, r.ID)
			pushUntil = append(pushUntil, r.AvailableAt.UTC())
		}
	}
	pub := `UPDATE ` + q + ` SET published_at = $1 WHERE id = ANY($2)`
	if o.Delete {
		// Rows waiting for an acknowledgement are kept (marked).
		pub = `DELETE FROM ` + q + ` WHERE id = ANY($2) AND ack_topic IS NULL),
pub_ack AS (UPDATE ` + q + ` SET published_at = $1 WHERE id = ANY($2) AND ack_topic IS NOT NULL`
	}
	stmt := `WITH pub AS (` + pub + `),
retry AS (
	UPDATE ` + q + ` o SET attempts = u.attempts, last_error = u.err,
		available_at = CASE WHEN u.dead THEN o.available_at ELSE u.avail END,
		dead_at = CASE WHEN u.dead THEN $1 END
	FROM unnest($3::bigint[], $4::int[], $5::timestamptz[], $6::text[], $7::bool[]) AS u(id, attempts, avail, err, dead)
	WHERE o.id = u.id
),
push AS (
	UPDATE ` + q + ` o SET available_at = s.until
	FROM (
		SELECT p.id, u.until
		FROM ` + q + ` p JOIN unnest($8::text[], $9::bytea[], $10::bigint[], $11::timestamptz[]) AS u(topic, key, from_id, until)
		  ON p.topic = u.topic AND p.msg_key = u.key AND p.id > u.from_id
		WHERE p.published_at IS NULL AND p.dead_at IS NULL AND p.available_at < u.until
		  AND p.id <> ALL($2) AND p.id <> ALL($3)
		FOR UPDATE OF p SKIP LOCKED
	) s
	WHERE o.id = s.id
)
SELECT set_config('synchronous_commit', 'off', true)`
	if len(pushTopics) == 0 {
		pushTopics, pushKeys, pushFrom, pushUntil = []string{}, [][]byte{}, []int64{}, []time.Time{}
	}
	published := o.Published
	if published == nil {
		published = []int64{} // NULL would make "<> ALL($2)" NULL
	}
	if _, err := tx.ExecContext(ctx, stmt, o.Now.UTC(), published, ids, attempts, avail, errs, dead,
		pushTopics, pushKeys, pushFrom, pushUntil); err != nil {
		return fmt.Errorf("finish claim on %s: %w", t, err)
	}
	return nil
}

func (p *pass) Close() error {
	if p.tx == nil {
		return nil
	}
	tx := p.tx
	p.tx = nil
	p.pair.Set(p.slot, nil)
	return tx.Rollback()
}

// Replay implements dialects.Relayer.
func (d Dialect) Replay(ctx context.Context, db *sql.DB, t dialects.Table, now time.Time, ids []int64) (int64, error) {
	if len(ids) == 0 {
		return 0, dialects.ErrNoIDs
	}
	// The later pending rows of the replayed rows' keys, blocked behind
	// them (parked), are made due too: they follow the replayed rows, in
	// order (the guard holds them behind).
	q := t.Qualified(d)
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("replay on %s: %w", t, err)
	}
	defer func() { _ = tx.Rollback() }()
	var n int64
	err = tx.QueryRowContext(ctx, `WITH r AS (
	UPDATE `+q+` SET dead_at = NULL, attempts = 0, available_at = $1
	WHERE id = ANY($2) AND dead_at IS NOT NULL
	RETURNING id, topic, msg_key
),
rel AS (
	UPDATE `+q+` o SET available_at = $1
	FROM (SELECT topic, msg_key, min(id) AS id FROM r WHERE msg_key IS NOT NULL GROUP BY topic, msg_key) k
	WHERE o.topic = k.topic AND o.msg_key = k.msg_key AND o.id > k.id
	  AND o.published_at IS NULL AND o.dead_at IS NULL AND o.available_at > $1
)
SELECT count(*) FROM r`, now.UTC(), ids).Scan(&n)
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
		` WHERE dead_at IS NOT NULL AND id > $1 AND ($2 = '' OR topic = $2) ORDER BY id LIMIT $3`,
		q.AfterID, q.Topic, q.Limit)
	if err != nil {
		return nil, fmt.Errorf("dead letters of %s: %w", t, err)
	}
	return rowscan.Rows(rows, q.Limit)
}

// Cleanup implements dialects.Relayer. The rows to delete are picked
// through the published_at index and locked SKIP LOCKED, so a cleanup never
// waits on (or blocks) a relay.
func (d Dialect) Cleanup(ctx context.Context, db *sql.DB, t dialects.Table, before time.Time, limit int) (int64, error) {
	q := t.Qualified(d)
	res, err := db.ExecContext(ctx, `DELETE FROM `+q+` WHERE id IN (
	SELECT id FROM `+q+` WHERE published_at IS NOT NULL AND published_at < $1
		AND (ack_topic IS NULL OR processed_at IS NOT NULL)
	ORDER BY published_at LIMIT $2 FOR UPDATE SKIP LOCKED)`, before.UTC(), limit)
	if err != nil {
		return 0, fmt.Errorf("cleanup of %s: %w", t, err)
	}
	return res.RowsAffected()
}

// Stats implements dialects.Relayer.
func (d Dialect) Stats(ctx context.Context, db *sql.DB, t dialects.Table) (dialects.Stats, error) {
	return rowsql.Stats(ctx, db, d, t)
}

// ProcessAttemptHeaders returns SQL for the headers column with its
// "process-attempt" header set to the text of the integer SQL expression
// expr (the shared acknowledge and resend statements use it).
func (Dialect) ProcessAttemptHeaders(expr string) string {
	return `headers || jsonb_build_object('process-attempt', (` + expr + `)::text)`
}
