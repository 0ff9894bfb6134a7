package integration

import (
	"context"

	"fmt"
	"reflect"
	"testing"

	"gorm.io/gorm"
	"gorm.io/plugin/dbresolver"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// With dbresolver and a read replica, the outbox rows and the plugin's
// reads (before- and after-images) go to the connection that wrote the
// entity, never to the replica.
func TestCaptureWithDBResolver(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, p := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		replica := d.Open(t, nil)
		rp := gormoutbox.New(gormoutbox.Config{})
		if err := replica.Use(rp); err != nil {
			t.Fatal(err)
		}
		if err := rp.Migrate(ctx); err != nil { // a misrouted insert would succeed there
			t.Fatal(err)
		}
		if err := replica.AutoMigrate(&Inventory{}); err != nil {
			t.Fatal(err)
		}
		source, _ := db.DB()
		replicaSQL, _ := replica.DB()
		if err := db.Use(dbresolver.Register(dbresolver.Config{Replicas: []gorm.Dialector{replica.Dialector}})); err != nil {
			t.Fatal(err)
		}
		_ = p
		it := Inventory{SKU: "r1", Quantity: 5}
		steps := []func() error{
			func() error { return db.Create(&it).Error },
			func() error { return db.Model(&it).Update("quantity", 6).Error },
			func() error { return db.Model(&Inventory{}).Where("sku = ?", "r1").Update("quantity", 7).Error },
			func() error { return db.Delete(&Inventory{}, it.ID).Error },
		}
		for i, f := range steps {
			if err := f(); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
		}
		var onSource, onReplica int
		if err := source.QueryRow(`SELECT COUNT(*) FROM outbox`).Scan(&onSource); err != nil {
			t.Fatal(err)
		}
		if err := replicaSQL.QueryRow(`SELECT COUNT(*) FROM outbox`).Scan(&onReplica); err != nil {
			t.Fatal(err)
		}
		if onSource != 4 || onReplica != 0 {
			t.Fatalf("outbox rows: %d on the source, %d on the replica; want 4 and 0", onSource, onReplica)
		}
	})
}

// Registering the plugin changes nothing GORM does for untagged models:
// the same writes, with and without it, leave the same rows.
func TestPluginLeavesUntaggedWritesAlone(t *testing.T) {
	type Ledger struct {
		ID     uint `gorm:"primaryKey"`
		Name   string
		Amount int
		Tags   []LedgerTag
	}
	run := func(t *testing.T, db *gorm.DB) []string {
		t.Helper()
		if err := db.AutoMigrate(&Ledger{}, &LedgerTag{}); err != nil {
			t.Fatal(err)
		}
		ls := []Ledger{{Name: "a", Amount: 1, Tags: []LedgerTag{{Label: "x"}}}, {Name: "b", Amount: 2}, {Name: "c", Amount: 3}}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(db.Create(&ls).Error)
		must(db.Model(&Ledger{}).Where("amount > ?", 1).Update("amount", gorm.Expr("amount * 10")).Error)
		must(db.Save(&Ledger{ID: ls[0].ID, Name: "a2", Amount: 5}).Error)
		must(db.Where("name = ?", "c").Delete(&Ledger{}).Error)
		must(db.Session(&gorm.Session{SkipDefaultTransaction: true}).Create(&Ledger{Name: "d"}).Error)
		var out []string
		var rows []Ledger
		must(db.Preload("Tags").Order("id").Find(&rows).Error)
		for _, r := range rows {
			out = append(out, fmt.Sprintf("%d %s %d %d", r.ID, r.Name, r.Amount, len(r.Tags)))
		}
		return out
	}
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		plain := d.Open(t, nil)
		with, _ := setup(t, d, nil, gormoutbox.Config{})
		a, b := run(t, plain), run(t, with)
		if !reflect.DeepEqual(a, b) {
			t.Fatalf("rows differ:\nwithout the plugin %v\nwith it            %v", a, b)
		}
		var n int
		sqlDB, _ := with.DB()
		if err := sqlDB.QueryRow(`SELECT COUNT(*) FROM outbox`).Scan(&n); err != nil || n != 0 {
			t.Fatalf("outbox rows for untagged writes: %d, %v", n, err)
		}
	})
}

type LedgerTag struct {
	ID       uint `gorm:"primaryKey"`
	LedgerID uint
	Label    string
}
