package integration

import (
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// BenchCondItem is BenchInventory keyed by its primary key (the default):
// its events need no key locks (dialects.Record.LockKey).
type BenchCondItem struct {
	gormoutbox.Source `outbox:"topic:inventory"`
	ID                uint   `gorm:"primaryKey"`
	SKU               string `gorm:"size:64"`
	Quantity          int
	CostPrice         int `outbox:"-"`
	CreatedAt         time.Time
	UpdatedAt         time.Time
}

// BenchmarkCaptureByCondition measures the writes by condition of "5 of
// 5": an update by condition of 100 rows (Where(...).Updates(map) with a
// gorm.Expr) and an upsert (OnConflict{UpdateAll}) of 100 existing rows,
// four ways in one run, iteration by iteration in rotating order: the
// untagged write; the tagged write of BenchCondItem (keyed by its primary
// key, the default); the tagged write of BenchInventory (keyed by its SKU,
// which is not unique, so that the outbox insert first locks the 100 keys,
// as in BenchmarkCapturePaths); and the untagged write plus a
// hand-written outbox (the rows as written — by RETURNING on PostgreSQL's
// update, a re-read on MariaDB's — inserted as JSON into hwTable in the
// same transaction). Reported: ns per write of each and its ratio to the
// untagged write: "tagged/untagged" (the target), "tagged-skukey/untagged"
// and "hand/untagged" (what the simplest hand-written outbox costs).
func BenchmarkCaptureByCondition(b *testing.B) {
	for _, d := range testenv.Dialects() {
		b.Run(d.Name, func(b *testing.B) {
			db := benchDB(b, d)
			sqlDB, err := db.DB()
			if err != nil {
				b.Fatal(err)
			}
			hwCreate(b, sqlDB, d.Name)
			if err := db.AutoMigrate(&BenchCondItem{}); err != nil {
				b.Fatal(err)
			}
			tRows := make([]BenchInventory, 100)
			kRows := make([]BenchCondItem, 100)
			pRows := make([]BenchPlainInventory, 100)
			for j := range tRows {
				tRows[j] = BenchInventory{SKU: fmt.Sprint("cond-", j), Quantity: j}
				kRows[j] = BenchCondItem{SKU: fmt.Sprint("cond-", j), Quantity: j}
				pRows[j] = BenchPlainInventory{SKU: fmt.Sprint("cond-", j), Quantity: j}
			}
			if err := db.Create(&tRows).Error; err != nil {
				b.Fatal(err)
			}
			if err := db.Create(&kRows).Error; err != nil {
				b.Fatal(err)
			}
			if err := db.Create(&pRows).Error; err != nil {
				b.Fatal(err)
			}
			hwWrite := func(tx *gorm.DB, rows []BenchPlainInventory) error {
				out := make([]HwOutbox, len(rows))
				for j := range rows {
					p, err := json.Marshal(&rows[j])
					if err != nil {
						return err
					}
					out[j] = HwOutbox{Topic: "inventory", MsgKey: strconv.FormatUint(uint64(rows[j].ID), 10),
						Payload: string(p), Headers: `{"content-type":"application/json"}`}
				}
				return tx.Create(&out).Error
			}
			set := map[string]any{"quantity": gorm.Expr("quantity + 1")}
			b.Run("update-100", func(b *testing.B) {
				benchByCondition(b, func(int) error {
					return db.Model(&BenchPlainInventory{}).Where("sku LIKE ?", "cond-%").Updates(set).Error
				}, func(int) error {
					return db.Model(&BenchCondItem{}).Where("sku LIKE ?", "cond-%").Updates(set).Error
				}, func(int) error {
					return db.Model(&BenchInventory{}).Where("sku LIKE ?", "cond-%").Updates(set).Error
				}, func(int) error {
					return db.Transaction(func(tx *gorm.DB) error {
						var rows []BenchPlainInventory
						if d.Name == "postgres" {
							if err := tx.Model(&rows).Clauses(clause.Returning{}).Where("sku LIKE ?", "cond-%").Updates(set).Error; err != nil {
								return err
							}
						} else {
							if err := tx.Model(&BenchPlainInventory{}).Where("sku LIKE ?", "cond-%").Updates(set).Error; err != nil {
								return err
							}
							if err := tx.Where("sku LIKE ?", "cond-%").Find(&rows).Error; err != nil {
								return err
							}
						}
						return hwWrite(tx, rows)
					})
				})
			})
			b.Run("upsert-100", func(b *testing.B) {
				upsert := clause.OnConflict{UpdateAll: true}
				benchByCondition(b, func(i int) error {
					for j := range pRows {
						pRows[j].Quantity = i + j
					}
					return db.Clauses(upsert).Create(&pRows).Error
				}, func(i int) error {
					for j := range kRows {
						kRows[j].Quantity = i + j
					}
					return db.Clauses(upsert).Create(&kRows).Error
				}, func(i int) error {
					for j := range tRows {
						tRows[j].Quantity = i + j
					}
					return db.Clauses(upsert).Create(&tRows).Error
				}, func(i int) error {
					return db.Transaction(func(tx *gorm.DB) error {
						for j := range pRows {
							pRows[j].Quantity = i + j
						}
						if err := tx.Clauses(upsert).Create(&pRows).Error; err != nil {
							return err
						}
						return hwWrite(tx, pRows)
					})
				})
			})
		})
	}
}

// benchByCondition times the untagged write, the two tagged ones and the
// hand-written outbox, interleaved (the order rotates each iteration so
// that none always follows another), and reports each and its ratio to
// the untagged write.
func benchByCondition(b *testing.B, plain, tagged, taggedSKU, hand func(i int) error) {
	fs := []func(int) error{plain, tagged, taggedSKU, hand}
	names := []string{"untagged", "tagged", "tagged-skukey", "hand"}
	for i := 0; i < 20; i++ { // warm every path
		for _, f := range fs {
			if err := f(-i); err != nil {
				b.Fatal(err)
			}
		}
	}
	took := make([]time.Duration, len(fs))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		for k := range fs {
			j := (i + k) % len(fs)
			s := time.Now()
			if err := fs[j](i); err != nil {
				b.Fatal(err)
			}
			took[j] += time.Since(s)
		}
	}
	b.StopTimer()
	for j, name := range names {
		b.ReportMetric(float64(took[j].Nanoseconds())/float64(b.N), name+"-ns/op")
		if j > 0 {
			b.ReportMetric(float64(took[j])/float64(took[0]), name+"/untagged")
		}
	}
}
