package integration

import (
	"errors"
	"strconv"
	"strings"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// Upserts on the primary key, of one or many rows: Created for rows that
// did not exist, Updated for existing rows the statement changed, nothing
// for DO NOTHING or an update that changed nothing.
func TestCaptureUpserts(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		a := Inventory{SKU: "a", Quantity: 5}
		if err := db.Create(&a).Error; err != nil {
			t.Fatal(err)
		}
		base := len(readOutbox(t, db, ""))
		step := func(name string, err error, wants ...want) {
			t.Helper()
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			rows := readOutbox(t, db, "")
			checkRows(t, rows[base:], wants...)
			base = len(rows)
		}
		step("Save of new rows without keys", db.Save(&[]Inventory{{SKU: "z1"}, {SKU: "z2"}}).Error,
			want{Type: "InventoryCreated", Key: "z1"}, want{Type: "InventoryCreated", Key: "z2"})
		step("DO NOTHING, one existing and one new", db.Clauses(clause.OnConflict{DoNothing: true}).
			Create(&[]Inventory{{ID: a.ID, SKU: "a", Quantity: 99}, {ID: 1000, SKU: "n1", Quantity: 1}}).Error,
			want{Type: "InventoryCreated", Key: "n1", Payload: map[string]any{"ID": 1000}})
		var got Inventory
		db.First(&got, a.ID)
		if got.Quantity != 5 {
			t.Fatalf("DO NOTHING changed the existing row: quantity %d", got.Quantity)
		}
		step("DO UPDATE quantity", db.Clauses(clause.OnConflict{
			Columns: []clause.Column{{Name: "id"}}, DoUpdates: clause.AssignmentColumns([]string{"quantity"}),
		}).Create(&[]Inventory{{ID: a.ID, SKU: "a", Quantity: 50}, {ID: 1001, SKU: "n2", Quantity: 2}}).Error,
			want{Type: "InventoryUpdated", Key: "a", Payload: map[string]any{"Quantity": 50, "Note": "none"}},
			want{Type: "InventoryCreated", Key: "n2"})
		step("DO UPDATE that changes nothing", db.Clauses(clause.OnConflict{
			Columns: []clause.Column{{Name: "id"}}, DoUpdates: clause.AssignmentColumns([]string{"quantity"}),
		}).Create(&Inventory{ID: a.ID, SKU: "a", Quantity: 50}).Error)
		step("UPDATE ALL", db.Clauses(clause.OnConflict{UpdateAll: true}).
			Create(&Inventory{ID: 1000, SKU: "n1", Quantity: 7, Note: "again"}).Error,
			want{Type: "InventoryUpdated", Key: "n1", Payload: map[string]any{"Quantity": 7, "Note": "again"}})

		// On a unique key other than the primary key (the SKU): rows are
		// found by it, before and after.
		step("DO UPDATE on sku", db.Clauses(clause.OnConflict{
			Columns: []clause.Column{{Name: "sku"}}, DoUpdates: clause.AssignmentColumns([]string{"quantity"}),
		}).Create(&[]Inventory{{SKU: "a", Quantity: 60}, {SKU: "by-sku", Quantity: 1}}).Error,
			want{Type: "InventoryUpdated", Key: "a", AggregateID: strconv.Itoa(int(a.ID)), Payload: map[string]any{"Quantity": 60}},
			want{Type: "InventoryCreated", Key: "by-sku"})
		step("DO NOTHING on sku", db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "sku"}}, DoNothing: true}).
			Create(&[]Inventory{{SKU: "a", Quantity: 61}, {SKU: "by-sku-2"}}).Error,
			want{Type: "InventoryCreated", Key: "by-sku-2"})
		if err := db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "nope"}}, DoNothing: true}).
			Create(&Inventory{SKU: "x"}).Error; !errors.Is(err, gormoutbox.ErrUncapturedWrite) || !strings.Contains(err.Error(), "nope") {
			t.Fatalf("upsert on an unknown column: %v, want ErrUncapturedWrite naming it", err)
		}

		// Rolled back: nothing.
		_ = db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Clauses(clause.OnConflict{UpdateAll: true}).Create(&Inventory{ID: 1001, SKU: "n2", Quantity: 70}).Error; err != nil {
				return err
			}
			return gorm.ErrInvalidTransaction
		})
		step("rolled back upsert", nil)
	})
}

// Tagged models written by GORM for a parent (belongs to, has many,
// many2many): one event per row written, the owner before the parent, the
// children after it.
type Owner struct {
	gormoutbox.Source `outbox:"topic:owners"`
	ID                uint `gorm:"primaryKey"`
	Name              string
}

type Crate struct {
	gormoutbox.Source `outbox:"topic:crates"`
	ID                uint `gorm:"primaryKey"`
	Label             string
	OwnerID           uint
	Owner             Owner
	Bottles           []Bottle
	Labels            []Sticker `gorm:"many2many:crate_stickers"`
}

type Bottle struct {
	gormoutbox.Source `outbox:"topic:bottles"`
	ID                uint `gorm:"primaryKey"`
	CrateID           uint
	Wine              string
}

type Sticker struct {
	gormoutbox.Source `outbox:"topic:stickers"`
	ID                uint `gorm:"primaryKey"`
	Text              string
}

func TestCaptureAssociations(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Owner{}, &Crate{}, &Bottle{}, &Sticker{})
		c := Crate{Label: "c1", Owner: Owner{Name: "o"},
			Bottles: []Bottle{{Wine: "red"}, {Wine: "white"}},
			Labels:  []Sticker{{Text: "fragile"}}}
		if err := db.Create(&c).Error; err != nil {
			t.Fatal(err)
		}
		checkRows(t, readOutbox(t, db, ""),
			want{Topic: "owners", Type: "OwnerCreated"},
			want{Topic: "crates", Type: "CrateCreated", Absent: []string{"Owner", "Bottles", "Labels"}},
			want{Topic: "bottles", Type: "BottleCreated", Payload: map[string]any{"Wine": "red", "CrateID": c.ID}},
			want{Topic: "bottles", Type: "BottleCreated", Payload: map[string]any{"Wine": "white"}},
			want{Topic: "stickers", Type: "StickerCreated"})
		base := len(readOutbox(t, db, ""))

		// Saving the parent again writes the children again (ON CONFLICT on
		// their keys): nothing changed, no event; a changed child with
		// FullSaveAssociations: Updated.
		if err := db.Save(&c).Error; err != nil {
			t.Fatal(err)
		}
		rows := readOutbox(t, db, "")
		checkRows(t, rows[base:], want{Type: "CrateUpdated"})
		base = len(rows)
		c.Bottles[0].Wine = "rosé"
		if err := db.Session(&gorm.Session{FullSaveAssociations: true}).Save(&c).Error; err != nil {
			t.Fatal(err)
		}
		rows = readOutbox(t, db, "")
		checkRows(t, rows[base:], want{Type: "CrateUpdated"},
			want{Topic: "bottles", Type: "BottleUpdated", Payload: map[string]any{"Wine": "rosé"}})
	})
}
