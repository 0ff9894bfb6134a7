package integration

import (
	"context"

	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
	"github.com/go-outbox/outbox/scheduler"
)

// wakeSetup starts a relay on a schedule that never fires within the
// test (hourly), so that only wake-ups can publish: on PostgreSQL through
// Listen alone (the plugin's Wake is not set), on MySQL through the
// plugin's Wake.
func wakeSetup(t *testing.T, d testenv.Dialect) (*gorm.DB, *gormoutbox.Relay, *scheduler.Scheduler) {
	t.Helper()
	var sched atomic.Pointer[scheduler.Scheduler]
	cfg := gormoutbox.Config{}
	if d.Name != "postgres" {
		cfg.Wake = func() {
			if s := sched.Load(); s != nil {
				_ = s.Wake("relay")
			}
		}
	}
	db, _ := setup(t, d, nil, cfg, &Inventory{})
	brokers, _ := kafkaenv.Kafka(t, 2)
	kafkaenv.CreateTopic(t, brokers, "inventory", 2)
	r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{})
	s := scheduler.New(scheduler.Config{})
	if err := s.Add("relay", "@every 1h", scheduler.RelayJob(r)); err != nil {
		t.Fatal(err)
	}
	s.Start()
	sched.Store(s)
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	if d.Name == "postgres" {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = r.ListenWith(ctx, func() { _ = s.Wake("relay") }, pgListen(""))
		}()
		t.Cleanup(func() { cancel(); <-done })
		waitListening(t, db)
	}
	return db, r, s
}

// waitListening waits until a session of this database is LISTENing.
func waitListening(t *testing.T, db *gorm.DB) {
	t.Helper()
	sqlDB, _ := db.DB()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		var n int
		_ = sqlDB.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'
  AND application_name = current_setting('application_name')`).Scan(&n)
		if n > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the relay is not listening after 10s")
}

// publishedWithin waits until the outbox has n published rows and
// returns how long it took, failing after limit.
func publishedWithin(t *testing.T, db *gorm.DB, n int64, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if countRows(t, db, "published_at IS NOT NULL") >= n {
			return time.Since(start)
		}
		if time.Since(start) > limit {
			t.Fatalf("%d rows published after %v, want %d (no wake-up?)", countRows(t, db, "published_at IS NOT NULL"), limit, n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// After a commit, the relay publishes without waiting for its cron tick:
// for a write in GORM's own transaction, in db.Transaction, and in
// Begin/Commit.
func TestWakeAfterCommit(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _, _ := wakeSetup(t, d)
		var lat []time.Duration
		if err := db.Create(&Inventory{SKU: "w1"}).Error; err != nil {
			t.Fatal(err)
		}
		lat = append(lat, publishedWithin(t, db, 1, 2*time.Second))
		if err := db.Transaction(func(tx *gorm.DB) error { return tx.Create(&Inventory{SKU: "w2"}).Error }); err != nil {
			t.Fatal(err)
		}
		lat = append(lat, publishedWithin(t, db, 2, 2*time.Second))
		tx := db.Begin()
		if err := tx.Create(&Inventory{SKU: "w3"}).Error; err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // commit later than the first delayed wake-up
		if err := tx.Commit().Error; err != nil {
			t.Fatal(err)
		}
		lat = append(lat, publishedWithin(t, db, 3, 2*time.Second))
		t.Logf("%s: commit to published: GORM's transaction %v, db.Transaction %v, Begin/Commit %v", d.Name, lat[0], lat[1], lat[2])
	})
}

// The LISTEN connection is killed: the relay reconnects and the next
// commit still wakes it.
func TestListenReconnects(t *testing.T) {
	for _, d := range testenv.Dialects() {
		if d.Name != "postgres" {
			continue
		}
		db, _, _ := wakeSetup(t, d)
		sqlDB, _ := db.DB()
		var killed int
		if err := sqlDB.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND query LIKE 'LISTEN %'
  AND application_name = current_setting('application_name')`).Scan(&killed); err != nil || killed != 1 {
			t.Fatalf("terminate the listener: %d, %v", killed, err)
		}
		waitListening(t, db)
		if err := db.Transaction(func(tx *gorm.DB) error { return tx.Create(&Inventory{SKU: "after"}).Error }); err != nil {
			t.Fatal(err)
		}
		lat := publishedWithin(t, db, 1, 3*time.Second)
		t.Logf("published %v after the commit, with a new LISTEN connection", lat)
	}
}

// Config.DisableNotify turns the NOTIFY trigger off at Migrate, and a
// Migrate without it turns it back on.
func TestDisableNotify(t *testing.T) {
	for _, d := range testenv.Dialects() {
		if d.Name != "postgres" {
			continue
		}
		ctx := context.Background()
		// A table name of its own: the channel is derived from the table
		// name, so parallel tests' "outbox" tables in other schemas of the
		// same database notify on the channel of "outbox" (it flaked).
		const table = "outbox_quiet"
		db, _ := setup(t, d, nil, gormoutbox.Config{Table: table, DisableNotify: true}, &Inventory{})
		sqlDB, _ := db.DB()
		state := func() string {
			var s string
			if err := sqlDB.QueryRow(`SELECT tgenabled::text FROM pg_trigger WHERE tgname = '` + table + `_notify' AND tgrelid = '` + table + `'::regclass`).Scan(&s); err != nil {
				t.Fatal(err)
			}
			return s
		}
		if s := state(); s != "D" {
			t.Fatalf("trigger state %q after Migrate with DisableNotify, want D", s)
		}
		r := newRelay(t, db, &slowPublisher{}, gormoutbox.RelayConfig{})
		var n atomic.Int32
		lctx, cancel := context.WithCancel(ctx)
		defer cancel()
		go func() { _ = r.ListenWith(lctx, func() { n.Add(1) }, pgListen("")) }()
		waitListening(t, db)
		if err := db.Create(&Inventory{SKU: "quiet"}).Error; err != nil {
			t.Fatal(err)
		}
		time.Sleep(200 * time.Millisecond)
		if got := n.Load(); got != 0 {
			t.Fatalf("%d notifications with the trigger disabled", got)
		}
		p2 := gormoutbox.New(gormoutbox.Config{Table: table})
		// Re-enable through a Migrate of a plugin without the option on the
		// same database.
		other, err := gorm.Open(db.Dialector, &gorm.Config{})
		if err != nil {
			t.Fatal(err)
		}
		if err := other.Use(p2); err != nil {
			t.Fatal(err)
		}
		if err := p2.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		if s := state(); s != "O" {
			t.Fatalf("trigger state %q after Migrate without DisableNotify, want O", s)
		}
		if err := db.Create(&Inventory{SKU: "loud"}).Error; err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for n.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if n.Load() == 0 {
			t.Fatal("no notification after the trigger was enabled again")
		}
	}
}
