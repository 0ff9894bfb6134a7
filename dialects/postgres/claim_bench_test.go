package postgres

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/internal/testenv"
)

// BenchmarkClaimStatement times the claim statement alone on a 100k-row
// backlog (100 keys, 16 shards, 200-byte payloads), 500 rows per claim,
// each claim rolled back, against variants of it, interleaved: every row
// probed (the guard before the per-key probe), no dead-key probe, no bytes
// cut, and the locking scan alone with the claim's 19 columns and with the
// hand-written relay's 4. Reported: ms per claim of each (docs/benchmarks.md,
// "Where a PostgreSQL batch's time goes").
func BenchmarkClaimStatement(b *testing.B) {
	ctx := context.Background()
	db, err := testenv.OpenPostgres(b, nil).DB()
	if err != nil {
		b.Fatal(err)
	}
	d, t := New(), dialects.Table{Name: "outbox"}
	if err := d.Migrate(ctx, db, t); err != nil {
		b.Fatal(err)
	}
	if _, err := db.Exec(`INSERT INTO outbox (event_id, topic, msg_key, event_type, payload, headers, shard, available_at, created_at)
SELECT gen_random_uuid(), 't', convert_to('key-' || (i % 100), 'UTF8'), 'e', convert_to(repeat('x', 200), 'UTF8'),
	'{"content-type":"application/json","traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}',
	i % 16, $1, $1
FROM generate_series(1, 100000) i`, time.Now().Add(-time.Second).UTC()); err != nil {
		b.Fatal(err)
	}
	if _, err := db.Exec(`VACUUM ANALYZE outbox`); err != nil {
		b.Fatal(err)
	}
	built := claimSQL(d, t, dialects.ClaimOptions{MaxBytes: 16 << 20})
	every := strings.Replace(built, `WHERE (k.lid IS NULL OR g.gap)`, `WHERE true`, 1)
	every = strings.ReplaceAll(every, `CASE WHEN k.lid IS NOT NULL AND NOT g.gap THEN k.lid ELSE pv.id END`, `pv.id`)
	every = strings.ReplaceAll(every, `CASE WHEN k.lid IS NOT NULL AND NOT g.gap THEN k.lav ELSE pv.available_at END`, `pv.available_at`)
	scan := `SELECT %s FROM outbox WHERE published_at IS NULL AND dead_at IS NULL AND available_at <= $1
	AND $3::timestamptz IS NOT NULL ORDER BY available_at, id LIMIT $2 FOR UPDATE SKIP LOCKED`
	variants := []struct{ name, sql string }{
		{"as-built", built},
		{"probe-every-row", every},
		{"no-dead-probe", claimSQL(d, t, dialects.ClaimOptions{MaxBytes: 16 << 20, SkipDeadKeys: true})},
		{"no-bytes-cut", claimSQL(d, t, dialects.ClaimOptions{})},
		{"scan-19-columns", strings.Replace(scan, "%s", "id, event_id, topic, msg_key, event_type, aggregate_type, "+
			"aggregate_id, payload, headers, shard, attempts, available_at, created_at, last_error, published_at, "+
			"dead_at, process_attempts, failed_at, seq", 1)},
		{"scan-4-columns", strings.Replace(scan, "%s", "id, msg_key, payload, headers", 1)},
	}
	total := make([]time.Duration, len(variants))
	run := func(i int) time.Duration {
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = tx.Rollback() }()
		start := time.Now()
		now := time.Now().UTC()
		args := []any{now, 500, now}
		if strings.Count(variants[i].sql, "$3") == 0 {
			args = args[:2]
		}
		rows, err := tx.QueryContext(ctx, variants[i].sql, args...)
		if err != nil {
			b.Fatalf("%s: %v", variants[i].name, err)
		}
		n := 0
		for rows.Next() {
			n++
		}
		if err := rows.Close(); err != nil || n != 500 {
			b.Fatalf("%s: %d rows, %v", variants[i].name, n, err)
		}
		return time.Since(start)
	}
	for i := range variants { // warm
		run(i)
		run(i)
	}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		for j := range variants {
			i := (n + j) % len(variants)
			total[i] += run(i)
		}
	}
	b.StopTimer()
	for i, v := range variants {
		b.ReportMetric(total[i].Seconds()*1000/float64(b.N), v.name+"-ms")
	}
	b.ReportMetric(0, "ns/op")
}
