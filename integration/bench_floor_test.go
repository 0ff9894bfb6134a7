package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
)

// The baselines of "5 of 5" (the floor): what a team writes by hand in
// fifty lines, measured in the same run as the library.

// hwTable is the hand-written outbox table: an identity key, the topic,
// key, payload and headers, created_at, published_at, and one index on
// the unpublished rows.
const hwTable = "hw_outbox"

// hwCreate creates hwTable on db (PostgreSQL or MySQL).
func hwCreate(tb testing.TB, db *sql.DB, dialect string) {
	tb.Helper()
	stmts := []string{
		`CREATE TABLE ` + hwTable + ` (
	id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	topic TEXT NOT NULL,
	msg_key TEXT,
	payload JSONB NOT NULL,
	headers JSONB NOT NULL,
	created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
	published_at TIMESTAMPTZ)`,
		`CREATE INDEX ` + hwTable + `_unpublished ON ` + hwTable + ` (id) WHERE published_at IS NULL`,
	}
	if dialect == "mysql" {
		stmts = []string{`CREATE TABLE ` + hwTable + ` (
	id BIGINT AUTO_INCREMENT PRIMARY KEY,
	topic VARCHAR(255) NOT NULL,
	msg_key VARCHAR(255),
	payload JSON NOT NULL,
	headers JSON NOT NULL,
	created_at DATETIME(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
	published_at DATETIME(6) NULL,
	KEY ` + hwTable + `_unpublished (published_at, id))`}
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			tb.Fatalf("%s: %v", s, err)
		}
	}
}

// hwFill writes recs into hwTable, 1,000 rows per INSERT, in one
// transaction.
func hwFill(tb testing.TB, db *sql.DB, dialect string, recs []dialects.Record) {
	tb.Helper()
	tx, err := db.Begin()
	if err != nil {
		tb.Fatal(err)
	}
	hdr := `{"content-type":"application/json","traceparent":"` + rbHeaders["traceparent"] + `"}`
	for len(recs) > 0 {
		n := min(len(recs), 1000)
		var b strings.Builder
		b.WriteString(`INSERT INTO ` + hwTable + ` (topic, msg_key, payload, headers) VALUES `)
		args := make([]any, 0, 4*n)
		for i, r := range recs[:n] {
			if i > 0 {
				b.WriteString(", ")
			}
			if dialect == "mysql" {
				b.WriteString("(?, ?, ?, ?)")
			} else {
				fmt.Fprintf(&b, "($%d, $%d, $%d, $%d)", 4*i+1, 4*i+2, 4*i+3, 4*i+4)
			}
			args = append(args, r.Topic, string(r.Key), string(r.Payload), hdr)
		}
		if _, err := tx.Exec(b.String(), args...); err != nil {
			_ = tx.Rollback()
			tb.Fatal(err)
		}
		recs = recs[n:]
	}
	if err := tx.Commit(); err != nil {
		tb.Fatal(err)
	}
	stmt := `ANALYZE ` + hwTable
	if dialect == "mysql" {
		stmt = `ANALYZE TABLE ` + hwTable
	}
	if _, err := db.Exec(stmt); err != nil {
		tb.Fatal(err)
	}
}

// hwRelay is the simplest ordered hand-written relay, one worker: a
// transaction per batch that locks the oldest 500 unpublished rows (FOR
// UPDATE SKIP LOCKED on PostgreSQL; on MySQL the relay holds a GET_LOCK
// leadership for the whole run instead), writes them with one
// WriteMessages call, marks them and commits.
type hwRelay struct {
	db      *sql.DB
	dialect string
	w       *kafkago.Writer
	topic   string
}

// drain publishes every unpublished row and returns how many.
func (h *hwRelay) drain(ctx context.Context) (int, error) {
	if h.dialect == "mysql" {
		conn, err := h.db.Conn(ctx)
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		var got int
		if err := conn.QueryRowContext(ctx, `SELECT GET_LOCK('hw_outbox_leader', 10)`).Scan(&got); err != nil || got != 1 {
			return 0, fmt.Errorf("leader lock: %d, %v", got, err)
		}
		defer conn.ExecContext(ctx, `SELECT RELEASE_LOCK('hw_outbox_leader')`) //nolint:errcheck
	}
	sel := `SELECT id, msg_key, payload, headers FROM ` + hwTable +
		` WHERE published_at IS NULL ORDER BY id LIMIT ` + strconv.Itoa(rbBatch) + ` FOR UPDATE SKIP LOCKED`
	if h.dialect == "mysql" {
		sel = `SELECT id, msg_key, payload, headers FROM ` + hwTable +
			` WHERE published_at IS NULL ORDER BY id LIMIT ` + strconv.Itoa(rbBatch) + ` FOR UPDATE`
	}
	total := 0
	msgs := make([]kafkago.Message, 0, rbBatch)
	ids := make([]string, 0, rbBatch)
	for {
		tx, err := h.db.BeginTx(ctx, nil)
		if err != nil {
			return total, err
		}
		rows, err := tx.QueryContext(ctx, sel)
		if err != nil {
			_ = tx.Rollback()
			return total, err
		}
		msgs, ids = msgs[:0], ids[:0]
		for rows.Next() {
			var (
				id               int64
				key              sql.NullString
				payload, headers []byte
			)
			if err := rows.Scan(&id, &key, &payload, &headers); err != nil {
				rows.Close()
				_ = tx.Rollback()
				return total, err
			}
			var hm map[string]string
			if err := json.Unmarshal(headers, &hm); err != nil {
				rows.Close()
				_ = tx.Rollback()
				return total, err
			}
			m := kafkago.Message{Topic: h.topic, Value: payload,
				Headers: []kafkago.Header{{Key: "event-id", Value: []byte(strconv.FormatInt(id, 10))}}}
			for k, v := range hm {
				m.Headers = append(m.Headers, kafkago.Header{Key: k, Value: []byte(v)})
			}
			if key.Valid {
				m.Key = []byte(key.String)
			}
			msgs = append(msgs, m)
			ids = append(ids, strconv.FormatInt(id, 10))
		}
		if err := rows.Close(); err != nil {
			_ = tx.Rollback()
			return total, err
		}
		if len(msgs) == 0 {
			_ = tx.Rollback()
			return total, nil
		}
		if err := h.w.WriteMessages(ctx, msgs...); err != nil {
			_ = tx.Rollback()
			return total, err
		}
		mark := `UPDATE ` + hwTable + ` SET published_at = now() WHERE id = ANY('{` + strings.Join(ids, ",") + `}'::bigint[])`
		if h.dialect == "mysql" {
			mark = `UPDATE ` + hwTable + ` SET published_at = NOW(6) WHERE id IN (` + strings.Join(ids, ",") + `)`
		}
		if _, err := tx.ExecContext(ctx, mark); err != nil {
			_ = tx.Rollback()
			return total, err
		}
		if err := tx.Commit(); err != nil {
			return total, err
		}
		total += len(msgs)
	}
}

// BenchmarkRelayVsHandWritten drains a backlog of 100,000 rows (200-byte
// payloads, 100 keys, 8 partitions) with the library's relay at its
// defaults (RelayConfig{}: 2 workers, batch 500), with the same relay with
// Overlap and with DeleteOnPublish, and with the
// simplest ordered hand-written relay (hwRelay, one worker, batch 500, the
// same kafka-go settings), each contender first in turn, and reports the
// rates and the ratios to the hand-written one ("relay/hand",
// "overlap/hand").
func BenchmarkRelayVsHandWritten(b *testing.B) {
	for _, d := range testenv.Dialects() {
		b.Run(d.Name, func(b *testing.B) {
			ctx := context.Background()
			db, p, sqlDB, table := rbOutbox(b, d, gormoutbox.Config{})
			hwCreate(b, sqlDB, d.Name)
			brokers, _ := kafkaenv.Kafka(b, rbPartitions)
			relayTopic, hwTopic := kafkaenv.TopicName("floor-relay"), kafkaenv.TopicName("floor-hand")
			kafkaenv.CreateTopic(b, brokers, relayTopic, rbPartitions)
			kafkaenv.CreateTopic(b, brokers, hwTopic, rbPartitions)

			pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers})
			if err != nil {
				b.Fatal(err)
			}
			defer func() { _ = pub.Close() }()
			relay, err := gormoutbox.NewRelay(db, pub, gormoutbox.RelayConfig{Budget: time.Hour})
			if err != nil {
				b.Fatal(err)
			}
			defer relay.Close()
			// The same relay with the overlapping claim (what it buys).
			serial, err := gormoutbox.NewRelay(db, pub, gormoutbox.RelayConfig{Budget: time.Hour, Overlap: true})
			if err != nil {
				b.Fatal(err)
			}
			defer serial.Close()
			// And with DeleteOnPublish (what marking the rows costs).
			deleting, err := gormoutbox.NewRelay(db, pub, gormoutbox.RelayConfig{Budget: time.Hour, DeleteOnPublish: true})
			if err != nil {
				b.Fatal(err)
			}
			defer deleting.Close()
			tr := &kafkago.Transport{}
			w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Balancer: &kafkago.Murmur2Balancer{},
				RequiredAcks: kafkago.RequireAll, BatchSize: rbBatch, BatchTimeout: kafka.DefaultBatchTimeout, Transport: tr}
			defer func() { _ = w.Close(); tr.CloseIdleConnections() }()
			hand := &hwRelay{db: sqlDB, dialect: d.Name, w: w, topic: hwTopic}

			var (
				tRelay, tSerial, tDelete, tHand time.Duration
				cRelay, cSerial, cDelete, cHand cpuMeter
			)
			drainRelay := func(r *gormoutbox.Relay, t *time.Duration, c *cpuMeter) func() {
				return func() {
					b.StopTimer()
					rbInsert(b, p.Dialect(), sqlDB, table, rbRecords(rbBacklog, relayTopic, time.Now().UTC()))
					rbAnalyze(b, p.Dialect(), sqlDB, table)
					b.StartTimer()
					start := time.Now()
					c.measure(func() {
						published := 0
						for published < rbBacklog {
							res, err := r.Drain(ctx)
							if err != nil {
								b.Fatal(err)
							}
							published += res.Published
						}
					})
					*t += time.Since(start)
				}
			}
			runHand := func() {
				b.StopTimer()
				hwFill(b, sqlDB, d.Name, rbRecords(rbBacklog, hwTopic, time.Now().UTC()))
				b.StartTimer()
				start := time.Now()
				var (
					n   int
					err error
				)
				cHand.measure(func() { n, err = hand.drain(ctx) })
				if err != nil || n != rbBacklog {
					b.Fatalf("hand-written relay: %d published, %v", n, err)
				}
				tHand += time.Since(start)
			}
			// The contenders take turns, each first in one round in turn.
			runs := []func(){drainRelay(relay, &tRelay, &cRelay), runHand, drainRelay(serial, &tSerial, &cSerial),
				drainRelay(deleting, &tDelete, &cDelete)}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				for j := range runs {
					runs[(i+j)%len(runs)]()
				}
			}
			b.StopTimer()
			n := float64(b.N * rbBacklog)
			b.ReportMetric(n/tRelay.Seconds(), "relay-events/s")
			b.ReportMetric(n/tSerial.Seconds(), "overlap-events/s")
			b.ReportMetric(n/tHand.Seconds(), "hand-events/s")
			b.ReportMetric(tHand.Seconds()/tRelay.Seconds(), "relay/hand")
			b.ReportMetric(tHand.Seconds()/tSerial.Seconds(), "overlap/hand")
			b.ReportMetric(n/tDelete.Seconds(), "delete-events/s")
			b.ReportMetric(tHand.Seconds()/tDelete.Seconds(), "delete/hand")
			b.ReportMetric(cDelete.msPer1k(n), "delete-cpu-ms/1k")
			b.ReportMetric(cDelete.selfMsPer1k(n), "delete-go-ms/1k")
			// The machine's CPU: busy share while each ran, and busy
			// milliseconds (database, broker and Go together) per 1,000
			// events.
			b.ReportMetric(cRelay.share(), "relay-cpu-share")
			b.ReportMetric(cSerial.share(), "overlap-cpu-share")
			b.ReportMetric(cHand.share(), "hand-cpu-share")
			b.ReportMetric(cRelay.msPer1k(n), "relay-cpu-ms/1k")
			b.ReportMetric(cSerial.msPer1k(n), "overlap-cpu-ms/1k")
			b.ReportMetric(cHand.msPer1k(n), "hand-cpu-ms/1k")
			// Of which this process (relay or hand-written loop, kafka-go,
			// and the in-process kfake broker): the rest is the database.
			b.ReportMetric(cRelay.selfMsPer1k(n), "relay-go-ms/1k")
			b.ReportMetric(cSerial.selfMsPer1k(n), "overlap-go-ms/1k")
			b.ReportMetric(cHand.selfMsPer1k(n), "hand-go-ms/1k")
		})
	}
}

// FloorItem is the entity of the capture baselines, an event source keyed
// by its primary key (the default).
type FloorItem struct {
	gormoutbox.Source `outbox:"topic:floor-items"`
	ID                uint   `gorm:"primaryKey"`
	SKU               string `gorm:"size:64"`
	Quantity          int
	CreatedAt         time.Time
	UpdatedAt         time.Time
}

// FloorPlainItem is the same entity, not tagged: what the hand-written
// outbox writes beside.
type FloorPlainItem struct {
	ID        uint   `gorm:"primaryKey"`
	SKU       string `gorm:"size:64"`
	Quantity  int
	CreatedAt time.Time
	UpdatedAt time.Time
}

// HwOutbox is a row of the hand-written outbox table (hwTable).
type HwOutbox struct {
	ID          int64 `gorm:"primaryKey"`
	Topic       string
	MsgKey      string
	Payload     string
	Headers     string
	CreatedAt   time.Time
	PublishedAt *time.Time
}

// TableName implements GORM's Tabler.
func (HwOutbox) TableName() string { return hwTable }

// BenchmarkCaptureVsHandWritten compares, with 4 writers, a GORM create of
// 1 or 100 rows per transaction with the plugin (the library's defaults:
// on PostgreSQL the NOTIFY trigger on) against the same create of an
// untagged model plus a GORM Create of hand-written outbox rows (the
// entity as JSON) in the same transaction. Blocks of 200 transactions
// alternate; reported: transactions per second of each and
// "plugin/hand" (≥ 1 is as cheap or cheaper).
func BenchmarkCaptureVsHandWritten(b *testing.B) {
	for _, d := range testenv.Dialects() {
		b.Run(d.Name, func(b *testing.B) {
			db := benchDBWith(b, d, gormoutbox.Config{})
			if err := db.AutoMigrate(&FloorItem{}, &FloorPlainItem{}); err != nil {
				b.Fatal(err)
			}
			sqlDB, err := db.DB()
			if err != nil {
				b.Fatal(err)
			}
			hwCreate(b, sqlDB, d.Name)
			for _, q := range strings.Split(os.Getenv("OUTBOX_BENCH_SQL_"+d.Name), ";;") {
				if strings.TrimSpace(q) == "" {
					continue
				}
				if _, err := sqlDB.Exec(q); err != nil {
					b.Fatalf("%s: %v", q, err)
				}
			}
			sqlDB.SetMaxIdleConns(8)
			if d.Name == "postgres" && os.Getenv("OUTBOX_BENCH_LISTEN") != "" {
				// A relay process listening (pgxlisten leads and arms): the
				// writers' side of the wake-ups, with someone to wake.
				r, err := gormoutbox.NewRelay(db, &slowPublisher{}, gormoutbox.RelayConfig{})
				if err != nil {
					b.Fatal(err)
				}
				var woken atomic.Int64
				ctx, stop := context.WithCancel(context.Background())
				done := make(chan struct{})
				go func() { defer close(done); _ = r.ListenWith(ctx, func() { woken.Add(1) }, pgListen("")) }()
				defer func() { stop(); <-done; b.Logf("listener woken %d times", woken.Load()) }()
				time.Sleep(200 * time.Millisecond)
			}
			for _, size := range []int{1, 100} {
				b.Run(fmt.Sprintf("rows=%d", size), func(b *testing.B) {
					plugin := func(w, i int) error {
						rows := make([]FloorItem, size)
						for j := range rows {
							rows[j] = FloorItem{SKU: fmt.Sprint("sku-", w, "-", i, "-", j), Quantity: j}
						}
						return db.Create(&rows).Error
					}
					hand := func(w, i int) error {
						return db.Transaction(func(tx *gorm.DB) error {
							rows := make([]FloorPlainItem, size)
							for j := range rows {
								rows[j] = FloorPlainItem{SKU: fmt.Sprint("sku-", w, "-", i, "-", j), Quantity: j}
							}
							if err := tx.Create(&rows).Error; err != nil {
								return err
							}
							out := make([]HwOutbox, size)
							for j := range rows {
								p, err := json.Marshal(&rows[j])
								if err != nil {
									return err
								}
								out[j] = HwOutbox{Topic: "floor-items", MsgKey: strconv.FormatUint(uint64(rows[j].ID), 10),
									Payload: string(p), Headers: `{"content-type":"application/json"}`}
							}
							return tx.Create(&out).Error
						})
					}
					const writers, block = 4, 200
					run := func(f func(w, i int) error, base int) time.Duration {
						start := time.Now()
						errs := make(chan error, writers)
						for w := 0; w < writers; w++ {
							go func() {
								for i := 0; i < block/writers; i++ {
									if err := f(w, base+i); err != nil {
										errs <- err
										return
									}
								}
								errs <- nil
							}()
						}
						for w := 0; w < writers; w++ {
							if err := <-errs; err != nil {
								b.Fatal(err)
							}
						}
						return time.Since(start)
					}
					run(plugin, -1_000_000) // warm both
					run(hand, -1_000_000)
					var tPlugin, tHand time.Duration
					ratios := make([]float64, 0, b.N)
					b.ResetTimer()
					for i := 0; i < b.N; i++ {
						var p, h time.Duration
						if i%2 == 0 {
							p = run(plugin, i*block)
							h = run(hand, i*block)
						} else {
							h = run(hand, i*block)
							p = run(plugin, i*block)
						}
						tPlugin += p
						tHand += h
						ratios = append(ratios, h.Seconds()/p.Seconds())
					}
					b.StopTimer()
					slices.Sort(ratios)
					b.ReportMetric(ratios[len(ratios)/2], "median-plugin/hand")
					n := float64(b.N * block)
					b.ReportMetric(n/tPlugin.Seconds(), "plugin-tx/s")
					b.ReportMetric(n/tHand.Seconds(), "hand-tx/s")
					b.ReportMetric(tHand.Seconds()/tPlugin.Seconds(), "plugin/hand")
				})
			}
		})
	}
}
