package inventory

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"strings"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/ack"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/inbox"
)

// Copy is the order service's copy of an inventory row, keyed by SKU. A
// deleted item stays as a tombstone (Deleted), so that a late event of it
// cannot bring it back.
type Copy struct {
	SKU      string `gorm:"primaryKey;size:64"`
	Name     string `gorm:"size:128"`
	Quantity int
	Version  int
	Deleted  bool
}

// TableName: the order service's table is called inventory too.
func (Copy) TableName() string { return "inventory" }

// orderService applies inventory events to the copy and answers each.
type orderService struct {
	// failPercent of the events (chosen by a hash of the change and the
	// seed) fail on their first process attempt.
	failPercent int
	seed        uint64
	// prefix starts the SKUs of this run's product service. On a shared
	// cluster several runs of the example write to the same topics; each
	// order service answers only its own product service's events.
	prefix string
}

// failsOnce reports whether the event of this change (an SKU at a version,
// created, updated or deleted) is one that fails on its first attempt:
// a hash of the change and the seed, so the same seed picks the same
// changes.
func (o *orderService) failsOnce(it Item, typ string) bool {
	if o.failPercent <= 0 {
		return false
	}
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%s/%d/%s", o.seed, it.SKU, it.Version, typ)
	return h.Sum64()%100 < uint64(o.failPercent)
}

// handle is the order service's inbox handler: it applies the event, or
// answers FAILED, in the inbox's transaction; the answer goes out through
// the order service's own outbox.
func (o *orderService) handle(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
	var it Item
	parsed := json.Unmarshal(m.Value, &it) == nil
	if parsed && !strings.HasPrefix(it.SKU, o.prefix) {
		return nil // another run's event
	}
	if parsed && m.Header(gormoutbox.HeaderProcessAttempt) == "1" && o.failsOnce(it, m.Header(gormoutbox.HeaderEventType)) {
		return ack.Reply(tx, m, gormoutbox.AckFailed, "simulated failure (the order service's warehouse was busy)")
	}
	if err := tx.Transaction(func(tx *gorm.DB) error { return apply(tx, m) }); err != nil {
		if errors.Is(err, errBadEvent) {
			// Not worth retrying: say so to the product service.
			return ack.Reply(tx, m, gormoutbox.AckFailed, err.Error())
		}
		return err // retried by the inbox (a database error, say)
	}
	return ack.Reply(tx, m, gormoutbox.AckSuccess, "")
}

var errBadEvent = errors.New("bad inventory event")

// apply brings the copy of the event's SKU up to the event's version:
// events are applied in order per SKU, but a re-sent event is older than
// what came after it and is then skipped.
func apply(tx *gorm.DB, m *inbox.Message) error {
	var it Item
	if err := json.Unmarshal(m.Value, &it); err != nil || it.SKU == "" {
		return fmt.Errorf("%w: payload %.100q: %v", errBadEvent, m.Value, err)
	}
	typ := m.Header(gormoutbox.HeaderEventType)
	deleted := strings.HasSuffix(typ, "Deleted")
	// A new SKU is inserted first, and only a row that exists is locked:
	// SELECT … FOR UPDATE of a missing row takes a gap lock (InnoDB), and
	// two workers' gap locks in the same gap, each followed by an INSERT
	// into it, deadlock.
	res := tx.Clauses(clause.OnConflict{DoNothing: true}).
		Create(&Copy{SKU: it.SKU, Name: it.Name, Quantity: it.Quantity, Version: it.Version, Deleted: deleted})
	if res.Error != nil || res.RowsAffected == 1 {
		return res.Error
	}
	var cur Copy
	if err := tx.Clauses(clause.Locking{Strength: "UPDATE"}).Where("sku = ?", it.SKU).Take(&cur).Error; err != nil {
		return err
	}
	switch {
	case deleted && it.Version >= cur.Version:
		return tx.Model(&cur).Updates(map[string]any{"deleted": true, "version": it.Version}).Error
	case !deleted && it.Version > cur.Version && !cur.Deleted:
		return tx.Model(&cur).Updates(map[string]any{"name": it.Name, "quantity": it.Quantity, "version": it.Version}).Error
	}
	return nil // older than the copy: a re-sent event
}
