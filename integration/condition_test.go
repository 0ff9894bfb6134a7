package integration

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// Updates and deletes by condition: one event per affected row, with the
// row as committed (after an update, before a hard delete), in primary-key
// order; rows the condition does not match get none.
func TestCaptureByCondition(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{}, &SoftItem{})
		items := []Inventory{{SKU: "a", Quantity: 5}, {SKU: "b", Quantity: 0}, {SKU: "c", Quantity: 9}, {SKU: "d", Quantity: 2}}
		if err := db.Create(&items).Error; err != nil {
			t.Fatal(err)
		}
		base := len(readOutbox(t, db, ""))
		step := func(name string, f func() *gorm.DB, wantAffected int64, wants ...want) {
			t.Helper()
			res := f()
			if res.Error != nil {
				t.Fatalf("%s: %v", name, res.Error)
			}
			if res.RowsAffected != wantAffected {
				t.Fatalf("%s: %d rows affected, want %d", name, res.RowsAffected, wantAffected)
			}
			rows := readOutbox(t, db, "")
			checkRows(t, rows[base:], wants...)
			base = len(rows)
		}
		step("Where.Update(Expr)", func() *gorm.DB {
			return db.Model(&Inventory{}).Where("quantity > ?", 1).Update("quantity", gorm.Expr("quantity - ?", 1))
		}, 3,
			want{Type: "InventoryUpdated", Key: "a", Payload: map[string]any{"Quantity": 4}, Absent: []string{"CostPrice"}},
			want{Type: "InventoryUpdated", Key: "c", Payload: map[string]any{"Quantity": 8}},
			want{Type: "InventoryUpdated", Key: "d", Payload: map[string]any{"Quantity": 1}})
		step("Where.Updates(map)", func() *gorm.DB {
			return db.Model(&Inventory{}).Where("sku IN ?", []string{"b", "c"}).Updates(map[string]any{"note": "x", "quantity": 3})
		}, 2,
			want{Type: "InventoryUpdated", Key: "b", Payload: map[string]any{"Quantity": 3, "Note": "x"}},
			want{Type: "InventoryUpdated", Key: "c", Payload: map[string]any{"Quantity": 3, "Note": "x"}})
		step("Model(entity).Where.Update", func() *gorm.DB {
			return db.Model(&items[0]).Where("quantity > ?", 100).Update("quantity", 0)
		}, 0)
		step("Where matching nothing", func() *gorm.DB {
			return db.Model(&Inventory{}).Where("sku = ?", "nope").Update("quantity", 1)
		}, 0)
		step("Delete(&M{}, id)", func() *gorm.DB { return db.Delete(&Inventory{}, items[1].ID) }, 1,
			want{Type: "InventoryDeleted", Key: "b", Payload: map[string]any{"Quantity": 3}})
		step("Where.Delete", func() *gorm.DB { return db.Where("quantity < ?", 4).Delete(&Inventory{}) }, 2,
			want{Type: "InventoryDeleted", Key: "c"},
			want{Type: "InventoryDeleted", Key: "d"})
		extra := []Inventory{{SKU: "e1"}, {SKU: "e2"}, {SKU: "e3"}}
		if err := db.Create(&extra).Error; err != nil {
			t.Fatal(err)
		}
		base = len(readOutbox(t, db, ""))
		step("Delete(&M{}, []ids)", func() *gorm.DB { return db.Delete(&Inventory{}, []uint{extra[2].ID, extra[0].ID}) }, 2,
			want{Type: "InventoryDeleted", Key: "e1"}, want{Type: "InventoryDeleted", Key: "e3"})
		step("Where.Updates(struct)", func() *gorm.DB {
			return db.Model(&Inventory{}).Where("sku = ?", "e2").Updates(Inventory{Quantity: 11, Note: "s"})
		}, 1, want{Type: "InventoryUpdated", Key: "e2", Payload: map[string]any{"Quantity": 11, "Note": "s"}})
		if err := db.Delete(&extra[1]).Error; err != nil {
			t.Fatal(err)
		}
		base = len(readOutbox(t, db, ""))
		step("GlobalUpdate", func() *gorm.DB {
			return db.Session(&gorm.Session{AllowGlobalUpdate: true}).Model(&Inventory{}).Update("quantity", 7)
		}, 1, want{Type: "InventoryUpdated", Key: "a", Payload: map[string]any{"Quantity": 7}})

		// Soft-delete model: soft delete by condition skips rows already
		// deleted; Unscoped deletes by condition purge.
		soft := []SoftItem{{Name: "x"}, {Name: "y"}, {Name: "z"}}
		if err := db.Create(&soft).Error; err != nil {
			t.Fatal(err)
		}
		base = len(readOutbox(t, db, ""))
		step("soft Delete by id", func() *gorm.DB { return db.Delete(&SoftItem{}, soft[0].ID) }, 1,
			want{Type: "SoftItemDeleted"})
		step("soft Where.Delete", func() *gorm.DB { return db.Where("name IN ?", []string{"x", "y"}).Delete(&SoftItem{}) }, 1,
			want{Type: "SoftItemDeleted", Payload: map[string]any{"Name": "y"}})
		step("soft Where.Update skips deleted", func() *gorm.DB {
			return db.Model(&SoftItem{}).Where("name <> ?", "").Update("name", "w")
		}, 1, want{Type: "SoftItemUpdated", Payload: map[string]any{"Name": "w"}})
		step("Unscoped Where.Delete", func() *gorm.DB { return db.Unscoped().Where("1 = 1").Delete(&SoftItem{}) }, 3,
			want{Type: "SoftItemPurged"}, want{Type: "SoftItemPurged"}, want{Type: "SoftItemPurged"})

		// A rolled-back transaction leaves no event.
		before := len(readOutbox(t, db, ""))
		_ = db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Model(&Inventory{}).Where("1 = 1").Update("quantity", 1).Error; err != nil {
				return err
			}
			return gorm.ErrInvalidTransaction
		})
		if n := len(readOutbox(t, db, "")); n != before {
			t.Fatalf("rolled back: %d outbox rows, want %d", n, before)
		}
	})
}

// A write by condition that matches more rows than the plugin will lock
// and read is refused, and changes nothing.
func TestCaptureByConditionTooManyRows(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Plain{}, &CreateOnly{}, &Inventory{})
		rows := make([]Inventory, gormoutbox.MaxConditionRows+1)
		for i := range rows {
			rows[i] = Inventory{SKU: "s" + strconv.Itoa(i), Quantity: 1}
		}
		if err := db.Clauses(gormoutbox.Skip("fixture")).CreateInBatches(&rows, 2000).Error; err != nil {
			t.Fatal(err)
		}
		err := db.Model(&Inventory{}).Where("quantity = ?", 1).Update("quantity", 2).Error
		if !errors.Is(err, gormoutbox.ErrUncapturedWrite) || !strings.Contains(err.Error(), "split") {
			t.Fatalf("update of %d rows by condition: %v; want ErrUncapturedWrite saying to split it", len(rows), err)
		}
		var n int64
		db.Model(&Inventory{}).Where("quantity = ?", 2).Count(&n)
		if n != 0 || len(readOutbox(t, db, "")) != 0 {
			t.Fatalf("refused write changed %d rows / wrote events", n)
		}
	})
}
