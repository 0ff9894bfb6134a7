package integration

import (
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// BenchmarkCaptureSequence measures what the per-key numbers (x-sequence)
// cost a captured create: the same tagged create, alternating, on two
// databases of one server — one with the default plugin, one with
// Config.DisableSequence — for 1 and 100 rows per statement, and an
// explicit event of one key per transaction (the counter row updated, not
// created). It reports both times and their ratio, "seq/noseq".
func BenchmarkCaptureSequence(b *testing.B) {
	for _, d := range testenv.Dialects() {
		b.Run(d.Name, func(b *testing.B) {
			seq := benchDBWith(b, d, gormoutbox.Config{})
			noseq := benchDBWith(b, d, gormoutbox.Config{DisableSequence: true})
			for _, size := range []int{1, 100} {
				b.Run(fmt.Sprintf("rows=%d", size), func(b *testing.B) {
					create := func(db *gorm.DB) func(i int) error {
						return func(i int) error {
							rows := make([]BenchInventory, size)
							for j := range rows {
								rows[j] = BenchInventory{SKU: fmt.Sprint("sku-", i, "-", j), Quantity: j, CostPrice: 1}
							}
							return db.Create(&rows).Error
						}
					}
					benchAB(b, "seq", create(seq), "noseq", create(noseq))
				})
			}
			b.Run("event-one-key", func(b *testing.B) {
				publish := func(db *gorm.DB) func(i int) error {
					return func(i int) error {
						return db.Transaction(func(tx *gorm.DB) error {
							return gormoutbox.Publish(tx, gormoutbox.Event{Topic: "orders", Key: "o-1", Type: "Noted", Payload: i})
						})
					}
				}
				benchAB(b, "seq", publish(seq), "noseq", publish(noseq))
			})
		})
	}
}

// benchDBWith is benchDB with the plugin configured by cfg.
func benchDBWith(b testing.TB, d testenv.Dialect, cfg gormoutbox.Config) *gorm.DB {
	b.Helper()
	db := d.Open(b, nil)
	p := gormoutbox.New(cfg)
	if err := db.Use(p); err != nil {
		b.Fatal(err)
	}
	if err := p.Migrate(b.Context()); err != nil {
		b.Fatal(err)
	}
	if err := db.AutoMigrate(&BenchInventory{}); err != nil {
		b.Fatal(err)
	}
	return db
}

// benchAB times fa and fb, alternating which goes first, and reports
// their times per op and the ratio a/b.
func benchAB(b *testing.B, a string, fa func(int) error, bn string, fb func(int) error) {
	for i := 0; i < 20; i++ { // warm both
		if err := fa(-i - 1); err != nil {
			b.Fatal(err)
		}
		if err := fb(-i - 1); err != nil {
			b.Fatal(err)
		}
	}
	var ta, tb time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		first, second, t1, t2 := fa, fb, &ta, &tb
		if i%2 == 1 {
			first, second, t1, t2 = fb, fa, &tb, &ta
		}
		s := time.Now()
		if err := first(i); err != nil {
			b.Fatal(err)
		}
		m := time.Now()
		if err := second(i); err != nil {
			b.Fatal(err)
		}
		*t1 += m.Sub(s)
		*t2 += time.Since(m)
	}
	b.StopTimer()
	b.ReportMetric(float64(ta.Nanoseconds())/float64(b.N), a+"-ns/op")
	b.ReportMetric(float64(tb.Nanoseconds())/float64(b.N), bn+"-ns/op")
	b.ReportMetric(float64(ta)/float64(tb), a+"/"+bn)
}
