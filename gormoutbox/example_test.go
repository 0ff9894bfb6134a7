package gormoutbox_test

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// Inventory is an event source: its writes go to the "inventory" topic,
// keyed by SKU, without the cost price.
type Inventory struct {
	gormoutbox.Source `outbox:"topic:inventory;aggregate:inventory"`
	ID                uint   `gorm:"primaryKey" json:"id"`
	SKU               string `json:"sku" outbox:"key"`
	Quantity          int    `json:"quantity"`
	CostPrice         int    `json:"cost_price" outbox:"-"`
}

// The three adoption steps on PostgreSQL (the relay is step 3): tag the
// model, register the plugin, write as usual.
func Example() {
	db, cleanup, err := testenv.NewPostgres(nil) // your *gorm.DB
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()
	ctx := context.Background()

	ob := gormoutbox.New(gormoutbox.Config{})
	if err := db.Use(ob); err != nil {
		fmt.Println(err)
		return
	}
	if err := ob.Validate(&Inventory{}); err != nil {
		fmt.Println(err)
		return
	}
	if err := ob.Migrate(ctx); err != nil {
		fmt.Println(err)
		return
	}
	_ = db.AutoMigrate(&Inventory{})

	item := Inventory{SKU: "apple", Quantity: 10, CostPrice: 7}
	db.Create(&item)
	db.Model(&item).Update("quantity", gorm.Expr("quantity - ?", 3))
	_ = db.Transaction(func(tx *gorm.DB) error {
		return gormoutbox.Publish(tx, gormoutbox.Event{
			Topic: "orders", Key: "order-1", Type: "StockReserved",
			Payload: map[string]any{"sku": "apple", "quantity": 3},
		})
	})

	var rows []struct {
		Topic, MsgKey, EventType string
		Payload                  []byte
	}
	db.Table("outbox").Order("id").Find(&rows)
	for _, r := range rows {
		fmt.Printf("%s %s %s %s\n", r.Topic, r.MsgKey, r.EventType, r.Payload)
	}
	// Output:
	// inventory apple InventoryCreated {"id":1,"sku":"apple","quantity":10}
	// inventory apple InventoryUpdated {"id":1,"sku":"apple","quantity":7}
	// orders order-1 StockReserved {"quantity":3,"sku":"apple"}
}

// Deliberate bulk work without events is explicit and visible in review.
func ExampleSkip() {
	var db *gorm.DB // your *gorm.DB with the plugin registered
	if db == nil {
		return
	}
	legacy := []Inventory{{SKU: "old-1"}, {SKU: "old-2"}}
	db.Clauses(gormoutbox.Skip("backfill of legacy stock, announced separately")).Create(&legacy)
}
