package integration

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/pick"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
)

// Delayed and parked rows; the backlog (docs/benchmarks.md, "Delayed and
// parked rows; the backlog (5 of 5)").
const (
	bbDelayed     = 100_000   // rows not due, ahead of the due rows, in BenchmarkClaimDelayedAhead
	bbSmall       = 100_000   // pending rows of the small table of BenchmarkRelayBacklog
	bbLarge       = 1_000_000 // and of the large one
	bbRounds      = 6         // timed drains per table in BenchmarkRelayBacklog
	bbDrainBudget = 2 * time.Second
)

// BenchmarkClaimDelayedAhead times one claimed batch (Claim of 500, then
// the claim released unfinished, as BenchmarkClaimCost does) on two outbox
// tables with the same rbPending due rows: one has nothing else, the other
// has bbDelayed rows delayed by an hour (Event.NotBefore; other keys),
// written before the due rows (lower ids). Claims alternate between the
// tables. Reported: the median ns per claim of each and their ratio
// (delayed ÷ none); a claim that scanned the delayed rows would read 200
// times more index entries.
func BenchmarkClaimDelayedAhead(b *testing.B) {
	for _, d := range testenv.Dialects() {
		b.Run(d.Name, func(b *testing.B) {
			ctx := context.Background()
			db := d.Open(b, nil)
			sqlDB, err := db.DB()
			if err != nil {
				b.Fatal(err)
			}
			dl, err := pick.For(db.Dialector.Name(), sqlDB)
			if err != nil {
				b.Fatal(err)
			}
			cases := [2]*claimTable{
				{label: "none", t: dialects.Table{Name: "outbox_due_only"}},
				{label: "100k delayed", t: dialects.Table{Name: "outbox_delayed"}},
			}
			delayed := [2]int{0, bbDelayed}
			opts := dialects.ClaimOptions{Shards: rbShards}
			for i, c := range cases {
				start := time.Now()
				if err := dl.Migrate(ctx, sqlDB, c.t); err != nil {
					b.Fatal(err)
				}
				now := time.Now().UTC()
				if delayed[i] > 0 {
					recs := rbRecords(delayed[i], "delayed-bench", now)
					for j := range recs {
						recs[j].AvailableAt = now.Add(time.Hour)
					}
					rbInsert(b, dl, sqlDB, c.t, recs)
				}
				rbInsert(b, dl, sqlDB, c.t, rbRecords(rbPending, "claim-bench", now))
				rbAnalyze(b, dl, sqlDB, c.t)
				b.Logf("%s: %d delayed rows, then %d due ones, in %v", c.t, delayed[i], rbPending,
					time.Since(start).Round(time.Millisecond))
			}
			timeClaims(b, dl, sqlDB, opts, cases)
			none, late := medianDuration(cases[0].times), medianDuration(cases[1].times)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(none.Nanoseconds()), "none-ns/claim")
			b.ReportMetric(float64(late.Nanoseconds()), "delayed-ns/claim")
			b.ReportMetric(float64(late)/float64(none), "delayed/none")
			for _, c := range cases {
				b.Logf("%s: %d claims of %d rows, median %v, min %v, max %v", c.label, len(c.times), rbBatch,
					medianDuration(c.times).Round(time.Microsecond), slices.Min(c.times).Round(time.Microsecond),
					slices.Max(c.times).Round(time.Microsecond))
			}
		})
	}
}

// BenchmarkRelayBacklog compares the relay's rate on two backlogs of
// pending rows, bbSmall and bbLarge (each table in a database of its own,
// filled with set-based SQL: rbRecords' keys and payload size, due in id
// order; on PostgreSQL vacuumed before the timing): bbRounds drains of bbDrainBudget each per table, alternating
// (one worker, the timing wrappers of BenchmarkRelayThroughput, the same
// in-process broker); after each round both tables are topped up to their
// size again. Reported: events/s of each and their ratio (large ÷ small),
// and per batch the claim and finish (mark + commit) times of each.
func BenchmarkRelayBacklog(b *testing.B) {
	for _, d := range testenv.Dialects() {
		b.Run(d.Name, func(b *testing.B) {
			ctx := context.Background()
			brokers, _ := kafkaenv.Kafka(b, rbPartitions)
			base := time.Now().UTC().Add(-time.Hour)
			type tcase struct {
				label     string
				size      int
				topic     string
				next      int // the next row number of the fill
				db        *sql.DB
				dl        dialects.Dialect
				t         dialects.Table
				relay     *gormoutbox.Relay
				tm        rbTimes
				published int
				elapsed   time.Duration
			}
			cases := []*tcase{{label: "100k", size: bbSmall}, {label: "1M", size: bbLarge}}
			for _, c := range cases {
				start := time.Now()
				db, p, sqlDB, table := rbOutbox(b, d, gormoutbox.Config{Shards: rbShards})
				c.db, c.dl, c.t = sqlDB, p.Dialect(), table
				c.topic = kafkaenv.TopicName("backlog-bench")
				kafkaenv.CreateTopic(b, brokers, c.topic, rbPartitions)
				bbFillPending(b, c.dl, c.db, c.t, c.topic, 0, c.size, base)
				c.next = c.size
				if d.Name == "postgres" {
					// Vacuum now rather than have autovacuum's first pass
					// over the freshly loaded table (about 400 MB at 1M
					// rows) run during the timed drains: a backlog that
					// built up over time has been vacuumed.
					if _, err := c.db.ExecContext(ctx, `VACUUM `+c.t.Qualified(c.dl)); err != nil {
						b.Fatal(err)
					}
				}
				rbAnalyze(b, c.dl, c.db, c.t)
				b.Logf("%s: %d pending rows in %v", c.t, c.size, time.Since(start).Round(time.Millisecond))
				td := rbTimedDialect{Dialect: p.Dialect(), tm: &c.tm}
				pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, BatchSize: rbBatch})
				if err != nil {
					b.Fatal(err)
				}
				defer func() { _ = pub.Close() }()
				c.relay, err = gormoutbox.NewRelay(db, rbTimedPublisher{pub: pub, tm: &c.tm}, gormoutbox.RelayConfig{
					BatchSize: rbBatch, Budget: bbDrainBudget, Dialect: td, Workers: 1,
				})
				if err != nil {
					b.Fatal(err)
				}
			}
			drain := func(c *tcase) {
				start := time.Now()
				res, err := c.relay.Drain(ctx)
				if err != nil {
					b.Fatalf("Drain on %s: %v", c.t, err)
				}
				c.elapsed += time.Since(start)
				c.published += res.Published
				if res.Published == 0 {
					b.Fatalf("Drain on %s published nothing: %+v", c.t, res)
				}
				// Top up (untimed): the backlog stays at its size.
				bbFillPending(b, c.dl, c.db, c.t, c.topic, c.next, res.Published, base)
				c.next += res.Published
			}
			drain(cases[0]) // warm-up, untimed
			drain(cases[1])
			for _, c := range cases {
				c.tm, c.published, c.elapsed = rbTimes{}, 0, 0
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for r := 0; r < bbRounds; r++ {
					first, second := cases[0], cases[1]
					if r%2 == 1 {
						first, second = second, first
					}
					drain(first)
					drain(second)
				}
			}
			b.StopTimer()
			rate := func(c *tcase) float64 { return float64(c.published) / c.elapsed.Seconds() }
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(rate(cases[0]), "100k-events/s")
			b.ReportMetric(rate(cases[1]), "1M-events/s")
			b.ReportMetric(rate(cases[1])/rate(cases[0]), "1M/100k")
			for _, c := range cases {
				per := func(d time.Duration) time.Duration {
					return (d / time.Duration(max(c.tm.batches, 1))).Round(time.Microsecond)
				}
				b.Logf("%s pending: %d events in %v (%.0f/s); per batch: claim %v, publish %v, finish %v",
					c.label, c.published, c.elapsed.Round(time.Millisecond), rate(c),
					per(c.tm.claim), per(c.tm.publish), per(c.tm.finish))
			}
		})
	}
}

// bbFillPending inserts n pending rows numbered from lo into t with
// set-based SQL: keys, topic and payload size as in rbRecords (keys in
// rotation by row number), due at base plus the row number in
// microseconds (so in id order).
func bbFillPending(tb testing.TB, d dialects.Dialect, db *sql.DB, t dialects.Table, topic string, lo, n int, base time.Time) {
	tb.Helper()
	ctx := context.Background()
	keys := rbKeyList()
	q := t.Qualified(d)
	cols := `event_id, topic, msg_key, event_type, aggregate_type, aggregate_id, payload, headers, shard,
	available_at, created_at`
	if d.Name() == "postgres" {
		idx, ks, shards := make([]int32, len(keys)), make([][]byte, len(keys)), make([]int32, len(keys))
		for i, k := range keys {
			idx[i], ks[i], shards[i] = int32(i), k.key, int32(k.shard)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO `+q+` (`+cols+`)
SELECT ('00000000-0000-7000-8000-' || lpad(g::text, 12, '0'))::uuid, $1, k.key, 'BenchEvent', 'bench',
	convert_from(k.key, 'UTF8'), convert_to(rpad('{"seq":' || g || ',"pad":"', 198, 'x') || '"}', 'UTF8'),
	'{"content-type": "application/json"}', k.shard,
	$2::timestamptz + g * interval '1 microsecond', $2::timestamptz + g * interval '1 microsecond'
FROM generate_series($3::int, $3::int + $4::int - 1) AS g
JOIN unnest($5::int[], $6::bytea[], $7::int[]) AS k(i, key, shard) ON k.i = g % `+strconv.Itoa(rbKeys)+`
ORDER BY g`, topic, base, lo, n, idx, ks, shards); err != nil {
			tb.Fatalf("fill %s: %v", t, err)
		}
		return
	}
	// As rbFillPublished: 1,000 × up to 100 rows per statement from a
	// recursive CTE; the last statement takes the remainder (rows past
	// lo+n are cut by the WHERE).
	var kt strings.Builder
	for i, k := range keys {
		if i > 0 {
			kt.WriteString(" UNION ALL ")
		}
		fmt.Fprintf(&kt, "SELECT %d AS i, '%s' AS msg_key, %d AS shard", i, k.key, k.shard)
	}
	stmt := `INSERT INTO ` + q + ` (` + cols + `)
SELECT CONCAT('00000000-0000-7000-8000-', LPAD(s.n, 12, '0')), ?, k.msg_key, 'BenchEvent', 'bench', k.msg_key,
	CONCAT(RPAD(CONCAT('{"seq":', s.n, ',"pad":"'), 198, 'x'), '"}'),
	'{"content-type": "application/json"}', k.shard,
	TIMESTAMPADD(MICROSECOND, s.n, ?), TIMESTAMPADD(MICROSECOND, s.n, ?)
FROM (
	WITH RECURSIVE seq (n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < 999)
	SELECT ? + a.n * 1000 + b.n AS n FROM seq a CROSS JOIN seq b WHERE a.n < 100 AND a.n * 1000 + b.n < ?
) s
JOIN (` + kt.String() + `) k ON k.i = s.n % ` + strconv.Itoa(rbKeys) + `
ORDER BY s.n`
	const chunk = 100_000
	for off := 0; off < n; off += chunk {
		if _, err := db.ExecContext(ctx, stmt, topic, base, base, lo+off, min(chunk, n-off)); err != nil {
			tb.Fatalf("fill %s: %v", t, err)
		}
	}
}
