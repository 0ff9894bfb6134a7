// Package inventory is the product service of the examples: it owns the
// inventory table, and every stock change it makes writes its event to the
// outbox in the same transaction.
package inventory

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
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

// Run makes a few stock changes: three items created in one batch, a
// restock, two reservations (the second refused and rolled back: no event),
// a rename and a discontinued item deleted.
func Run(ctx context.Context, db *gorm.DB, log io.Writer) error {
	db = db.WithContext(ctx)
	items := []Item{
		{SKU: "apple", Name: "Apple", Quantity: 10, CostPrice: 20},
		{SKU: "pear", Name: "Pear", Quantity: 5, CostPrice: 30},
		{SKU: "plum", Name: "Plum", Quantity: 1, CostPrice: 40},
	}
	step := func(what string, err error) error {
		if err != nil {
			fmt.Fprintf(log, "  %-40s refused: %v\n", what, err)
			return err
		}
		fmt.Fprintf(log, "  %-40s ok\n", what)
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
	if err := step("reserve 9 pears for order-2", Reserve(ctx, db, "pear", 9, "order-2")); !errors.Is(err, ErrOutOfStock) {
		return fmt.Errorf("want out of stock, got %v", err)
	}
	items[1].Name = "Conference pear"
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

// PrintOutbox writes the outbox rows as a table.
func PrintOutbox(ctx context.Context, db *gorm.DB, w io.Writer) (int, error) {
	sqlDB, err := db.DB()
	if err != nil {
		return 0, err
	}
	rows, err := sqlDB.QueryContext(ctx, `SELECT id, topic, msg_key, event_type, aggregate_id, payload FROM outbox ORDER BY id`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tTOPIC\tKEY\tTYPE\tAGGREGATE\tPAYLOAD")
	n := 0
	for rows.Next() {
		var (
			id                int64
			topic, typ, aggID string
			key               sql.RawBytes
			payload           []byte
		)
		if err := rows.Scan(&id, &topic, &key, &typ, &aggID, &payload); err != nil {
			return n, err
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", id, topic, key, typ, aggID, strings.TrimSpace(string(payload)))
		n++
	}
	if err := rows.Err(); err != nil {
		return n, err
	}
	return n, tw.Flush()
}

// Demo sets up the outbox on db, makes the stock changes of Run and prints
// the outbox rows they produced to w. It fails unless every change left its
// event: three creates, a restock, a reservation (an update and a
// StockReserved event), a rename and a delete.
func Demo(ctx context.Context, db *gorm.DB, w io.Writer, title string) error {
	if _, err := Setup(ctx, db); err != nil {
		return err
	}
	fmt.Fprintf(w, "%s: stock changes through GORM\n", title)
	if err := Run(ctx, db, w); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nThe outbox rows they produced, each committed with its change:")
	n, err := PrintOutbox(ctx, db, w)
	if err != nil {
		return err
	}
	if n != 8 {
		return fmt.Errorf("outbox has %d rows, want 8", n)
	}
	fmt.Fprintf(w, "\n%d events in the outbox; the relay that sends them to Kafka comes next.\n", n)
	return nil
}

// FirstEnv returns the value of the first of keys that is set.
func FirstEnv(keys ...string) string {
	for _, k := range keys {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return ""
}
