package integration

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

type ConcA struct {
	gormoutbox.Source `outbox:"topic:conc-a"`
	ID                uint `gorm:"primaryKey"`
	N                 int
}

type ConcB struct {
	gormoutbox.Source `outbox:"topic:conc-b"`
	ID                uint `gorm:"primaryKey"`
	N                 int
}

type ConcC struct {
	gormoutbox.Source `outbox:"topic:conc-c"`
	ID                uint `gorm:"primaryKey"`
	N                 int
}

type ConcD struct {
	gormoutbox.Source `outbox:"topic:conc-d"`
	ID                uint `gorm:"primaryKey"`
	N                 int
}

// Sixteen goroutines write four tagged model types, each used for the first
// time concurrently, while Validate and Migrate run: no race (go test
// -race), and exactly one event per write, in each writer's order.
func TestConcurrentWritersFirstUse(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db := d.Open(t, nil)
		p := gormoutbox.New(gormoutbox.Config{})
		if err := db.Use(p); err != nil {
			t.Fatal(err)
		}
		if err := p.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		// Tables exist, but no model has been parsed by the plugin yet.
		if err := db.AutoMigrate(&ConcA{}, &ConcB{}, &ConcC{}, &ConcD{}); err != nil {
			t.Fatal(err)
		}
		const writers, perWriter = 16, 25
		var wg sync.WaitGroup
		errs := make(chan error, writers+8)
		for w := 0; w < writers; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				for i := 0; i < perWriter; i++ {
					var v any
					switch w % 4 {
					case 0:
						v = &ConcA{N: w*1000 + i}
					case 1:
						v = &ConcB{N: w*1000 + i}
					case 2:
						v = &ConcC{N: w*1000 + i}
					default:
						v = &ConcD{N: w*1000 + i}
					}
					if err := db.Create(v).Error; err != nil {
						errs <- fmt.Errorf("writer %d: %w", w, err)
						return
					}
				}
			}(w)
		}
		for i := 0; i < 4; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if err := p.Validate(&ConcA{}, &ConcB{}, &ConcC{}, &ConcD{}); err != nil {
					errs <- err
				}
				if err := p.Migrate(context.Background()); err != nil {
					errs <- err
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		rows := readOutbox(t, db, "")
		if len(rows) != writers*perWriter {
			t.Fatalf("%d outbox rows, want %d", len(rows), writers*perWriter)
		}
		last := map[int]int{}
		for _, r := range rows {
			n := int(r.Payload["N"].(float64))
			w := n / 1000
			if prev, ok := last[w]; ok && n <= prev {
				t.Fatalf("writer %d: event for N=%d after N=%d", w, n, prev)
			}
			last[w] = n
			if want := fmt.Sprintf("conc-%c", 'a'+w%4); r.Topic != want {
				t.Fatalf("N=%d on topic %s, want %s", n, r.Topic, want)
			}
		}
		var total int64
		for _, m := range []any{&ConcA{}, &ConcB{}, &ConcC{}, &ConcD{}} {
			total += count(t, db.Session(&gorm.Session{}), m)
		}
		if total != writers*perWriter {
			t.Fatalf("%d entity rows, want %d", total, writers*perWriter)
		}
	})
}
