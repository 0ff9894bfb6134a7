package integration

import (
	"fmt"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// BenchInventory is the tagged model of the capture benchmark.
type BenchInventory struct {
	gormoutbox.Source `outbox:"topic:inventory"`
	ID                uint   `gorm:"primaryKey"`
	SKU               string `gorm:"size:64" outbox:"key"`
	Quantity          int
	CostPrice         int `outbox:"-"`
	CreatedAt         time.Time
	UpdatedAt         time.Time
}

// BenchPlainInventory is the same model, untagged.
type BenchPlainInventory struct {
	ID        uint   `gorm:"primaryKey"`
	SKU       string `gorm:"size:64"`
	Quantity  int
	CostPrice int
	CreatedAt time.Time
	UpdatedAt time.Time
}

// BenchmarkCaptureOverhead compares, in one run, GORM writes of a tagged
// model (entity + outbox rows in one transaction) with the same writes of
// an untagged model. Iterations alternate between the two so that drift in
// the server's speed hits both alike. Reported: ns per write of each and
// their ratio (tagged ÷ untagged).
func BenchmarkCaptureOverhead(b *testing.B) {
	for _, d := range testenv.Dialects() {
		b.Run(d.Name, func(b *testing.B) {
			db := benchDB(b, d)
			for _, size := range []int{1, 100} {
				b.Run(fmt.Sprintf("rows=%d", size), func(b *testing.B) {
					benchPair(b, db, size)
				})
			}
		})
	}
}

func benchPair(b *testing.B, db *gorm.DB, size int) {
	tagged := func(i int) error {
		if size == 1 {
			return db.Create(&BenchInventory{SKU: fmt.Sprint("sku-", i), Quantity: i, CostPrice: 1}).Error
		}
		rows := make([]BenchInventory, size)
		for j := range rows {
			rows[j] = BenchInventory{SKU: fmt.Sprint("sku-", i, "-", j), Quantity: j, CostPrice: 1}
		}
		return db.Create(&rows).Error
	}
	plain := func(i int) error {
		if size == 1 {
			return db.Create(&BenchPlainInventory{SKU: fmt.Sprint("sku-", i), Quantity: i, CostPrice: 1}).Error
		}
		rows := make([]BenchPlainInventory, size)
		for j := range rows {
			rows[j] = BenchPlainInventory{SKU: fmt.Sprint("sku-", i, "-", j), Quantity: j, CostPrice: 1}
		}
		return db.Create(&rows).Error
	}
	benchAlternate(b, tagged, plain)
}

// benchAlternate times tagged and plain writes, alternating, and reports
// their ratio.
func benchAlternate(b *testing.B, tagged, plain func(i int) error) {
	// Warm both paths (connections, prepared statements, schema caches).
	for i := 0; i < 20; i++ {
		if err := tagged(-i); err != nil {
			b.Fatal(err)
		}
		if err := plain(-i); err != nil {
			b.Fatal(err)
		}
	}
	var tTagged, tPlain time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s := time.Now()
		if err := plain(i); err != nil {
			b.Fatal(err)
		}
		m := time.Now()
		if err := tagged(i); err != nil {
			b.Fatal(err)
		}
		tPlain += m.Sub(s)
		tTagged += time.Since(m)
	}
	b.StopTimer()
	b.ReportMetric(float64(tPlain.Nanoseconds())/float64(b.N), "untagged-ns/op")
	b.ReportMetric(float64(tTagged.Nanoseconds())/float64(b.N), "tagged-ns/op")
	b.ReportMetric(float64(tTagged)/float64(tPlain), "tagged/untagged")
}

// benchDB opens a database of d with the plugin, the outbox and both
// benchmark tables.
func benchDB(b testing.TB, d testenv.Dialect) *gorm.DB {
	b.Helper()
	db := benchDBWith(b, d, gormoutbox.Config{})
	if err := db.AutoMigrate(&BenchPlainInventory{}); err != nil {
		b.Fatal(err)
	}
	return db
}

// benchDBWith opens a database of d with the plugin configured by cfg, the
// outbox and the tagged benchmark table.
func benchDBWith(b testing.TB, d testenv.Dialect, cfg gormoutbox.Config) *gorm.DB {
	b.Helper()
	db, _, _, _ := rbOutbox(b, d, cfg)
	if err := db.AutoMigrate(&BenchInventory{}); err != nil {
		b.Fatal(err)
	}
	return db
}

// BenchmarkCapturePaths compares tagged and untagged writes on the paths
// that need reads around the write: an update by condition of 100 rows, an
// update with a gorm.Expr of one loaded row, and an upsert (UPDATE ALL on
// the primary key) of 100 existing rows.
func BenchmarkCapturePaths(b *testing.B) {
	for _, d := range testenv.Dialects() {
		b.Run(d.Name, func(b *testing.B) {
			db := benchDB(b, d)
			tRows := make([]BenchInventory, 100)
			pRows := make([]BenchPlainInventory, 100)
			for j := range tRows {
				tRows[j] = BenchInventory{SKU: fmt.Sprint("cond-", j), Quantity: j}
				pRows[j] = BenchPlainInventory{SKU: fmt.Sprint("cond-", j), Quantity: j}
			}
			if err := db.Create(&tRows).Error; err != nil {
				b.Fatal(err)
			}
			if err := db.Create(&pRows).Error; err != nil {
				b.Fatal(err)
			}
			b.Run("updates-by-condition-100", func(b *testing.B) {
				benchAlternate(b, func(int) error {
					return db.Model(&BenchInventory{}).Where("sku LIKE ?", "cond-%").
						Updates(map[string]any{"quantity": gorm.Expr("quantity + 1")}).Error
				}, func(int) error {
					return db.Model(&BenchPlainInventory{}).Where("sku LIKE ?", "cond-%").
						Updates(map[string]any{"quantity": gorm.Expr("quantity + 1")}).Error
				})
			})
			b.Run("update-expr-1", func(b *testing.B) {
				benchAlternate(b, func(int) error {
					return db.Model(&tRows[0]).Update("quantity", gorm.Expr("quantity - ?", 1)).Error
				}, func(int) error {
					return db.Model(&pRows[0]).Update("quantity", gorm.Expr("quantity - ?", 1)).Error
				})
			})
			b.Run("upsert-100", func(b *testing.B) {
				benchAlternate(b, func(i int) error {
					for j := range tRows {
						tRows[j].Quantity = i + j
					}
					return db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&tRows).Error
				}, func(i int) error {
					for j := range pRows {
						pRows[j].Quantity = i + j
					}
					return db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&pRows).Error
				})
			})
		})
	}
}

// BenchmarkCaptureMapPaths compares tagged and untagged writes on the
// paths GORM builds from maps: a create of 100 rows from maps (a pointer
// to the slice, which takes the generated keys on every database) and an
// update of one row through the generics API, with the same update by
// condition without it (where-update-1) beside it. Compare with rows=100
// of BenchmarkCaptureOverhead and update-expr-1 of BenchmarkCapturePaths.
func BenchmarkCaptureMapPaths(b *testing.B) {
	for _, d := range testenv.Dialects() {
		b.Run(d.Name, func(b *testing.B) {
			db := benchDB(b, d)
			maps := func(i int) *[]map[string]any {
				rows := make([]map[string]any, 100)
				for j := range rows {
					rows[j] = map[string]any{"sku": fmt.Sprint("map-", i, "-", j), "quantity": j, "cost_price": 1}
				}
				return &rows
			}
			b.Run("map-create-100", func(b *testing.B) {
				benchAlternate(b, func(i int) error {
					return db.Model(&BenchInventory{}).Create(maps(i)).Error
				}, func(i int) error {
					return db.Model(&BenchPlainInventory{}).Create(maps(i)).Error
				})
			})
			t, p := BenchInventory{SKU: "g"}, BenchPlainInventory{SKU: "g"}
			if err := db.Create(&t).Error; err != nil {
				b.Fatal(err)
			}
			if err := db.Create(&p).Error; err != nil {
				b.Fatal(err)
			}
			ctx := b.Context()
			b.Run("where-update-1", func(b *testing.B) {
				benchAlternate(b, func(i int) error {
					return db.Model(&BenchInventory{}).Where("id = ?", t.ID).Update("quantity", i).Error
				}, func(i int) error {
					return db.Model(&BenchPlainInventory{}).Where("id = ?", p.ID).Update("quantity", i).Error
				})
			})
			b.Run("generics-update-1", func(b *testing.B) {
				benchAlternate(b, func(i int) error {
					_, err := gorm.G[BenchInventory](db).Where("id = ?", t.ID).Update(ctx, "quantity", i)
					return err
				}, func(i int) error {
					_, err := gorm.G[BenchPlainInventory](db).Where("id = ?", p.ID).Update(ctx, "quantity", i)
					return err
				})
			})
		})
	}
}
