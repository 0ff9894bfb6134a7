package integration

import (
	"context"
	"testing"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/mysql"
	"github.com/go-outbox/outbox/dialects/postgres"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// The plugin migrates the table it is configured with, and writes there.
// (Migrate's versioning — idempotent, concurrent, cut-short steps — is
// checked on the dialects by the conformance suite, dialects/dialecttest.)
func TestMigrateConfiguredTable(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db := d.Open(t, nil)
		p := gormoutbox.New(gormoutbox.Config{Table: "events_outbox"})
		if err := db.Use(p); err != nil {
			t.Fatal(err)
		}
		sqlDB, _ := db.DB()
		ctx := context.Background()
		tbl, _ := dialects.ParseTable("events_outbox")
		for i := 0; i < 2; i++ {
			if err := p.Migrate(ctx); err != nil {
				t.Fatalf("Migrate #%d: %v", i+1, err)
			}
		}
		latest := postgres.LatestVersion
		if d.Name == "mysql" {
			latest = mysql.LatestVersion
		}
		if v, err := p.Dialect().SchemaVersion(ctx, sqlDB, tbl); err != nil || v != latest {
			t.Fatalf("version after Migrate = %d, %v; want %d", v, err, latest)
		}
		// The configured table is the one written.
		if err := db.AutoMigrate(&Inventory{}); err != nil {
			t.Fatal(err)
		}
		if err := db.Create(&Inventory{SKU: "t"}).Error; err != nil {
			t.Fatal(err)
		}
		checkRows(t, readOutbox(t, db, "events_outbox"), want{Type: "InventoryCreated", Key: "t"})
		if db.Migrator().HasTable("outbox") {
			t.Fatal("default outbox table created although another was configured")
		}
	})
}

func TestPrepareStmt(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		for _, mode := range []string{"global", "session"} {
			t.Run(mode, func(t *testing.T) {
				db, _ := setup(t, d, &gorm.Config{PrepareStmt: mode == "global"}, gormoutbox.Config{}, &Inventory{})
				w := db
				if mode == "session" {
					w = db.Session(&gorm.Session{PrepareStmt: true})
				}
				for i := 0; i < 3; i++ { // the same statements again, from the statement cache
					inv := Inventory{SKU: "p" + string(rune('a'+i)), Quantity: i}
					if err := w.Create(&inv).Error; err != nil {
						t.Fatal(err)
					}
					if err := w.Model(&inv).Update("quantity", gorm.Expr("quantity + ?", 10)).Error; err != nil {
						t.Fatal(err)
					}
				}
				err := w.Transaction(func(tx *gorm.DB) error {
					if err := tx.Create(&[]Inventory{{SKU: "b1"}, {SKU: "b2"}}).Error; err != nil {
						return err
					}
					return gormoutbox.Publish(tx, gormoutbox.Event{Topic: "t", Type: "Batch"})
				})
				if err != nil {
					t.Fatal(err)
				}
				checkRows(t, readOutbox(t, db, ""),
					want{Key: "pa"}, want{Key: "pa", Type: "InventoryUpdated", Payload: map[string]any{"Quantity": 10}},
					want{Key: "pb"}, want{Key: "pb", Payload: map[string]any{"Quantity": 11}},
					want{Key: "pc"}, want{Key: "pc", Payload: map[string]any{"Quantity": 12}},
					want{Key: "b1"}, want{Key: "b2"}, want{Type: "Batch"})
				// By condition and upserts through the statement cache too.
				for i := 0; i < 2; i++ {
					if err := w.Model(&Inventory{}).Where("sku IN ?", []string{"b1", "b2"}).Update("quantity", 20+i).Error; err != nil {
						t.Fatal(err)
					}
					if err := w.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "sku"}}, UpdateAll: true}).
						Create(&Inventory{SKU: "pa", Quantity: 30 + i}).Error; err != nil {
						t.Fatal(err)
					}
				}
				rows := readOutbox(t, db, "")
				checkRows(t, rows[9:],
					want{Key: "b1", Payload: map[string]any{"Quantity": 20}}, want{Key: "b2", Payload: map[string]any{"Quantity": 20}},
					want{Key: "pa", Type: "InventoryUpdated", Payload: map[string]any{"Quantity": 30}},
					want{Key: "b1", Payload: map[string]any{"Quantity": 21}}, want{Key: "b2", Payload: map[string]any{"Quantity": 21}},
					want{Key: "pa", Type: "InventoryUpdated", Payload: map[string]any{"Quantity": 31}})
			})
		}
	})
}
