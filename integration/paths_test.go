package integration

import (
	"errors"
	"fmt"
	"strconv"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// Hooked changes fields in its hooks: the payload shows the final values.
type Hooked struct {
	gormoutbox.Source `outbox:"topic:hooked"`
	ID                uint `gorm:"primaryKey"`
	Name              string
	Stage             string
}

func (h *Hooked) BeforeCreate(*gorm.DB) error { h.Stage = "created-by-hook"; return nil }
func (h *Hooked) BeforeUpdate(tx *gorm.DB) error {
	tx.Statement.SetColumn("Stage", "updated-by-hook")
	return nil
}

// The other write paths of GORM: batches, column updates, Select/Omit,
// hooks that change fields, SkipHooks.
func TestCaptureOtherPaths(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{}, &Hooked{})
		base := 0
		step := func(name string, err error, n int, wants ...want) []outboxRow {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			rows := readOutbox(t, db, "")
			got := rows[base:]
			base = len(rows)
			if n >= 0 && len(got) != n {
				t.Fatalf("%s: %d events, want %d", name, len(got), n)
			}
			if len(wants) > 0 {
				checkRows(t, got, wants...)
			}
			return got
		}
		batch := make([]Inventory, 1000)
		for i := range batch {
			batch[i] = Inventory{SKU: "b" + strconv.Itoa(i), Quantity: i}
		}
		got := step("Create 1000", db.Create(&batch).Error, 1000)
		for i, r := range got {
			if deref(r.Key) != batch[i].SKU || r.AggregateID != strconv.Itoa(int(batch[i].ID)) {
				t.Fatalf("event %d: key %s aggregate %s, want %s/%d (statement order)", i, deref(r.Key), r.AggregateID, batch[i].SKU, batch[i].ID)
			}
		}
		more := make([]Inventory, 250)
		for i := range more {
			more[i] = Inventory{SKU: "m" + strconv.Itoa(i)}
		}
		step("CreateInBatches", db.CreateInBatches(&more, 100).Error, 250)

		it := batch[0]
		step("UpdateColumn", db.Model(&it).UpdateColumn("quantity", 42).Error, 1,
			want{Type: "InventoryUpdated", Key: "b0", Payload: map[string]any{"Quantity": 42}})
		step("UpdateColumns", db.Model(&it).UpdateColumns(Inventory{Quantity: 43, Note: "n"}).Error, 1,
			want{Type: "InventoryUpdated", Payload: map[string]any{"Quantity": 43, "Note": "n"}})
		it.Quantity, it.Note = 44, "ignored"
		step("Select", db.Model(&it).Select("quantity").Updates(&it).Error, 1,
			want{Type: "InventoryUpdated", Payload: map[string]any{"Quantity": 44, "Note": "n"}})
		it.Quantity, it.Note = 45, "kept"
		step("Omit", db.Model(&it).Omit("quantity").Updates(&it).Error, 1,
			want{Type: "InventoryUpdated", Payload: map[string]any{"Quantity": 44, "Note": "kept"}})

		h := Hooked{Name: "h"}
		step("BeforeCreate hook", db.Create(&h).Error, 1,
			want{Type: "HookedCreated", Payload: map[string]any{"Stage": "created-by-hook"}})
		step("BeforeUpdate hook", db.Model(&h).Update("name", "h2").Error, 1,
			want{Type: "HookedUpdated", Payload: map[string]any{"Name": "h2", "Stage": "updated-by-hook"}})
		step("SkipHooks still captures", db.Session(&gorm.Session{SkipHooks: true}).Model(&h).Update("name", "h3").Error, 1,
			want{Type: "HookedUpdated", Payload: map[string]any{"Name": "h3", "Stage": "updated-by-hook"}})
		step("DryRun writes nothing", db.Session(&gorm.Session{DryRun: true}).Model(&Inventory{}).Where("1 = 1").Update("quantity", 0).Error, 0)
		step("SkipDefaultTransaction by condition", db.Session(&gorm.Session{SkipDefaultTransaction: true}).
			Model(&Inventory{}).Where("sku IN ?", []string{"b1", "b2"}).Update("quantity", 7).Error, 2)
	})
}

// Archived is a tagged model with its own TableName.
type Archived struct {
	gormoutbox.Source `outbox:"topic:archived"`
	ID                uint `gorm:"primaryKey"`
	Name              string
}

func (Archived) TableName() string { return "archive_items" }

// db.Table("other") with the model, TableName(), and composite primary
// keys (the message key joins them) by condition.
func TestCaptureTablesAndCompositeKeys(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{}, &Archived{}, &Account{})
		if err := db.Table("inventories_2025").AutoMigrate(&Inventory{}); err != nil {
			t.Fatal(err)
		}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(db.Table("inventories_2025").Create(&Inventory{SKU: "old", Quantity: 1}).Error)
		must(db.Table("inventories_2025").Model(&Inventory{}).Where("sku = ?", "old").Update("quantity", 2).Error)
		must(db.Create(&Archived{Name: "x"}).Error)
		must(db.Create(&[]Account{{Region: "eu", Number: 1, Owner: "a"}, {Region: "eu", Number: 2, Owner: "b"}, {Region: "us", Number: 1, Owner: "c"}}).Error)
		base := 6
		must(db.Model(&Account{}).Where("region = ?", "eu").Update("owner", "z").Error)
		must(db.Where("owner = ?", "c").Delete(&Account{}).Error)
		rows := readOutbox(t, db, "")
		checkRows(t, rows[:2],
			want{Type: "InventoryCreated", Key: "old"},
			want{Type: "InventoryUpdated", Key: "old", Payload: map[string]any{"Quantity": 2}})
		checkRows(t, rows[2:3], want{Topic: "archived", Type: "ArchivedCreated"})
		checkRows(t, rows[base:],
			want{Type: "AccountChanged", Key: `["eu","1"]`, Payload: map[string]any{"owner": "z"}, Absent: []string{"secret"}},
			want{Type: "AccountChanged", Key: `["eu","2"]`},
			want{Type: "AccountClosed", Key: `["us","1"]`})
		var n int64
		db.Table("inventories_2025").Where("quantity = 2").Count(&n)
		if n != 1 {
			t.Fatalf("inventories_2025 not updated: %d", n)
		}
	})
}

// allPaths runs one write of each path on db and returns how many events
// they make.
func allPaths(t *testing.T, db *gorm.DB) (int, error) {
	t.Helper()
	c := Crate{Label: "c", Owner: Owner{Name: "o"}, Bottles: []Bottle{{Wine: "w"}}}
	steps := []struct {
		events int
		f      func() error
	}{
		{3, func() error { return db.Create(&[]Inventory{{SKU: "p1"}, {SKU: "p2"}, {SKU: "p3", Quantity: 2}}).Error }},
		{2, func() error {
			return db.Model(&Inventory{}).Where("sku IN ?", []string{"p1", "p2"}).Update("quantity", 5).Error
		}},
		{1, func() error {
			return db.Model(&Inventory{}).Where("sku = ?", "p3").Update("quantity", gorm.Expr("quantity - ?", 1)).Error
		}},
		{2, func() error {
			return db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "sku"}}, DoUpdates: clause.AssignmentColumns([]string{"quantity"})}).
				Create(&[]Inventory{{SKU: "p1", Quantity: 9}, {SKU: "p4"}}).Error
		}},
		{1, func() error { return db.Where("sku = ?", "p2").Delete(&Inventory{}).Error }},
		{3, func() error { return db.Create(&c).Error }},
		{1, func() error { return db.Model(&SoftItem{}).Where("1 = 1").Delete(&SoftItem{}).Error }},
	}
	n := 0
	for i, s := range steps {
		if err := s.f(); err != nil {
			return n, fmt.Errorf("step %d: %w", i, err)
		}
		n += s.events
	}
	return n, nil
}

// Every path under SkipDefaultTransaction captures; inside a transaction
// rolled back at the end, none leaves an outbox row or a business row.
func TestCaptureAllPathsTransactions(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		models := []any{&Inventory{}, &SoftItem{}, &Owner{}, &Crate{}, &Bottle{}, &Sticker{}}
		db, _ := setup(t, d, nil, gormoutbox.Config{}, models...)
		if err := db.Create(&SoftItem{Name: "s"}).Error; err != nil {
			t.Fatal(err)
		}
		skip := db.Session(&gorm.Session{SkipDefaultTransaction: true})
		want, err := allPaths(t, skip)
		if err != nil {
			t.Fatal(err)
		}
		if got := len(readOutbox(t, db, "")) - 1; got != want {
			t.Fatalf("SkipDefaultTransaction: %d events, want %d", got, want)
		}

		db2, _ := setup(t, d, nil, gormoutbox.Config{}, models...)
		if err := db2.Create(&SoftItem{Name: "s"}).Error; err != nil {
			t.Fatal(err)
		}
		before := count(t, db2, &Inventory{})
		err = db2.Transaction(func(tx *gorm.DB) error {
			if _, err := allPaths(t, tx); err != nil {
				return err
			}
			return errors.New("roll back")
		})
		if err == nil || err.Error() != "roll back" {
			t.Fatalf("transaction: %v", err)
		}
		if n := len(readOutbox(t, db2, "")); n != 1 {
			t.Fatalf("%d outbox rows after the rollback, want 1 (the fixture's)", n)
		}
		if n := count(t, db2, &Inventory{}); n != before {
			t.Fatalf("%d inventory rows after the rollback, want %d", n, before)
		}
	})
}
