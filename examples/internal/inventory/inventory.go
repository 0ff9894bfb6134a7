// Package inventory is the shared code of the examples (examples/postgres
// and examples/mysql), whose mains only open the database and call [Demo].
//
// This file is the product service: it owns the inventory table, and every
// stock change it makes writes its event to the outbox in the same
// transaction. demo.go runs it end to end: the relay, scheduled with the
// scheduler package, publishes the events to Kafka (kafka.go: the broker,
// its topics and a consumer that prints what arrives), and check.go checks
// that every committed event arrived, in order per key.
package inventory

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
)

// Item is one stock-keeping unit. It is an event source: creates, updates
// and deletes go to the "inventory" topic keyed by SKU; the cost price
// never leaves the service.
type Item struct {
	gormoutbox.Source `outbox:"topic:inventory;aggregate:inventory;events:create,update,delete"`
	ID                uint      `gorm:"primaryKey" json:"id"`
	SKU               string    `gorm:"size:64;uniqueIndex" json:"sku" outbox:"key"`
	Name              string    `gorm:"size:128" json:"name"`
	Quantity          int       `json:"quantity"`
	CostPrice         int       `json:"cost_price" outbox:"-"`
	UpdatedAt         time.Time `json:"updated_at"`
}

// TableName keeps the table name stable across the examples.
func (Item) TableName() string { return "inventory" }

// Setup registers the outbox plugin on db, migrates the outbox table and
// the inventory table, and checks the tags.
func Setup(ctx context.Context, db *gorm.DB) (*gormoutbox.Plugin, error) {
	ob := gormoutbox.New(gormoutbox.Config{})
	if err := db.Use(ob); err != nil {
		return nil, err
	}
	if err := ob.Validate(&Item{}); err != nil {
		return nil, err
	}
	if err := ob.Migrate(ctx); err != nil {
		return nil, err
	}
	if err := db.AutoMigrate(&Item{}); err != nil {
		return nil, err
	}
	return ob, nil
}

// WantEvents is how many events Run commits: three creates, a restock, a
// reservation (an update and a StockReserved event), a rename and a delete.
const WantEvents = 8

// ErrOutOfStock is returned by Reserve when the stock is too low.
var ErrOutOfStock = errors.New("out of stock")

// Reserve takes n units of sku off the stock and publishes a StockReserved
// domain event for order, all in one transaction.
func Reserve(ctx context.Context, db *gorm.DB, sku string, n int, order string) error {
	return db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
		var it Item
		if err := tx.Where("sku = ?", sku).First(&it).Error; err != nil {
			return err
		}
		if it.Quantity < n {
			return fmt.Errorf("reserve %d of %s (%d left): %w", n, sku, it.Quantity, ErrOutOfStock)
		}
		if err := tx.Model(&it).Update("quantity", gorm.Expr("quantity - ?", n)).Error; err != nil {
			return err
		}
		return gormoutbox.Publish(tx, gormoutbox.Event{
			Topic: "orders", Key: order, Type: "StockReserved",
			AggregateType: "order", AggregateID: order,
			Payload: map[string]any{"order": order, "sku": sku, "quantity": n},
		})
	})
}

// RefusedOrder is the order whose reservation Run makes fail: its
// transaction is rolled back, so it leaves no stock change and no event.
const RefusedOrder = "order-2"

// Run makes a few stock changes: three items created in one batch, a
// restock, two reservations (the second, for RefusedOrder, refused and
// rolled back: no event), a rename and a discontinued item deleted. They
// commit 8 events (WantEvents).
func Run(ctx context.Context, db *gorm.DB, log io.Writer) error {
	db = db.WithContext(ctx)
	items := []Item{
		{SKU: "apple", Name: "Apple", Quantity: 10, CostPrice: 20},
		{SKU: "pear", Name: "Pear", Quantity: 5, CostPrice: 30},
		{SKU: "plum", Name: "Plum", Quantity: 1, CostPrice: 40},
	}
	step := func(what string, err error) error {
		if err != nil {
			fmt.Fprintf(log, "  %-32s refused, rolled back: %v\n", what, err)
			return err
		}
		fmt.Fprintf(log, "  %-32s ok\n", what)
		return nil
	}
	if err := step("create apple, pear, plum", db.Create(&items).Error); err != nil {
		return err
	}
	if err := step("restock apple to 25", db.Model(&items[0]).Update("quantity", 25).Error); err != nil {
		return err
	}
	if err := step("reserve 3 pears for order-1", Reserve(ctx, db, "pear", 3, "order-1")); err != nil {
		return err
	}
	if err := step("reserve 9 pears for "+RefusedOrder, Reserve(ctx, db, "pear", 9, RefusedOrder)); !errors.Is(err, ErrOutOfStock) {
		return fmt.Errorf("want out of stock, got %v", err)
	}
	// Reload the pear (Reserve changed its quantity) before renaming it.
	if err := db.First(&items[1], items[1].ID).Error; err != nil {
		return err
	}
	items[1].Name = "Conference pear"
	if err := step("rename pear", db.Save(&items[1]).Error); err != nil {
		return err
	}
	if err := step("delete plum", db.Delete(&items[2]).Error); err != nil {
		return err
	}
	return nil
}
