package integration

import (
	"context"
	"encoding/json"
	"slices"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// An event with Event.NotBefore is not published before that time; a
// later event of its key waits behind it (the key's order is kept), and
// other keys flow meanwhile.
func TestDelayedEvent(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		const delay = 1500 * time.Millisecond
		at := time.Now().Add(delay)
		if err := db.Transaction(func(tx *gorm.DB) error {
			return gormoutbox.Publish(tx,
				gormoutbox.Event{Topic: "delayed", Key: "k", Type: "Reminder", Payload: json.RawMessage(`{"i":1}`), NotBefore: at},
				gormoutbox.Event{Topic: "delayed", Key: "k", Type: "Reminder", Payload: json.RawMessage(`{"i":2}`)},
				gormoutbox.Event{Topic: "delayed", Key: "j", Type: "Reminder", Payload: json.RawMessage(`{"i":3}`)},
				// A time already past is at once.
				gormoutbox.Event{Topic: "delayed", Key: "p", Type: "Reminder", Payload: json.RawMessage(`{"i":4}`),
					NotBefore: time.Now().Add(-time.Hour)})
		}); err != nil {
			t.Fatal(err)
		}
		pub := &recordingPublisher{}
		r := newRelay(t, db, pub, gormoutbox.RelayConfig{Workers: 1, LockWait: -1})
		if _, err := r.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		pub.mu.Lock()
		early := map[string][]string{"k": pub.byKey["k"], "j": pub.byKey["j"], "p": pub.byKey["p"]}
		pub.mu.Unlock()
		if len(early["k"]) != 0 || !slices.Equal(early["j"], []string{`{"i":3}`}) || !slices.Equal(early["p"], []string{`{"i":4}`}) {
			t.Fatalf("published before the delay: %v; want key j's and p's events only", early)
		}
		for time.Now().Before(at.Add(-200 * time.Millisecond)) {
			if _, err := r.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			pub.mu.Lock()
			n := len(pub.byKey["k"])
			pub.mu.Unlock()
			if n != 0 {
				t.Fatalf("key k published %v before its event's time", time.Until(at))
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(time.Until(at) + 50*time.Millisecond)
		drainUntilEmpty(t, r, 10*time.Second)
		pub.mu.Lock()
		defer pub.mu.Unlock()
		if got := pub.byKey["k"]; !slices.Equal(got, []string{`{"i":1}`, `{"i":2}`}) {
			t.Fatalf("key k published %v, want the delayed event, then the one behind it", got)
		}
	})
}
