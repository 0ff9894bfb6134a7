package integration

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	kafkago "github.com/segmentio/kafka-go"
	gormpg "gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/pick"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/eventid"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
)

// Shape of the relay benchmarks (docs/benchmarks.md, "Relay throughput and
// claim cost").
const (
	rbBacklog    = 100_000 // rows drained by BenchmarkRelayThroughput
	rbBatch      = 500     // relay BatchSize, publisher BatchSize, raw call size
	rbKeys       = 100     // distinct message keys
	rbPartitions = 8       // partitions of the topics
	rbPayload    = 200     // payload bytes
	rbShards     = gormoutbox.DefaultShards
	rbPending    = 10_000 // pending rows of BenchmarkClaimCost
	rbRounds     = 30     // timed claims per table per iteration of BenchmarkClaimCost
	rbWarmRounds = 5      // untimed claims per table before those
)

// rbHeaders are the headers captured with every benchmark event: what the
// plugin stores for a JSON entity written inside a traced request.
var rbHeaders = map[string]string{
	"content-type": "application/json",
	"traceparent":  "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
}

type rbKey struct {
	key   []byte
	shard int
}

// rbKeyList returns the benchmark keys "key-000".."key-099" with their shard,
// computed as the plugin does.
func rbKeyList() []rbKey {
	keys := make([]rbKey, rbKeys)
	for i := range keys {
		k := []byte(fmt.Sprintf("key-%03d", i))
		keys[i] = rbKey{key: k, shard: int(dialects.HashKey(k) % rbShards)}
	}
	return keys
}

// rbPayloadOf returns a JSON payload of exactly rbPayload bytes.
func rbPayloadOf(i int) []byte {
	p := fmt.Appendf(make([]byte, 0, rbPayload), `{"seq":%d,"pad":"`, i)
	for len(p) < rbPayload-2 {
		p = append(p, 'x')
	}
	return append(p, '"', '}')
}

// rbRecords returns n outbox records of topic, keys in rotation, with fresh
// UUIDv7 event ids.
func rbRecords(n int, topic string, now time.Time) []dialects.Record {
	var ids eventid.Generator
	keys := rbKeyList()
	recs := make([]dialects.Record, n)
	for i := range recs {
		k := keys[i%rbKeys]
		recs[i] = dialects.Record{
			EventID: ids.New(), Topic: topic, Key: k.key, EventType: "BenchEvent",
			AggregateType: "bench", AggregateID: string(k.key), Payload: rbPayloadOf(i),
			Headers: rbHeaders, Shard: k.shard, CreatedAt: now, AvailableAt: now,
		}
	}
	return recs
}

// rbOutbox opens a database of d with the plugin (configured by cfg)
// registered and its outbox table migrated, and returns it with its
// *sql.DB and the outbox table.
func rbOutbox(b testing.TB, d testenv.Dialect, cfg gormoutbox.Config) (*gorm.DB, *gormoutbox.Plugin, *sql.DB, dialects.Table) {
	b.Helper()
	db := d.Open(b, nil)
	p := gormoutbox.New(cfg)
	if err := db.Use(p); err != nil {
		b.Fatal(err)
	}
	if err := p.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		b.Fatal(err)
	}
	table, err := dialects.ParseTable(p.Table())
	if err != nil {
		b.Fatal(err)
	}
	return db, p, sqlDB, table
}

// rbInsert writes recs with the dialect's own multi-row Insert, 5,000 rows
// per call, in one transaction.
func rbInsert(tb testing.TB, d dialects.Dialect, db *sql.DB, t dialects.Table, recs []dialects.Record) {
	tb.Helper()
	ctx := context.Background()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		tb.Fatal(err)
	}
	for len(recs) > 0 {
		n := min(len(recs), 5000)
		if err := d.Insert(ctx, tx, t, recs[:n]); err != nil {
			_ = tx.Rollback()
			tb.Fatal(err)
		}
		recs = recs[n:]
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
}

// rbAnalyze refreshes the planner statistics of t.
func rbAnalyze(tb testing.TB, d dialects.Dialect, db *sql.DB, t dialects.Table) {
	tb.Helper()
	stmt := `ANALYZE ` + t.Qualified(d)
	if d.Name() == "mysql" {
		stmt = `ANALYZE TABLE ` + t.Qualified(d) // returns a result set
	}
	rows, err := db.Query(stmt)
	if err != nil {
		tb.Fatalf("%s: %v", stmt, err)
	}
	for rows.Next() {
	}
	if err := errors.Join(rows.Err(), rows.Close()); err != nil {
		tb.Fatalf("%s: %v", stmt, err)
	}
}

// rbRawMessages builds, from recs, the kafka-go messages the relay would
// send: same key, value and headers (the relay's envelope, then the
// captured headers by name).
func rbRawMessages(recs []dialects.Record, topic string) []kafkago.Message {
	msgs := make([]kafkago.Message, len(recs))
	names := make([]string, 0, len(rbHeaders))
	for k := range rbHeaders {
		names = append(names, k)
	}
	slices.Sort(names)
	for i := range recs {
		r := &recs[i]
		hs := make([]kafkago.Header, 0, 5+len(names))
		hs = append(hs,
			kafkago.Header{Key: gormoutbox.HeaderEventID, Value: []byte(r.EventID)},
			kafkago.Header{Key: gormoutbox.HeaderEventType, Value: []byte(r.EventType)},
			kafkago.Header{Key: gormoutbox.HeaderOccurredAt, Value: []byte(r.CreatedAt.UTC().Format(time.RFC3339Nano))},
			kafkago.Header{Key: gormoutbox.HeaderAggregateType, Value: []byte(r.AggregateType)},
			kafkago.Header{Key: gormoutbox.HeaderAggregateID, Value: []byte(r.AggregateID)},
		)
		for _, k := range names {
			hs = append(hs, kafkago.Header{Key: k, Value: []byte(r.Headers[k])})
		}
		msgs[i] = kafkago.Message{Topic: topic, Key: r.Key, Value: r.Payload, Headers: hs}
	}
	return msgs
}

// rbWriteRaw writes msgs with a bare kafka-go Writer configured like the
// outbox Publisher, rbBatch messages per WriteMessages call, one call after
// the other, and returns the time the calls took.
func rbWriteRaw(tb testing.TB, brokers []string, msgs []kafkago.Message) time.Duration {
	tb.Helper()
	tr := &kafkago.Transport{}
	w := &kafkago.Writer{
		Addr:         kafkago.TCP(brokers...),
		Balancer:     &kafkago.Murmur2Balancer{},
		RequiredAcks: kafkago.RequireAll,
		BatchSize:    rbBatch,
		BatchTimeout: time.Millisecond,
		Transport:    tr,
	}
	defer func() {
		_ = w.Close()
		tr.CloseIdleConnections()
	}()
	ctx := context.Background()
	start := time.Now()
	for len(msgs) > 0 {
		n := min(len(msgs), rbBatch)
		if err := w.WriteMessages(ctx, msgs[:n]...); err != nil {
			tb.Fatalf("raw WriteMessages: %v", err)
		}
		msgs = msgs[n:]
	}
	return time.Since(start)
}

// rbTopicCount sums the end offsets of topic's partitions.
func rbTopicCount(tb testing.TB, brokers []string, topic string) int64 {
	tb.Helper()
	reqs := make([]kafkago.OffsetRequest, rbPartitions)
	for p := range reqs {
		reqs[p] = kafkago.LastOffsetOf(p)
	}
	c := &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 10 * time.Second}
	res, err := c.ListOffsets(context.Background(), &kafkago.ListOffsetsRequest{
		Topics: map[string][]kafkago.OffsetRequest{topic: reqs}})
	if err != nil {
		tb.Fatalf("list offsets of %s: %v", topic, err)
	}
	var n int64
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			tb.Fatalf("list offsets of %s/%d: %v", topic, po.Partition, po.Error)
		}
		n += po.LastOffset
	}
	return n
}

// rbTimes accumulates where a relay's time goes.
type rbTimes struct {
	open, claim, publish, finish, close time.Duration
	batches                             int
	// claims holds the time of each claim that returned rows, in order.
	claims []time.Duration
	// drv is filled by the timing driver (PostgreSQL only): what the
	// passes' statements took on the connection. mark and commit are the
	// statement and COMMIT time spent inside Finish; begin and query the
	// BEGIN and query time spent inside Claim.
	drv                        rbDriverTimes
	begin, query, mark, commit time.Duration
}

type rbDriverTimes struct {
	begin, query, exec, commit, rollback time.Duration
}

// rbTimedDialect is the real dialect with a timing Open. When db is set,
// passes run on it (a pool whose driver times each statement) instead of
// on the relay's pool.
type rbTimedDialect struct {
	dialects.Dialect
	tm *rbTimes
	db *sql.DB
}

func (d rbTimedDialect) Open(ctx context.Context, db *sql.DB, t dialects.Table, o dialects.ClaimOptions) (dialects.Pass, error) {
	if d.db != nil {
		db = d.db
	}
	start := time.Now()
	p, err := d.Dialect.Open(ctx, db, t, o)
	d.tm.open += time.Since(start)
	if err != nil {
		return nil, err
	}
	return &rbTimedPass{p: p, tm: d.tm}, nil
}

type rbTimedPass struct {
	p  dialects.Pass
	tm *rbTimes
}

func (p *rbTimedPass) Claim(ctx context.Context, now time.Time, limit int) ([]dialects.Row, error) {
	before := p.tm.drv
	start := time.Now()
	rows, err := p.p.Claim(ctx, now, limit)
	el := time.Since(start)
	p.tm.claim += el
	p.tm.begin += p.tm.drv.begin - before.begin
	p.tm.query += p.tm.drv.query - before.query
	if len(rows) > 0 {
		p.tm.batches++
		p.tm.claims = append(p.tm.claims, el)
	}
	return rows, err
}

func (p *rbTimedPass) Finish(ctx context.Context, o dialects.Outcome) error {
	before := p.tm.drv
	start := time.Now()
	err := p.p.Finish(ctx, o)
	p.tm.finish += time.Since(start)
	p.tm.mark += p.tm.drv.exec - before.exec
	p.tm.commit += p.tm.drv.commit - before.commit
	return err
}

func (p *rbTimedPass) Close() error {
	start := time.Now()
	err := p.p.Close()
	p.tm.close += time.Since(start)
	return err
}

type rbTimedPublisher struct {
	pub gormoutbox.Publisher
	tm  *rbTimes
}

func (p rbTimedPublisher) Publish(ctx context.Context, msgs []gormoutbox.Message) error {
	start := time.Now()
	err := p.pub.Publish(ctx, msgs)
	p.tm.publish += time.Since(start)
	return err
}

// rbTimedPostgres opens a second pool on the database of db (same DSN, so
// the same schema) whose connections time BEGIN, queries, statements,
// COMMIT and ROLLBACK. A PostgreSQL pass runs its claim as BEGIN + query
// and its Finish as one statement + COMMIT, so the statement time is the
// marking and the COMMIT time the commit (its WAL flush).
func rbTimedPostgres(tb testing.TB, db *gorm.DB, tm *rbDriverTimes) *sql.DB {
	tb.Helper()
	dial, ok := db.Dialector.(*gormpg.Dialector)
	if !ok {
		tb.Fatalf("dialector is %T, want *postgres.Dialector", db.Dialector)
	}
	cfg, err := pgx.ParseConfig(dial.Config.DSN)
	if err != nil {
		tb.Fatal(err)
	}
	sqlDB := sql.OpenDB(rbConnector{Connector: stdlib.GetConnector(*cfg), tm: tm})
	tb.Cleanup(func() { _ = sqlDB.Close() })
	return sqlDB
}

type rbConnector struct {
	driver.Connector
	tm *rbDriverTimes
}

func (c rbConnector) Connect(ctx context.Context) (driver.Conn, error) {
	cn, err := c.Connector.Connect(ctx)
	if err != nil {
		return nil, err
	}
	sc, ok := cn.(*stdlib.Conn)
	if !ok {
		_ = cn.Close()
		return nil, fmt.Errorf("pgx connector returned a %T", cn)
	}
	return &rbConn{Conn: sc, tm: c.tm}, nil
}

// rbConn is a pgx connection (every optional driver interface promoted)
// that times what the relay runs on it.
type rbConn struct {
	*stdlib.Conn
	tm *rbDriverTimes
}

func (c *rbConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	start := time.Now()
	tx, err := c.Conn.BeginTx(ctx, opts)
	c.tm.begin += time.Since(start)
	if err != nil {
		return nil, err
	}
	return rbTx{Tx: tx, tm: c.tm}, nil
}

func (c *rbConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	start := time.Now()
	res, err := c.Conn.ExecContext(ctx, query, args)
	c.tm.exec += time.Since(start)
	return res, err
}

func (c *rbConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	start := time.Now()
	rows, err := c.Conn.QueryContext(ctx, query, args)
	c.tm.query += time.Since(start)
	return rows, err
}

type rbTx struct {
	driver.Tx
	tm *rbDriverTimes
}

func (t rbTx) Commit() error {
	start := time.Now()
	err := t.Tx.Commit()
	t.tm.commit += time.Since(start)
	return err
}

func (t rbTx) Rollback() error {
	start := time.Now()
	err := t.Tx.Rollback()
	t.tm.rollback += time.Since(start)
	return err
}

// BenchmarkRelayThroughput drains a backlog of rbBacklog outbox rows (200-byte
// payloads, 100 keys, one topic of 8 partitions) with one Relay (BatchSize
// 500, kafka.Publisher with BatchSize 500) into the test broker, and in the
// same run writes the same messages with a bare kafka-go Writer (same
// balancer, acks, batch size and timeout, calls of 500 one after the other)
// before and after the relay: the baseline. Reported: events/s of each,
// their ratio (relay ÷ raw, against the mean of the two raw runs), and the
// share of the relay's time spent claiming, publishing and finishing (on
// PostgreSQL, finishing split into the marking statement and the COMMIT).
//
// The broker is kafkaenv.Kafka's: an in-process kfake unless
// OUTBOX_TEST_KAFKA_BROKERS is set; in-process, it competes for the same
// cores as the relay and the database.
func BenchmarkRelayThroughput(b *testing.B) {
	for _, d := range testenv.Dialects() {
		b.Run(d.Name, func(b *testing.B) {
			ctx := context.Background()
			db, p, sqlDB, table := rbOutbox(b, d, gormoutbox.Config{Shards: rbShards})
			brokers, _ := kafkaenv.Kafka(b, rbPartitions)
			relayTopic, rawTopic := kafkaenv.TopicName("relay-bench"), kafkaenv.TopicName("raw-bench")
			kafkaenv.CreateTopic(b, brokers, relayTopic, rbPartitions)
			kafkaenv.CreateTopic(b, brokers, rawTopic, rbPartitions)

			tm := &rbTimes{}
			td := rbTimedDialect{Dialect: p.Dialect(), tm: tm}
			if d.Name == "postgres" {
				td.db = rbTimedPostgres(b, db, &tm.drv)
			}
			pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, BatchSize: rbBatch})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = pub.Close() }()
			relay, err := gormoutbox.NewRelay(db, rbTimedPublisher{pub: pub, tm: tm}, gormoutbox.RelayConfig{
				// One worker: the time shares are of one claim-publish-mark
				// loop (the timing wrappers are not safe for concurrent
				// use). BenchmarkRelayWorkers compares 1 and 2 workers.
				BatchSize: rbBatch, Budget: time.Hour, Dialect: td, Workers: 1,
			})
			if err != nil {
				b.Fatal(err)
			}

			var (
				tRelay, tRaw1, tRaw2 time.Duration
				total                rbTimes
			)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				fill := time.Now()
				recs := rbRecords(rbBacklog, relayTopic, time.Now().UTC())
				rbInsert(b, p.Dialect(), sqlDB, table, recs)
				rbAnalyze(b, p.Dialect(), sqlDB, table)
				raw := rbRawMessages(recs, rawTopic)
				b.Logf("filled %d rows in %v", len(recs), time.Since(fill).Round(time.Millisecond))
				before := rbTopicCount(b, brokers, relayTopic)
				*tm = rbTimes{}
				b.StartTimer()

				tRaw1 += rbWriteRaw(b, brokers, raw)

				start := time.Now()
				var published int
				for published < rbBacklog {
					res, err := relay.Drain(ctx)
					if err != nil {
						b.Fatalf("Drain: %v", err)
					}
					if res.Retried+res.Dead+res.HeldBack > 0 {
						b.Fatalf("Drain: %+v, want only published rows", res)
					}
					published += res.Published
					if res.Batches == 0 {
						break
					}
				}
				tRelay += time.Since(start)

				tRaw2 += rbWriteRaw(b, brokers, raw)
				b.StopTimer()

				if published != rbBacklog {
					b.Fatalf("relay published %d rows, want %d", published, rbBacklog)
				}
				if st, err := relay.Stats(ctx); err != nil || st.Pending != 0 {
					b.Fatalf("after the drain: %+v, %v; want no pending row", st, err)
				}
				if n := rbTopicCount(b, brokers, relayTopic) - before; n != rbBacklog {
					b.Fatalf("relay topic got %d messages, want %d", n, rbBacklog)
				}
				total.add(tm)
				b.StartTimer()
			}
			b.StopTimer()

			events := float64(rbBacklog * b.N)
			rawMean := (tRaw1 + tRaw2) / 2
			relayRate, rawRate := events/tRelay.Seconds(), events/rawMean.Seconds()
			share := func(d time.Duration) float64 { return float64(d) / float64(tRelay) }
			perBatch := func(d time.Duration) time.Duration {
				return (d / time.Duration(max(total.batches, 1))).Round(time.Microsecond)
			}
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(relayRate, "relay-events/s")
			b.ReportMetric(rawRate, "raw-events/s")
			b.ReportMetric(relayRate/rawRate, "relay/raw")
			b.ReportMetric(share(total.claim), "claim-share")
			b.ReportMetric(share(total.publish), "publish-share")
			b.ReportMetric(share(total.finish), "finish-share")
			other := tRelay - total.claim - total.publish - total.finish
			b.Logf("relay: %d events in %v (%d batches); raw: %v before, %v after",
				rbBacklog*b.N, tRelay.Round(time.Millisecond), total.batches,
				tRaw1.Round(time.Millisecond), tRaw2.Round(time.Millisecond))
			b.Logf("per batch: claim %v, publish %v, finish %v, other %v (open %v, close %v in all)",
				perBatch(total.claim), perBatch(total.publish), perBatch(total.finish), perBatch(other),
				total.open.Round(time.Microsecond), total.close.Round(time.Microsecond))
			if n := len(total.claims) / 10; n > 0 {
				avg := func(ds []time.Duration) time.Duration {
					var t time.Duration
					for _, d := range ds {
						t += d
					}
					return (t / time.Duration(len(ds))).Round(time.Microsecond)
				}
				b.Logf("claim time over the drain, mean per tenth of the batches: %v", func() []time.Duration {
					var out []time.Duration
					for i := 0; i+n <= len(total.claims) && len(out) < 10; i += n {
						out = append(out, avg(total.claims[i:i+n]))
					}
					return out
				}())
			}
			if d.Name == "postgres" {
				b.ReportMetric(share(total.mark), "mark-share")
				b.ReportMetric(share(total.commit), "commit-share")
				b.Logf("postgres per batch: claim = BEGIN %v + query until its first row %v + reading and scanning the rows %v; "+
					"finish = mark statement %v + COMMIT %v + %v in Go; ROLLBACK %v in all",
					perBatch(total.begin), perBatch(total.query), perBatch(total.claim-total.begin-total.query),
					perBatch(total.mark), perBatch(total.commit), perBatch(total.finish-total.mark-total.commit),
					total.drv.rollback.Round(time.Microsecond))
			}
		})
	}
}

func (a *rbTimes) add(b *rbTimes) {
	a.open += b.open
	a.claim += b.claim
	a.publish += b.publish
	a.finish += b.finish
	a.close += b.close
	a.batches += b.batches
	a.claims = append(a.claims, b.claims...)
	a.drv.rollback += b.drv.rollback
	a.begin += b.begin
	a.query += b.query
	a.mark += b.mark
	a.commit += b.commit
}

// rbFillPublished inserts n published rows (n a multiple of 1,000) into t
// with set-based SQL: keys, topic and payload size as in rbRecords,
// created over the n milliseconds before now, published 5 ms after.
func rbFillPublished(tb testing.TB, d dialects.Dialect, db *sql.DB, t dialects.Table, topic string, n int, now time.Time) {
	tb.Helper()
	ctx := context.Background()
	keys := rbKeyList()
	q := t.Qualified(d)
	cols := `event_id, topic, msg_key, event_type, aggregate_type, aggregate_id, payload, headers, shard,
	available_at, created_at, published_at`
	if d.Name() == "postgres" {
		idx, ks, shards := make([]int32, len(keys)), make([][]byte, len(keys)), make([]int32, len(keys))
		for i, k := range keys {
			idx[i], ks[i], shards[i] = int32(i), k.key, int32(k.shard)
		}
		if _, err := db.ExecContext(ctx, `INSERT INTO `+q+` (`+cols+`)
SELECT ('00000000-0000-7000-8000-' || lpad(g::text, 12, '0'))::uuid, $1, k.key, 'BenchEvent', 'bench',
	convert_from(k.key, 'UTF8'), convert_to(rpad('{"seq":' || g || ',"pad":"', 198, 'x') || '"}', 'UTF8'),
	'{"content-type": "application/json"}', k.shard,
	$2::timestamptz - ($3::int - g) * interval '1 ms', $2::timestamptz - ($3::int - g) * interval '1 ms',
	$2::timestamptz - ($3::int - g) * interval '1 ms' + interval '5 ms'
FROM generate_series(0, $3::int - 1) AS g
JOIN unnest($4::int[], $5::bytea[], $6::int[]) AS k(i, key, shard) ON k.i = g % `+strconv.Itoa(rbKeys)+`
ORDER BY g`, topic, now, n, idx, ks, shards); err != nil {
			tb.Fatalf("fill %s: %v", t, err)
		}
		return
	}
	// MySQL 8 and MariaDB: a 1,000-row recursive CTE (within MySQL's
	// default cte_max_recursion_depth of 1000) crossed with the first
	// "thousands" of itself, 100,000 rows per statement; the keys come from
	// a derived table of literals.
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
	TIMESTAMPADD(MICROSECOND, (s.n - ?) * 1000, ?), TIMESTAMPADD(MICROSECOND, (s.n - ?) * 1000, ?),
	TIMESTAMPADD(MICROSECOND, (s.n - ?) * 1000 + 5000, ?)
FROM (
	WITH RECURSIVE seq (n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM seq WHERE n < 999)
	SELECT ? + a.n * 1000 + b.n AS n FROM seq a CROSS JOIN seq b WHERE a.n < ?
) s
JOIN (` + kt.String() + `) k ON k.i = s.n % ` + strconv.Itoa(rbKeys) + `
ORDER BY s.n`
	const chunk = 100_000
	for lo := 0; lo < n; lo += chunk {
		thousands := min(chunk, n-lo) / 1000
		if _, err := db.ExecContext(ctx, stmt, topic, n, now, n, now, n, now, lo, thousands); err != nil {
			tb.Fatalf("fill %s: %v", t, err)
		}
	}
}

// BenchmarkClaimCost times one claimed batch (Claim of 500, then the claim
// released unfinished, so the same pending rows are claimed every time)
// on two outbox tables that differ only in the published rows they keep:
// 1,000 and 1,000,000 (older than the rbPending pending rows, same topic
// and keys). Claims alternate between the tables. Reported: the median ns
// per claim of each and their ratio (1M ÷ 1k). What a claim is on each
// database: timeClaims.
func BenchmarkClaimCost(b *testing.B) {
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
			topic := "claim-bench"
			cases := [2]*claimTable{
				{label: "1k", t: dialects.Table{Name: "outbox_1k"}},
				{label: "1M", t: dialects.Table{Name: "outbox_1m"}},
			}
			published := [2]int{1_000, 1_000_000}
			opts := dialects.ClaimOptions{Shards: rbShards}
			for i, c := range cases {
				start := time.Now()
				if err := dl.Migrate(ctx, sqlDB, c.t); err != nil {
					b.Fatal(err)
				}
				now := time.Now().UTC()
				rbFillPublished(b, dl, sqlDB, c.t, topic, published[i], now.Add(-time.Hour))
				filled := time.Since(start)
				rbInsert(b, dl, sqlDB, c.t, rbRecords(rbPending, topic, now))
				rbAnalyze(b, dl, sqlDB, c.t)
				b.Logf("%s: %d published rows in %v, then %d pending, analyzed, in %v in all", c.t, published[i],
					filled.Round(time.Millisecond), rbPending, time.Since(start).Round(time.Millisecond))
			}
			timeClaims(b, dl, sqlDB, opts, cases)
			median := medianDuration
			mean := func(ds []time.Duration) time.Duration {
				var t time.Duration
				for _, d := range ds {
					t += d
				}
				return t / time.Duration(len(ds))
			}
			small, large := median(cases[0].times), median(cases[1].times)
			b.ReportMetric(0, "ns/op")
			b.ReportMetric(float64(small.Nanoseconds()), "1k-published-ns/claim")
			b.ReportMetric(float64(large.Nanoseconds()), "1M-published-ns/claim")
			b.ReportMetric(float64(large)/float64(small), "1M/1k")
			for _, c := range cases {
				b.Logf("%s published: %d claims of %d rows, median %v, mean %v, min %v, max %v",
					c.label, len(c.times), rbBatch, median(c.times).Round(time.Microsecond),
					mean(c.times).Round(time.Microsecond), slices.Min(c.times).Round(time.Microsecond),
					slices.Max(c.times).Round(time.Microsecond))
			}
		})
	}
}

// BenchmarkRelayWorkers is BenchmarkRelayThroughput without the timing
// wrappers, for a relay with 1 and with 2 Workers: the second worker
// overlaps its database round trips with the first one's publishing.
func BenchmarkRelayWorkers(b *testing.B) {
	for _, d := range testenv.Dialects() {
		for _, workers := range []int{1, 2} {
			b.Run(fmt.Sprintf("%s/workers=%d", d.Name, workers), func(b *testing.B) {
				ctx := context.Background()
				db, p, sqlDB, table := rbOutbox(b, d, gormoutbox.Config{Shards: rbShards})
				brokers, _ := kafkaenv.Kafka(b, rbPartitions)
				relayTopic, rawTopic := kafkaenv.TopicName("relay-bench"), kafkaenv.TopicName("raw-bench")
				kafkaenv.CreateTopic(b, brokers, relayTopic, rbPartitions)
				kafkaenv.CreateTopic(b, brokers, rawTopic, rbPartitions)
				pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers, BatchSize: rbBatch})
				if err != nil {
					b.Fatal(err)
				}
				defer func() { _ = pub.Close() }()
				relay, err := gormoutbox.NewRelay(db, pub, gormoutbox.RelayConfig{
					BatchSize: rbBatch, Budget: time.Hour, Workers: workers,
				})
				if err != nil {
					b.Fatal(err)
				}
				var tRelay, tRaw time.Duration
				for i := 0; i < b.N; i++ {
					b.StopTimer()
					recs := rbRecords(rbBacklog, relayTopic, time.Now().UTC())
					rbInsert(b, p.Dialect(), sqlDB, table, recs)
					rbAnalyze(b, p.Dialect(), sqlDB, table)
					raw := rbRawMessages(recs, rawTopic)
					before := rbTopicCount(b, brokers, relayTopic)
					b.StartTimer()
					tRaw += rbWriteRaw(b, brokers, raw) / 2
					start := time.Now()
					published := 0
					for published < rbBacklog {
						res, err := relay.Drain(ctx)
						if err != nil {
							b.Fatalf("Drain: %v", err)
						}
						published += res.Published
						if res.Batches == 0 {
							break
						}
					}
					tRelay += time.Since(start)
					tRaw += rbWriteRaw(b, brokers, raw) / 2
					b.StopTimer()
					if published != rbBacklog {
						b.Fatalf("relay published %d rows, want %d", published, rbBacklog)
					}
					if n := rbTopicCount(b, brokers, relayTopic) - before; n != rbBacklog {
						b.Fatalf("relay topic got %d messages, want %d", n, rbBacklog)
					}
					b.StartTimer()
				}
				events := float64(rbBacklog * b.N)
				b.ReportMetric(0, "ns/op")
				b.ReportMetric(events/tRelay.Seconds(), "relay-events/s")
				b.ReportMetric(events/tRaw.Seconds(), "raw-events/s")
				b.ReportMetric(tRaw.Seconds()/tRelay.Seconds(), "relay/raw")
			})
		}
	}
}

// claimTable is one of the two tables a claim benchmark compares.
type claimTable struct {
	label string
	t     dialects.Table
	times []time.Duration // of the timed claims
}

// timeClaims times claims of rbBatch rows on the two tables (filled by
// the caller), rbWarmRounds untimed first, then rbRounds per iteration,
// alternating which table goes first. A claim is released unfinished, so
// that every claim reads the same rows. PostgreSQL: a claim is Open (no
// I/O), Claim (BEGIN + the claim statement) and Close (ROLLBACK). MySQL:
// a pass holding every shard is opened once per table and each claim is
// one Claim on it (a plain SELECT, nothing to release).
func timeClaims(b *testing.B, dl dialects.Dialect, sqlDB *sql.DB, opts dialects.ClaimOptions, cases [2]*claimTable) {
	b.Helper()
	ctx := context.Background()
	var held [2]dialects.Pass
	if dl.Capabilities().LocksShards {
		for i, c := range cases {
			p, err := dl.Open(ctx, sqlDB, c.t, opts)
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = p.Close() }()
			held[i] = p
		}
	}
	claim := func(i int) time.Duration {
		c := cases[i]
		start := time.Now()
		p := held[i]
		if p == nil {
			var err error
			if p, err = dl.Open(ctx, sqlDB, c.t, opts); err != nil {
				b.Fatal(err)
			}
		}
		rows, err := p.Claim(ctx, time.Now(), rbBatch)
		if err != nil {
			b.Fatalf("claim on %s: %v", c.t, err)
		}
		if held[i] == nil {
			if err := p.Close(); err != nil {
				b.Fatal(err)
			}
		}
		el := time.Since(start)
		if len(rows) != rbBatch {
			b.Fatalf("claim on %s: %d rows, want %d", c.t, len(rows), rbBatch)
		}
		return el
	}
	for r := 0; r < rbWarmRounds; r++ {
		claim(0)
		claim(1)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for r := 0; r < rbRounds; r++ {
			first, second := 0, 1
			if r%2 == 1 {
				first, second = 1, 0
			}
			cases[first].times = append(cases[first].times, claim(first))
			cases[second].times = append(cases[second].times, claim(second))
		}
	}
	b.StopTimer()
}

// medianDuration is the median of ds.
func medianDuration(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
