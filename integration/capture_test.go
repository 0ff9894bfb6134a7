package integration

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"
	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/dialects/postgres"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

var errRollback = errors.New("roll back, please")

func TestCreateOneAndSlice(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, p := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		if pg, ok := p.Dialect().(postgres.Dialect); ok && !pg.Unnest {
			t.Errorf("PostgreSQL over pgx should insert with unnest")
		}
		one := Inventory{SKU: "sku-1", Quantity: 5, CostPrice: 99}
		if err := db.Create(&one).Error; err != nil {
			t.Fatal(err)
		}
		batch := []Inventory{{SKU: "sku-2", Quantity: 1}, {SKU: "sku-3", Quantity: 2}, {SKU: "sku-4", Quantity: 3}}
		if err := db.Create(&batch).Error; err != nil {
			t.Fatal(err)
		}
		ptrs := []*Inventory{{SKU: "sku-5"}, {SKU: "sku-6"}}
		if err := db.Create(&ptrs).Error; err != nil {
			t.Fatal(err)
		}
		rows := readOutbox(t, db, "")
		wants := []want{{
			Topic: "inventory", Key: "sku-1", Type: "InventoryCreated", AggregateType: "inventory",
			AggregateID: strconv.Itoa(int(one.ID)),
			Payload:     map[string]any{"ID": one.ID, "SKU": "sku-1", "Quantity": 5, "Note": "none"},
			Absent:      []string{"CostPrice", "Source"},
		}}
		for i, b := range batch {
			wants = append(wants, want{Key: b.SKU, Type: "InventoryCreated", AggregateID: strconv.Itoa(int(b.ID)),
				Payload: map[string]any{"ID": b.ID, "Quantity": i + 1}})
		}
		for _, b := range ptrs {
			wants = append(wants, want{Key: b.SKU, AggregateID: strconv.Itoa(int(b.ID)), Payload: map[string]any{"ID": b.ID}})
		}
		checkRows(t, rows, wants...)
		if rows[0].Headers["content-type"] != "application/json" {
			t.Errorf("headers %v: want content-type application/json", rows[0].Headers)
		}
		// The payload's timestamps are the committed ones, at the column's precision.
		var stored Inventory
		if err := db.First(&stored, one.ID).Error; err != nil {
			t.Fatal(err)
		}
		created, err := time.Parse(time.RFC3339Nano, fmt.Sprint(rows[0].Payload["CreatedAt"]))
		if err != nil || !created.Equal(stored.CreatedAt) {
			t.Errorf("payload CreatedAt %v (%v), stored %v", rows[0].Payload["CreatedAt"], err, stored.CreatedAt)
		}
		if n := count(t, db, &Inventory{}); n != 6 {
			t.Fatalf("%d inventory rows, want 6", n)
		}
	})
}

func TestRollbackLeavesNoEvent(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		err := db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&Inventory{SKU: "gone", Quantity: 1}).Error; err != nil {
				return err
			}
			if err := gormoutbox.Publish(tx, gormoutbox.Event{Topic: "t", Type: "X", Key: "k"}); err != nil {
				return err
			}
			return errRollback
		})
		if !errors.Is(err, errRollback) {
			t.Fatalf("Transaction = %v", err)
		}
		checkRows(t, readOutbox(t, db, ""))
		if n := count(t, db, &Inventory{}); n != 0 {
			t.Fatalf("%d inventory rows after rollback", n)
		}
	})
}

func TestSavepointRollbackKeepsOuterEvents(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		err := db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&Inventory{SKU: "outer-1"}).Error; err != nil {
				return err
			}
			nerr := tx.Transaction(func(tx2 *gorm.DB) error {
				if err := tx2.Create(&Inventory{SKU: "inner"}).Error; err != nil {
					return err
				}
				return errRollback
			})
			if !errors.Is(nerr, errRollback) {
				return fmt.Errorf("nested: %v", nerr)
			}
			return tx.Create(&Inventory{SKU: "outer-2"}).Error
		})
		if err != nil {
			t.Fatal(err)
		}
		checkRows(t, readOutbox(t, db, ""), want{Key: "outer-1"}, want{Key: "outer-2"})
		if n := count(t, db, &Inventory{}); n != 2 {
			t.Fatalf("%d inventory rows, want 2", n)
		}
	})
}

func TestUpdatesOfLoadedEntities(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		inv := Inventory{SKU: "u-1", Quantity: 10, CostPrice: 3}
		if err := db.Create(&inv).Error; err != nil {
			t.Fatal(err)
		}
		id := strconv.Itoa(int(inv.ID))
		steps := []struct {
			name string
			do   func() error
			qty  int
		}{
			{"Save", func() error { inv.Quantity = 11; return db.Save(&inv).Error }, 11},
			{"SaveUnchanged", func() error { return db.Save(&inv).Error }, 11},
			{"UpdatesStruct", func() error { return db.Model(&inv).Updates(Inventory{Quantity: 12}).Error }, 12},
			{"UpdatesMap", func() error { return db.Model(&inv).Updates(map[string]any{"quantity": 13}).Error }, 13},
			{"Update", func() error { return db.Model(&inv).Update("quantity", 14).Error }, 14},
			{"UpdateExpr", func() error {
				return db.Model(&inv).Update("quantity", gorm.Expr("quantity - ?", 4)).Error
			}, 10},
			{"PartialStruct", func() error {
				return db.Model(&Inventory{ID: inv.ID}).Update("quantity", 20).Error
			}, 20},
		}
		var wants []want
		wants = append(wants, want{Type: "InventoryCreated"})
		for _, s := range steps {
			if err := s.do(); err != nil {
				t.Fatalf("%s: %v", s.name, err)
			}
			// The after-image: SKU is in the payload even when the caller's
			// struct did not carry it, and the quantity is the database's.
			wants = append(wants, want{Type: "InventoryUpdated", Key: "u-1", AggregateID: id,
				Payload: map[string]any{"ID": inv.ID, "SKU": "u-1", "Quantity": s.qty}, Absent: []string{"CostPrice"}})
		}
		checkRows(t, readOutbox(t, db, ""), wants...)
	})
}

func TestSaveCreatesAndUpserts(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		a := Inventory{SKU: "s-1", Quantity: 1}
		if err := db.Save(&a).Error; err != nil { // no primary key: a create
			t.Fatal(err)
		}
		b := Inventory{ID: 500, SKU: "s-2", Quantity: 2}
		if err := db.Save(&b).Error; err != nil { // a key no row has: update finds nothing, then an upsert inserts
			t.Fatal(err)
		}
		checkRows(t, readOutbox(t, db, ""),
			want{Type: "InventoryCreated", Key: "s-1", Payload: map[string]any{"Quantity": 1}},
			want{Type: "InventoryCreated", Key: "s-2", AggregateID: "500", Payload: map[string]any{"ID": 500, "Quantity": 2}})
		if n := count(t, db, &Inventory{}); n != 2 {
			t.Fatalf("%d inventory rows, want 2", n)
		}
	})
}

func TestDeletes(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{}, &SoftItem{})
		inv := Inventory{SKU: "d-1", Quantity: 4}
		a, b := SoftItem{Name: "a"}, SoftItem{Name: "b"}
		for _, v := range []any{&inv, &a, &b} {
			if err := db.Create(v).Error; err != nil {
				t.Fatal(err)
			}
		}
		// The caller's struct is stale: the event must carry the row as it was.
		if err := db.Model(&Inventory{ID: inv.ID}).Update("quantity", 9).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Delete(&inv).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Delete(&a).Error; err != nil { // soft
			t.Fatal(err)
		}
		res := db.Delete(&a) // already soft-deleted: touches nothing, no event
		if res.Error != nil || res.RowsAffected != 0 {
			t.Fatalf("second soft delete: %v, %d rows", res.Error, res.RowsAffected)
		}
		if err := db.Unscoped().Delete(&a).Error; err != nil { // hard
			t.Fatal(err)
		}
		if err := db.Unscoped().Delete(&b).Error; err != nil { // hard, never soft-deleted
			t.Fatal(err)
		}
		rows := readOutbox(t, db, "")
		checkRows(t, rows,
			want{Type: "InventoryCreated"}, want{Type: "SoftItemCreated"}, want{Type: "SoftItemCreated"},
			want{Type: "InventoryUpdated"},
			want{Type: "InventoryDeleted", Key: "d-1", Payload: map[string]any{"Quantity": 9, "SKU": "d-1"}},
			want{Type: "SoftItemDeleted", Topic: "items", AggregateID: strconv.Itoa(int(a.ID)), Payload: map[string]any{"Name": "a"}},
			want{Type: "SoftItemPurged", AggregateID: strconv.Itoa(int(a.ID))},
			want{Type: "SoftItemPurged", AggregateID: strconv.Itoa(int(b.ID)), Payload: map[string]any{"Name": "b", "DeletedAt": nil}},
		)
		if rows[5].Payload["DeletedAt"] == nil {
			t.Errorf("soft delete payload %s: DeletedAt not set", rows[5].RawPayload)
		}
		if n := count(t, db, &SoftItem{}); n != 0 {
			t.Fatalf("%d soft items left", n)
		}
	})
}

func TestSkipDefaultTransaction(t *testing.T) {
	// GORM opens no transaction; the plugin opens one for tagged writes so
	// that the entity and its event stay atomic.
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		for _, mode := range []string{"global", "session"} {
			t.Run(mode, func(t *testing.T) {
				gcfg := func() *gorm.Config { return &gorm.Config{SkipDefaultTransaction: mode == "global"} }
				db, _ := setup(t, d, gcfg(), gormoutbox.Config{}, &Inventory{}, &Plain{})
				w := db
				if mode == "session" {
					w = db.Session(&gorm.Session{SkipDefaultTransaction: true})
				}
				inv := Inventory{SKU: "x-1", Quantity: 1}
				if err := w.Create(&inv).Error; err != nil {
					t.Fatal(err)
				}
				if err := w.Model(&inv).Update("quantity", 2).Error; err != nil {
					t.Fatal(err)
				}
				if err := w.Delete(&inv).Error; err != nil {
					t.Fatal(err)
				}
				if err := w.Create(&Plain{Name: "untouched"}).Error; err != nil {
					t.Fatal(err)
				}
				checkRows(t, readOutbox(t, db, ""), want{Type: "InventoryCreated"},
					want{Type: "InventoryUpdated", Payload: map[string]any{"Quantity": 2}}, want{Type: "InventoryDeleted"})

				// Atomicity: when the outbox insert fails, the entity write is undone.
				broken := gormoutbox.New(gormoutbox.Config{Table: "no_such_outbox"})
				db2 := d.Open(t, gcfg())
				if err := db2.Use(broken); err != nil {
					t.Fatal(err)
				}
				if err := db2.AutoMigrate(&Inventory{}); err != nil {
					t.Fatal(err)
				}
				w2 := db2
				if mode == "session" {
					w2 = db2.Session(&gorm.Session{SkipDefaultTransaction: true})
				}
				if err := w2.Create(&Inventory{SKU: "y"}).Error; err == nil {
					t.Fatal("create with a missing outbox table succeeded")
				}
				if n := count(t, db2, &Inventory{}); n != 0 {
					t.Fatalf("entity committed without its event: %d rows", n)
				}
			})
		}
	})
}

func TestOutboxFailureRollsBackDefaultTransaction(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db := d.Open(t, nil)
		if err := db.Use(gormoutbox.New(gormoutbox.Config{Table: "not_migrated"})); err != nil {
			t.Fatal(err)
		}
		if err := db.AutoMigrate(&Inventory{}); err != nil {
			t.Fatal(err)
		}
		err := db.Create(&[]Inventory{{SKU: "a"}, {SKU: "b"}}).Error
		if err == nil || !strings.Contains(err.Error(), "not_migrated") {
			t.Fatalf("Create = %v, want an error naming the outbox table", err)
		}
		if n := count(t, db, &Inventory{}); n != 0 {
			t.Fatalf("%d rows committed without events", n)
		}
	})
}

func TestCompositeKeyTypesAndVersion(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Account{})
		acc := Account{Region: "eu", Number: 7, Owner: "ann", Secret: "s3cr3t"}
		if err := db.Create(&acc).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Model(&acc).Update("owner", "bob").Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Delete(&acc).Error; err != nil {
			t.Fatal(err)
		}
		rows := readOutbox(t, db, "")
		checkRows(t, rows,
			want{Type: "AccountOpened", Key: `["eu","7"]`, AggregateID: `["eu","7"]`, AggregateType: "Account",
				Payload: map[string]any{"region": "eu", "number": 7, "owner": "ann"}, Absent: []string{"secret", "Secret"}},
			want{Type: "AccountChanged", Payload: map[string]any{"owner": "bob"}, Absent: []string{"secret"}},
			want{Type: "AccountClosed", Payload: map[string]any{"owner": "bob"}, Absent: []string{"secret"}},
		)
		if rows[0].Headers["schema-version"] != "2" {
			t.Errorf("headers %v: want schema-version 2", rows[0].Headers)
		}
	})
}

func TestOperationsNotListedAreNotCaptured(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &CreateOnly{}, &Plain{})
		c := CreateOnly{Name: "a"}
		if err := db.Create(&c).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Model(&c).Update("name", "b").Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Delete(&c).Error; err != nil {
			t.Fatal(err)
		}
		// Untagged models are untouched, whatever the write.
		p := Plain{Name: "p"}
		if err := db.Create(&p).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Model(&Plain{}).Where("name = ?", "p").Update("name", "q").Error; err != nil {
			t.Fatal(err)
		}
		checkRows(t, readOutbox(t, db, ""), want{Type: "CreateOnlyCreated", Topic: "create-only"})
	})
}

func TestDatabaseDefaultsInPayload(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Stamped{})
		s := Stamped{Name: "n"}
		if err := db.Create(&s).Error; err != nil {
			t.Fatal(err)
		}
		rows := readOutbox(t, db, "")
		checkRows(t, rows, want{Type: "StampedCreated"})
		stamp, _ := rows[0].Payload["Stamp"].(string)
		if stamp == "" || strings.HasPrefix(stamp, "0001-01-01") {
			t.Fatalf("payload %s: Stamp not filled with the database default", rows[0].RawPayload)
		}
	})
}

func TestTraceparentHeader(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
		sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
		sc := trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled})
		ctx := trace.ContextWithSpanContext(context.Background(), sc)
		if err := db.WithContext(ctx).Create(&Inventory{SKU: "traced"}).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Create(&Inventory{SKU: "untraced"}).Error; err != nil {
			t.Fatal(err)
		}
		rows := readOutbox(t, db, "")
		checkRows(t, rows, want{Key: "traced"}, want{Key: "untraced"})
		if got, want := rows[0].Headers["traceparent"], "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"; got != want {
			t.Errorf("traceparent %q, want %q", got, want)
		}
		if _, ok := rows[1].Headers["traceparent"]; ok {
			t.Errorf("traceparent on a write without a span: %v", rows[1].Headers)
		}
	})
}

func TestDryRunWritesNothing(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		dry := db.Session(&gorm.Session{DryRun: true})
		if err := dry.Create(&Inventory{ID: 1, SKU: "dry"}).Error; err != nil {
			t.Fatal(err)
		}
		if err := dry.Model(&Inventory{ID: 1}).Update("quantity", 3).Error; err != nil {
			t.Fatal(err)
		}
		checkRows(t, readOutbox(t, db, ""))
	})
}

func TestPublish(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		err := db.Transaction(func(tx *gorm.DB) error {
			if err := tx.Create(&Inventory{SKU: "p-1", Quantity: 3}).Error; err != nil {
				return err
			}
			return gormoutbox.Publish(tx,
				gormoutbox.Event{Topic: "orders", Key: "order-9", Type: "StockReserved", AggregateType: "order",
					AggregateID: "9", Payload: map[string]any{"sku": "p-1", "qty": 2}, Headers: map[string]string{"x-source": "test"}},
				gormoutbox.Event{ID: "0190a5a8-2bd6-7c2a-9f4e-0123456789ab", Topic: "audit", Type: "Raw", Payload: []byte("raw\x00bytes")},
			)
		})
		if err != nil {
			t.Fatal(err)
		}
		rows := readOutbox(t, db, "")
		checkRows(t, rows,
			want{Type: "InventoryCreated"},
			want{Topic: "orders", Key: "order-9", Type: "StockReserved", AggregateType: "order", AggregateID: "9",
				Payload: map[string]any{"sku": "p-1", "qty": 2}},
			want{Topic: "audit", Type: "Raw"},
		)
		if rows[1].Headers["x-source"] != "test" {
			t.Errorf("headers %v", rows[1].Headers)
		}
		if rows[2].Key != nil || string(rows[2].RawPayload) != "raw\x00bytes" || rows[2].EventID != "0190a5a8-2bd6-7c2a-9f4e-0123456789ab" {
			t.Errorf("raw event: key %v payload %q id %s", deref(rows[2].Key), rows[2].RawPayload, rows[2].EventID)
		}
		if rows[2].Headers["content-type"] != "application/octet-stream" {
			t.Errorf("raw event headers %v", rows[2].Headers)
		}

		// Outside a transaction: refused, nothing written.
		if err := gormoutbox.Publish(db, gormoutbox.Event{Topic: "t", Type: "X"}); !errors.Is(err, gormoutbox.ErrNoTransaction) {
			t.Fatalf("Publish outside a transaction = %v, want ErrNoTransaction", err)
		}
		// An invalid event fails the call before anything is written.
		err = db.Transaction(func(tx *gorm.DB) error {
			return gormoutbox.Publish(tx, gormoutbox.Event{Topic: "ok", Type: "A"}, gormoutbox.Event{Topic: "bad topic!", Type: "B"})
		})
		if !errors.Is(err, gormoutbox.ErrInvalidEvent) || !strings.Contains(err.Error(), "event 1") || !strings.Contains(err.Error(), "bad topic!") {
			t.Fatalf("Publish(invalid) = %v", err)
		}
		for _, bad := range []gormoutbox.Event{
			{Type: "NoTopic"}, {Topic: "t"}, {Topic: "t", Type: "T", ID: "not-a-uuid"},
			{Topic: "t", Type: "T", Key: strings.Repeat("k", 2000)},
			{Topic: "t", Type: "T", Payload: func() {}},
		} {
			err := db.Transaction(func(tx *gorm.DB) error { return gormoutbox.Publish(tx, bad) })
			if !errors.Is(err, gormoutbox.ErrInvalidEvent) {
				t.Errorf("Publish(%+v) = %v, want ErrInvalidEvent", bad, err)
			}
		}
		if n := len(readOutbox(t, db, "")); n != 3 {
			t.Fatalf("%d outbox rows after refused publishes, want 3", n)
		}
	})
}

func TestUncapturedWritesAreRefused(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		inv := Inventory{SKU: "c-1", Quantity: 5}
		if err := db.Create(&inv).Error; err != nil {
			t.Fatal(err)
		}
		cases := map[string]func() error{
			"MapUpsert": func() error {
				return db.Model(&Inventory{}).Clauses(clause.OnConflict{UpdateAll: true}).Create(map[string]any{"SKU": "m"}).Error
			},
		}
		if d.Name == "postgres" {
			// Neither key nor unique values in the maps, and a plain []map
			// cannot take what RETURNING gives: the rows cannot be found.
			cases["TableMapsWithoutKey"] = func() error {
				return db.Table("inventories").Create([]map[string]any{{"quantity": 1}, {"quantity": 2}}).Error
			}
		}
		for name, f := range cases {
			err := f()
			if !errors.Is(err, gormoutbox.ErrUncapturedWrite) {
				t.Errorf("%s = %v, want ErrUncapturedWrite", name, err)
				continue
			}
			if !strings.Contains(err.Error(), "Inventory") || !strings.Contains(err.Error(), "gormoutbox.Skip") {
				t.Errorf("%s: message %q should name the model and the way out", name, err)
			}
			var ue *gormoutbox.UncapturedError
			if !errors.As(err, &ue) {
				t.Errorf("%s: %v is not a *gormoutbox.UncapturedError", name, err)
			} else if ue.Model != "Inventory" || ue.Op != "create" || ue.Reason == "" || ue.WayOut == "" {
				t.Errorf("%s: UncapturedError %+v, want model Inventory, op create, a reason and a way out", name, *ue)
			}
		}
		var got Inventory
		if err := db.First(&got, inv.ID).Error; err != nil || got.Quantity != 5 {
			t.Fatalf("row changed by refused writes: %+v, %v", got, err)
		}
		if n := count(t, db, &Inventory{}); n != 1 {
			t.Fatalf("%d rows after refused writes, want 1", n)
		}
		// The explicit opt-out works, and says nothing to the outbox.
		if err := db.Clauses(gormoutbox.Skip("test backfill")).Where("sku = ?", "c-1").
			Model(&Inventory{}).Update("quantity", 1).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Clauses(gormoutbox.Skip("")).Create(&Inventory{SKU: "no-reason"}).Error; !errors.Is(err, gormoutbox.ErrInvalidConfig) {
			t.Fatalf("Skip(\"\") = %v, want ErrInvalidConfig", err)
		}
		checkRows(t, readOutbox(t, db, ""), want{Type: "InventoryCreated"})
	})
}
