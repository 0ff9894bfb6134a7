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
