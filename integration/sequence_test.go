package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
)

// Concurrent writers of captured rows and of explicit events: on the
// topic, every keyed message carries x-sequence and x-sequence-source, its
// numbers per key rise in the order of first delivery, which is commit
// order (each item's quantity rises with them), a redelivered event —
// published, then the relay "died" before recording it — carries the same
// number again, and keyless events carry neither.
func TestSequenceHeader(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		brokers, _ := kafkaenv.Kafka(t, 4)
		kafkaenv.CreateTopic(t, brokers, "inventory", 4)
		explicit := kafkaenv.TopicName("seq-orders")
		kafkaenv.CreateTopic(t, brokers, explicit, 2)

		items := make([]*Inventory, 4)
		for i := range items {
			items[i] = &Inventory{SKU: fmt.Sprintf("S-%d", i)}
		}
		if err := db.Create(&items).Error; err != nil {
			t.Fatal(err)
		}
		const writers, each = 16, 12
		var wg sync.WaitGroup
		errs := make(chan error, writers)
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; i < each; i++ {
					var err error
					switch i % 3 {
					case 0, 1: // a captured update of a random item
						it := items[rand.IntN(len(items))]
						err = db.Model(&Inventory{ID: it.ID}).Update("quantity", gorm.Expr("quantity + 1")).Error
					case 2: // explicit events of three keys, and one without a key
						err = db.Transaction(func(tx *gorm.DB) error {
							if err := gormoutbox.Publish(tx, gormoutbox.Event{Topic: explicit, Key: fmt.Sprint("o-", w%3),
								Type: "OrderNoted", Payload: map[string]int{"w": w}}); err != nil {
								return err
							}
							return gormoutbox.Publish(tx, gormoutbox.Event{Topic: explicit, Type: "Tick", Payload: map[string]int{"w": w}})
						})
					}
					if err != nil {
						errs <- err
						return
					}
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("writer: %v", err)
		}

		// The first two batches reach the broker, and then the relay is
		// told they failed (as when it dies before recording them): they
		// are published again.
		real := newPublisher(t, brokers, kafka.Config{})
		var calls atomic.Int32
		pub := funcPublisher(func(ctx context.Context, msgs []gormoutbox.Message) error {
			if err := real.Publish(ctx, msgs); err != nil {
				return err
			}
			if calls.Add(1) <= 2 {
				return fmt.Errorf("%w: the test forgets a batch the broker took", gormoutbox.ErrBrokerUnavailable)
			}
			return nil
		})
		cfg := fastRetry
		cfg.BatchSize = 40
		r := newRelay(t, db, pub, cfg)
		drainUntilEmpty(t, r, 30*time.Second)

		creates := len(items)
		updates := writers * ((each + 2) / 3 * 2)
		explicitN := writers * (each / 3) * 2
		var got []kafkaenv.Record
		got = append(got, kafkaenv.ReadTopic(t, brokers, "inventory", creates+updates, 30*time.Second, nil)...)
		got = append(got, kafkaenv.ReadTopic(t, brokers, explicit, explicitN, 30*time.Second, nil)...)

		type key struct{ topic, key string }
		seqOf := map[string]string{} // event id → x-sequence
		last := map[key]int64{}      // the last number first delivered per key
		lastQty := map[string]int{}  // the quantity of that message per item
		topicOf := func(r kafkaenv.Record) string {
			if r.Headers[gormoutbox.HeaderEventType] == "OrderNoted" || r.Headers[gormoutbox.HeaderEventType] == "Tick" {
				return explicit
			}
			return "inventory"
		}
		redelivered := 0
		sources := map[string]int{}
		for _, m := range got {
			id := m.Headers[gormoutbox.HeaderEventID]
			s, has := m.Headers[gormoutbox.HeaderSequence]
			src, hasSrc := m.Headers[gormoutbox.HeaderSequenceSource]
			if m.Key == nil {
				if has || hasSrc {
					t.Errorf("event %s without a key carries x-sequence %q, source %q", id, s, src)
				}
				continue
			}
			sources[src]++
			if prev, ok := seqOf[id]; ok {
				redelivered++
				if prev != s {
					t.Errorf("event %s delivered with x-sequence %q, then %q", id, prev, s)
				}
				continue
			}
			seqOf[id] = s
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				t.Fatalf("event %s: x-sequence %q: %v", id, s, err)
			}
			k := key{topicOf(m), string(m.Key)}
			if n <= last[k] {
				t.Errorf("key %v: x-sequence %d first delivered after %d", k, n, last[k])
			}
			last[k] = n
			if k.topic == "inventory" && m.Headers[gormoutbox.HeaderEventType] != "InventoryCreated" {
				var v struct{ Quantity int }
				if err := json.Unmarshal(m.Value, &v); err != nil {
					t.Fatalf("payload of %s: %v", id, err)
				}
				if v.Quantity <= lastQty[k.key] {
					t.Errorf("item %s: quantity %d at x-sequence %d after %d", k.key, v.Quantity, n, lastQty[k.key])
				}
				lastQty[k.key] = v.Quantity
			}
		}
		if len(sources) != 1 || sources[""] != 0 {
			t.Errorf("x-sequence-source values %v: want one, on every numbered message", sources)
		}
		if redelivered == 0 {
			t.Fatal("no event was delivered twice: the test did not exercise redelivery")
		}
	})
}

// Line is an event source keyed by a field that is neither its primary
// key nor unique: lines of one order share the key.
type Line struct {
	gormoutbox.Source `outbox:"topic:lines"`
	ID                uint   `gorm:"primaryKey"`
	OrderRef          string `gorm:"size:32" outbox:"key"`
	Qty               int
}

// Writers of a key that rows of different entities share (Line's
// OrderRef), and of explicit events, lock it: the second waits for the
// first to commit, so ids — x-sequence numbers — follow commit order.
// Writers of a primary key or a unique key (Inventory's SKU) take no
// lock: their entity's row or index orders them, and different entities
// do not wait for each other.
func TestKeyLocks(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Line{}, &Inventory{})
		// second runs write in a transaction of its own and reports when
		// it committed.
		second := func(write func(tx *gorm.DB) error) <-chan error {
			done := make(chan error, 1)
			go func() { done <- db.Transaction(write) }()
			return done
		}
		cases := []struct {
			name         string
			first, other func(tx *gorm.DB) error
			waits        bool
		}{
			{"shared key", func(tx *gorm.DB) error { return tx.Create(&Line{OrderRef: "o-1", Qty: 1}).Error },
				func(tx *gorm.DB) error { return tx.Create(&Line{OrderRef: "o-1", Qty: 2}).Error }, true},
			{"explicit events", func(tx *gorm.DB) error {
				return gormoutbox.Publish(tx, gormoutbox.Event{Topic: "orders", Key: "o-2", Type: "Noted", Payload: 1})
			}, func(tx *gorm.DB) error {
				return gormoutbox.Publish(tx, gormoutbox.Event{Topic: "orders", Key: "o-2", Type: "Noted", Payload: 2})
			}, true},
			{"unique key", func(tx *gorm.DB) error { return tx.Create(&Inventory{SKU: "K-1"}).Error },
				func(tx *gorm.DB) error { return tx.Create(&Inventory{SKU: "K-2"}).Error }, false},
			{"another shared key", func(tx *gorm.DB) error { return tx.Create(&Line{OrderRef: "o-3"}).Error },
				func(tx *gorm.DB) error { return tx.Create(&Line{OrderRef: "o-4"}).Error }, false},
		}
		for _, c := range cases {
			tx := db.Begin()
			if err := c.first(tx); err != nil {
				tx.Rollback()
				t.Fatalf("%s: %v", c.name, err)
			}
			done := second(c.other)
			select {
			case err := <-done:
				if c.waits {
					t.Errorf("%s: the second writer committed before the first (err %v)", c.name, err)
				} else if err != nil {
					t.Errorf("%s: %v", c.name, err)
				}
				if err := tx.Commit().Error; err != nil {
					t.Fatal(err)
				}
				continue
			case <-time.After(500 * time.Millisecond):
				if !c.waits {
					t.Errorf("%s: the second writer waited for the first", c.name)
				}
			}
			if err := tx.Commit().Error; err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("%s: second writer: %v", c.name, err)
			}
		}
	})
}
