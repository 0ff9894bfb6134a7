// Package inventory is the shared code of the examples (examples/postgres
// and examples/mysql), whose mains only open the two services' databases
// and call [Sync].
//
// The seed use case: the product service (product.go) owns the inventory
// table and changes stock through GORM; each change writes its event to
// its outbox in the same transaction, and a relay scheduled with cron
// publishes them to Kafka. The order service (order.go) keeps its own copy
// of the inventory, fed from Kafka through the inbox, and answers every
// event with an acknowledgement through its own outbox; the product
// service marks the events processed, or sends a FAILED one again. Sync
// (sync.go) runs both under a burst of random stock changes and checks
// that the two tables end equal.
package inventory

import (
	"context"
	"fmt"
	"math/rand/v2"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
)

// Item is one stock-keeping unit of the product service. It is an event
// source: creates, updates and deletes go to the "inventory" topic keyed by
// SKU, and consumers are asked to acknowledge each one on
// "inventory-acks". The cost price never leaves the service. Version
// grows with every change, so that a consumer can tell a re-sent old event
// from the current state.
type Item struct {
	gormoutbox.Source `outbox:"topic:inventory;aggregate:inventory;ack:inventory-acks"`
	ID                uint   `gorm:"primaryKey" json:"id"`
	SKU               string `gorm:"size:64;uniqueIndex" json:"sku" outbox:"key"`
	Name              string `gorm:"size:128" json:"name"`
	Quantity          int    `json:"quantity"`
	Version           int    `json:"version"`
	CostPrice         int    `json:"-" outbox:"-"`
}

// TableName keeps the table name stable across the examples.
func (Item) TableName() string { return "inventory" }

// changer makes random stock changes on the product service's database.
type changer struct {
	db   *gorm.DB
	rng  *rand.Rand
	skus []string // live SKUs this writer may touch
	id   int      // writer number, for the names of new SKUs
	made int
	// prefix starts every SKU of this run (see orderService.prefix).
	prefix string
}

// change makes one random change in its own transaction: mostly a stock
// movement of a random SKU (an update by condition, so that concurrent
// writers of the same SKU serialise on its row), sometimes a new SKU or a
// discontinued one deleted. It reports whether an event was committed.
func (c *changer) change(ctx context.Context) (bool, error) {
	db := c.db.WithContext(ctx)
	switch r := c.rng.IntN(100); {
	case r < 4 || len(c.skus) == 0: // a new SKU
		c.made++
		it := Item{SKU: fmt.Sprintf("%sw%d-new%d", c.prefix, c.id, c.made), Name: "new item", Quantity: c.rng.IntN(50), Version: 1, CostPrice: 7}
		if err := db.Create(&it).Error; err != nil {
			return false, err
		}
		c.skus = append(c.skus, it.SKU)
		return true, nil
	case r < 7: // discontinued
		i := c.rng.IntN(len(c.skus))
		sku := c.skus[i]
		c.skus = append(c.skus[:i], c.skus[i+1:]...)
		res := db.Where("sku = ?", sku).Delete(&Item{})
		return res.RowsAffected > 0, res.Error
	default: // a stock movement
		sku := c.skus[c.rng.IntN(len(c.skus))]
		delta := c.rng.IntN(21) - 10
		res := db.Model(&Item{}).Where("sku = ?", sku).Updates(map[string]any{
			"quantity": gorm.Expr("quantity + ?", delta),
			"version":  gorm.Expr("version + 1"),
		})
		return res.RowsAffected > 0, res.Error
	}
}
