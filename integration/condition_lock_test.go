package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"testing"
	"time"

	"gorm.io/gorm"
	"gorm.io/gorm/clause"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// LockOrderRow is the model of TestUpdateByConditionLocksInKeyOrder.
type LockOrderRow struct {
	gormoutbox.Source `outbox:"topic:lock-order"`
	ID                uint `gorm:"primaryKey;autoIncrement:false"`
	N                 int
}

// An update by condition locks the rows it matches in primary-key order,
// whatever order the database finds them in (two such updates then cannot
// deadlock on their rows), and emits their events in that order. The rows
// are stored in the reverse of their key order (on PostgreSQL a sequential
// scan finds the highest key first); a transaction holds the row of the
// highest key; once the update waits for it, the row of the lowest key
// must be locked already (NOWAIT fails). Then the update goes through,
// with its events in key order and, with BeforeImage, their before-images.
func TestUpdateByConditionLocksInKeyOrder(t *testing.T) {
	for _, before := range []bool{false, true} {
		t.Run(fmt.Sprintf("BeforeImage=%v", before), func(t *testing.T) {
			forEachCaptureDialect(t, func(t *testing.T, d testenv.Dialect) {
				db, _ := setup(t, d, nil, gormoutbox.Config{BeforeImage: before}, &LockOrderRow{})
				const n = 10
				for id := n; id >= 1; id-- {
					if err := db.Clauses(gormoutbox.Skip("fixture: rows stored in reverse key order")).
						Create(&LockOrderRow{ID: uint(id), N: id}).Error; err != nil {
						t.Fatal(err)
					}
				}
				sqlDB, err := db.DB()
				if err != nil {
					t.Fatal(err)
				}
				ph := "?"
				if d.Name == "postgres" {
					ph = "$1"
				}
				ctx := context.Background()
				holder, err := sqlDB.BeginTx(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer func() { _ = holder.Rollback() }()
				var got int
				if err := holder.QueryRowContext(ctx, `SELECT id FROM lock_order_rows WHERE id = `+ph+` FOR UPDATE`, n).Scan(&got); err != nil {
					t.Fatal(err)
				}
				done := make(chan *gorm.DB, 1)
				go func() {
					done <- db.Model(&LockOrderRow{}).Where("n > ?", 0).Update("n", gorm.Expr("n + 100"))
				}()
				if d.Name == "postgres" {
					// MariaDB (InnoDB) finds rows by condition in key order
					// anyway (clustered by the key); PostgreSQL finds these
					// in the reverse order, and must lock them in key order.
					waitForLock(t, sqlDB, done)
					_, err = holder.ExecContext(ctx, `SELECT id FROM lock_order_rows WHERE id = $1 FOR UPDATE NOWAIT`, 1)
					if err == nil {
						t.Fatal("the row of the lowest key is not locked while the update waits for the highest: not locked in key order")
					}
				} else {
					time.Sleep(100 * time.Millisecond)
				}
				if err := holder.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
					t.Fatal(err)
				}
				res := <-done
				if res.Error != nil || res.RowsAffected != n {
					t.Fatalf("update: %v, %d rows affected, want %d", res.Error, res.RowsAffected, n)
				}
				rows := readOutbox(t, db, "")
				if len(rows) != n {
					t.Fatalf("%d events, want %d", len(rows), n)
				}
				for i, r := range rows {
					id := i + 1
					if r.AggregateID != strconv.Itoa(id) || r.Type != "LockOrderRowUpdated" {
						t.Fatalf("event %d: %s of row %s, want LockOrderRowUpdated of row %d (key order)", i, r.Type, r.AggregateID, id)
					}
					after, wantN := r.Payload, float64(id+100)
					if before {
						b, _ := r.Payload["before"].(map[string]any)
						if b == nil || b["N"] != float64(id) {
							t.Fatalf("event %d: before-image %v, want N %d", i, r.Payload["before"], id)
						}
						after, _ = r.Payload["after"].(map[string]any)
					}
					if after == nil || after["N"] != wantN {
						t.Fatalf("event %d: payload %s, want N %v", i, r.RawPayload, wantN)
					}
				}
			})
		})
	}
}

// An update by condition that matches nothing writes no event; one by
// Where(…).Or(…) writes the events of the rows either matches; a RETURNING
// of the caller's is honoured (the plugin then reads the rows itself).
func TestUpdateByConditionEdges(t *testing.T) {
	forEachCaptureDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &LockOrderRow{})
		for id := 1; id <= 3; id++ {
			if err := db.Create(&LockOrderRow{ID: uint(id), N: id}).Error; err != nil {
				t.Fatal(err)
			}
		}
		base := len(readOutbox(t, db, ""))
		res := db.Model(&LockOrderRow{}).Where("n > ?", 100).Update("n", 0)
		if res.Error != nil || res.RowsAffected != 0 || len(readOutbox(t, db, "")) != base {
			t.Fatalf("update matching nothing: %v, %d rows, %d events", res.Error, res.RowsAffected, len(readOutbox(t, db, ""))-base)
		}
		res = db.Model(&LockOrderRow{}).Where("n = ?", 1).Or("n = ?", 3).Update("n", gorm.Expr("n + 1"))
		if res.Error != nil || res.RowsAffected != 2 {
			t.Fatalf("update by Where.Or: %v, %d rows, want 2", res.Error, res.RowsAffected)
		}
		rows := readOutbox(t, db, "")[base:]
		checkRows(t, rows, want{Type: "LockOrderRowUpdated", Payload: map[string]any{"N": 2}},
			want{Type: "LockOrderRowUpdated", Payload: map[string]any{"N": 4}})
		base += len(rows)
		if d.Name == "postgres" {
			var out []LockOrderRow
			res = db.Model(&out).Clauses(clause.Returning{}).Where("n >= ?", 2).Update("n", gorm.Expr("n * 10"))
			if res.Error != nil || res.RowsAffected != 3 || len(out) != 3 {
				t.Fatalf("update with the caller's RETURNING: %v, %d rows, %d returned", res.Error, res.RowsAffected, len(out))
			}
			rows := readOutbox(t, db, "")[base:]
			checkRows(t, rows, want{Type: "LockOrderRowUpdated", Payload: map[string]any{"N": 20}},
				want{Type: "LockOrderRowUpdated", Payload: map[string]any{"N": 20}},
				want{Type: "LockOrderRowUpdated", Payload: map[string]any{"N": 40}})
		}
	})
}

// waitForLock returns once a session of PostgreSQL database db waits for a
// lock, and fails the test if the update (done) ends first.
func waitForLock(t *testing.T, db *sql.DB, done chan *gorm.DB) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var w int
		if err := db.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`).Scan(&w); err != nil {
			t.Fatal(err)
		}
		if w > 0 {
			return
		}
		select {
		case res := <-done:
			t.Fatalf("the update did not wait for the row held: %v", res.Error)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("the update never waited for the row held")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The events of an upsert show the rows as committed, column by column,
// whether the plugin reads them back or knows them from the statement
// (PostgreSQL, DO UPDATE of columns to the values inserted): a row that
// existed keeps its created_at and the columns not updated, and takes the
// updated_at UpdateAll sets; a new row is as inserted, database defaults
// included; a row the DO UPDATE leaves as it was has no event.
func TestUpsertEventsShowRowsAsCommitted(t *testing.T) {
	forEachCaptureDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		old := []Inventory{{ID: 1, SKU: "u1", Quantity: 1}, {ID: 2, SKU: "u2", Quantity: 2}}
		if err := db.Create(&old).Error; err != nil {
			t.Fatal(err)
		}
		base := len(readOutbox(t, db, ""))
		rows := []Inventory{{ID: 1, SKU: "u1", Quantity: 10}, {ID: 2, SKU: "u2", Quantity: 20}, {ID: 3, SKU: "u3", Quantity: 30}}
		if err := db.Clauses(clause.OnConflict{UpdateAll: true}).Create(&rows).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Clauses(clause.OnConflict{Columns: []clause.Column{{Name: "id"}}, DoUpdates: clause.AssignmentColumns([]string{"quantity"})}).
			Create(&[]Inventory{{ID: 1, SKU: "u1", Quantity: 10, Note: "other"}, {ID: 2, SKU: "u2", Quantity: 21, Note: "other"}}).Error; err != nil {
			t.Fatal(err)
		}
		var committed []Inventory
		if err := db.Order("id").Find(&committed).Error; err != nil {
			t.Fatal(err)
		}
		events := readOutbox(t, db, "")[base:]
		wantIDs := []string{"1", "2", "3", "2"}
		if len(events) != len(wantIDs) {
			t.Fatalf("%d events, want %d (none for the row the second upsert left as it was)", len(events), len(wantIDs))
		}
		for i, ev := range events {
			if ev.AggregateID != wantIDs[i] {
				t.Fatalf("event %d is of row %s, want %s", i, ev.AggregateID, wantIDs[i])
			}
		}
		check := func(ev outboxRow, row Inventory) {
			t.Helper()
			p := ev.Payload
			if p["Quantity"] != float64(row.Quantity) || p["Note"] != row.Note || p["SKU"] != row.SKU {
				t.Fatalf("event of row %d: %s, want the row as committed %+v", row.ID, ev.RawPayload, row)
			}
			for name, want := range map[string]time.Time{"CreatedAt": row.CreatedAt, "UpdatedAt": row.UpdatedAt} {
				s, _ := p[name].(string)
				got, err := time.Parse(time.RFC3339Nano, s)
				if err != nil || !got.Equal(want) {
					t.Fatalf("event of row %d: %s %q, want %s as committed", row.ID, name, s, want.Format(time.RFC3339Nano))
				}
			}
		}
		check(events[0], committed[0]) // row 1: unchanged since
		check(events[2], committed[2]) // row 3: created
		check(events[3], committed[1]) // row 2: its last update
		if committed[1].Note != "none" || committed[1].Quantity != 21 || !committed[1].CreatedAt.Equal(committed[0].CreatedAt) {
			t.Fatalf("rows as committed: %+v", committed)
		}
	})
}
