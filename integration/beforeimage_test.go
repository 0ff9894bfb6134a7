package integration

import (
	"encoding/json"
	"testing"

	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// With Config.BeforeImage, update and delete events carry
// {"before": …, "after": …}; creates carry the row alone.
func TestCaptureBeforeImage(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{BeforeImage: true}, &Inventory{}, &SoftItem{})
		it := Inventory{SKU: "a", Quantity: 5, CostPrice: 3}
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		must(db.Create(&it).Error)
		must(db.Model(&it).Update("quantity", 6).Error)
		must(db.Model(&Inventory{}).Where("sku = ?", "a").Update("quantity", 7).Error)
		must(db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "id"}}, DoUpdates: clause.AssignmentColumns([]string{"quantity"})}).
			Create(&[]Inventory{{ID: it.ID, SKU: "a", Quantity: 8}, {ID: 500, SKU: "b"}}).Error)
		must(db.Delete(&it).Error)
		s := SoftItem{Name: "s"}
		must(db.Create(&s).Error)
		must(db.Delete(&s).Error)

		type ba struct {
			Before map[string]any `json:"before"`
			After  map[string]any `json:"after"`
		}
		rows := readOutbox(t, db, "")
		wantTypes := []string{"InventoryCreated", "InventoryUpdated", "InventoryUpdated", "InventoryUpdated", "InventoryCreated",
			"InventoryDeleted", "SoftItemCreated", "SoftItemDeleted"}
		if len(rows) != len(wantTypes) {
			t.Fatalf("%d events, want %d", len(rows), len(wantTypes))
		}
		q := func(m map[string]any) any {
			if m == nil {
				return nil
			}
			return m["Quantity"]
		}
		checks := []struct{ before, after any }{
			{nil, nil}, {5.0, 6.0}, {6.0, 7.0}, {7.0, 8.0}, {nil, nil}, {8.0, "null"},
		}
		for i, r := range rows {
			if r.Type != wantTypes[i] {
				t.Fatalf("event %d: %s, want %s", i, r.Type, wantTypes[i])
			}
			if r.Type == "InventoryCreated" || r.Type == "SoftItemCreated" {
				if _, ok := r.Payload["before"]; ok {
					t.Errorf("event %d (%s): a create carries a before-image: %s", i, r.Type, r.RawPayload)
				}
				continue
			}
			var p ba
			if err := json.Unmarshal(r.RawPayload, &p); err != nil {
				t.Fatalf("event %d: %s: %v", i, r.RawPayload, err)
			}
			if _, leaked := p.Before["CostPrice"]; leaked {
				t.Errorf("event %d: the before-image leaks an excluded field: %s", i, r.RawPayload)
			}
			if i < len(checks) {
				c := checks[i]
				if q(p.Before) != c.before {
					t.Errorf("event %d: before quantity %v, want %v (%s)", i, q(p.Before), c.before, r.RawPayload)
				}
				if c.after == "null" {
					if p.After != nil {
						t.Errorf("event %d: hard delete has an after-image: %s", i, r.RawPayload)
					}
				} else if q(p.After) != c.after {
					t.Errorf("event %d: after quantity %v, want %v (%s)", i, q(p.After), c.after, r.RawPayload)
				}
			}
			if r.Type == "SoftItemDeleted" && (p.Before["DeletedAt"] != nil || p.After["DeletedAt"] == nil) {
				t.Errorf("soft delete: before/after deleted_at wrong: %s", r.RawPayload)
			}
		}
	})
}
