package gormoutbox

import (
	"sync"
	"testing"

	"gorm.io/gorm/schema"
)

type regModel struct {
	Source `outbox:"topic:reg"`
	ID     uint `gorm:"primaryKey"`
}

// Sixteen goroutines using a model for the first time at once parse its
// tags once.
func TestRegistryParsesOnce(t *testing.T) {
	sch, err := schema.Parse(&regModel{}, &sync.Map{}, schema.NamingStrategy{})
	if err != nil {
		t.Fatal(err)
	}
	var r registry
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if m, err := r.lookup(sch); err != nil || m == nil {
				t.Errorf("lookup: %v, %v", m, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if n := r.parses.Load(); n != 1 {
		t.Fatalf("%d parses, want 1", n)
	}
}

type keyByPK struct {
	Source `outbox:"topic:k"`
	ID     uint `gorm:"primaryKey"`
}

type keyUniqueTag struct {
	Source `outbox:"topic:k"`
	ID     uint   `gorm:"primaryKey"`
	SKU    string `gorm:"unique" outbox:"key"`
}

type keyUniqueIndex struct {
	Source `outbox:"topic:k"`
	ID     uint   `gorm:"primaryKey"`
	A      string `gorm:"uniqueIndex:ab" outbox:"key"`
	B      string `gorm:"uniqueIndex:ab" outbox:"key"`
}

type keyShared struct {
	Source `outbox:"topic:k"`
	ID     uint   `gorm:"primaryKey"`
	Order  string `gorm:"index" outbox:"key"`
}

type keyPartialUnique struct {
	Source `outbox:"topic:k"`
	ID     uint   `gorm:"primaryKey"`
	Code   string `gorm:"uniqueIndex:,where:code <> ''" outbox:"key"`
}

// A model's key is locked at capture unless it is the primary key or
// unique by its tags (a partial unique index does not count).
func TestKeyLocked(t *testing.T) {
	for _, c := range []struct {
		model  any
		locked bool
	}{{&keyByPK{}, false}, {&keyUniqueTag{}, false}, {&keyUniqueIndex{}, false}, {&keyShared{}, true}, {&keyPartialUnique{}, true}} {
		sch, err := schema.Parse(c.model, &sync.Map{}, schema.NamingStrategy{})
		if err != nil {
			t.Fatal(err)
		}
		var r registry
		m, err := r.lookup(sch)
		if err != nil || m == nil {
			t.Fatalf("%T: %v", c.model, err)
		}
		if m.keyLocked != c.locked {
			t.Errorf("%T: keyLocked %t, want %t", c.model, m.keyLocked, c.locked)
		}
	}
}
