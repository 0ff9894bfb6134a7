package eventid

import (
	"regexp"
	"sync"
	"testing"
	"time"
)

var v7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

func TestFormatAndOrder(t *testing.T) {
	var g Generator
	prev := ""
	for i := 0; i < 100000; i++ {
		id := g.New()
		if !v7.MatchString(id) {
			t.Fatalf("id %q is not a UUIDv7", id)
		}
		if id <= prev {
			t.Fatalf("id %q not after %q", id, prev)
		}
		prev = id
	}
}

func TestCounterOverflowBorrowsNextMillisecond(t *testing.T) {
	fixed := time.UnixMilli(1_700_000_000_000)
	g := Generator{now: func() time.Time { return fixed }}
	prev := ""
	for i := 0; i < 5*4096; i++ {
		id := g.New()
		if id <= prev {
			t.Fatalf("id %d %q not after %q", i, id, prev)
		}
		prev = id
	}
	ts, ok := Time(prev)
	if !ok || ts.Before(fixed) || ts.Sub(fixed) > 10*time.Millisecond {
		t.Fatalf("time of last id = %v, %v; want within 10ms after %v", ts, ok, fixed)
	}
}

func TestConcurrentUnique(t *testing.T) {
	var g Generator
	var mu sync.Mutex
	seen := map[string]bool{}
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]string, 0, 5000)
			for i := 0; i < 5000; i++ {
				local = append(local, g.New())
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range local {
				if seen[id] {
					t.Errorf("duplicate id %s", id)
				}
				seen[id] = true
			}
		}()
	}
	wg.Wait()
	if len(seen) != 40000 {
		t.Fatalf("got %d unique ids, want 40000", len(seen))
	}
}

func TestTime(t *testing.T) {
	var g Generator
	before := time.Now().Add(-time.Millisecond)
	ts, ok := Time(g.New())
	if !ok || ts.Before(before) || ts.After(time.Now().Add(time.Millisecond)) {
		t.Fatalf("Time = %v, %v", ts, ok)
	}
	if _, ok := Time("not-a-uuid"); ok {
		t.Fatal("Time accepted a non-UUID")
	}
}
