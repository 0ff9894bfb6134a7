package integration

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/ack"
	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/mysql"
	"github.com/go-outbox/outbox/dialects/postgres"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/inbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
)

// PrivItem is written by a role that may only insert into the outbox; its
// events ask for an answer.
type PrivItem struct {
	gormoutbox.Source `outbox:"topic:priv-items;ack:priv-items-acks"`
	ID                uint   `gorm:"primaryKey"`
	SKU               string `gorm:"size:32"`
	Quantity          int
}

// privCopy is what the consuming service's handler writes.
type privCopy struct {
	EventID string `gorm:"primaryKey;size:64"`
	Topic   string `gorm:"size:64"`
}

// The privileges the README's "Privileges" section lists, per part. The
// tables of the services themselves (priv_items, priv_copies) get their
// usual DML.
var documentedPrivileges = map[string]map[string]string{
	// capture: the outbox's INSERT only (PostgreSQL: no sequence, no
	// EXECUTE on the NOTIFY trigger's function; its key locks are advisory
	// locks, which need nothing).
	"capture": {"outbox": "INSERT", "priv_items": "SELECT, INSERT, UPDATE, DELETE"},
	// the relay: claim (SELECT … FOR UPDATE), mark; LISTEN and GET_LOCK
	// need nothing.
	"relay": {"outbox": "SELECT, UPDATE", "outbox_keys": "SELECT"},
	// cleanup: the batch to delete is picked FOR UPDATE SKIP LOCKED on
	// PostgreSQL, which takes UPDATE as well.
	"cleanup": {"outbox": "SELECT, DELETE"},
	// the consuming service: its inbox, its own table, its answers through
	// its outbox (capture).
	"consumer": {"inbox": "SELECT, INSERT, UPDATE, DELETE", "priv_copies": "SELECT, INSERT, UPDATE, DELETE", "outbox": "INSERT"},
	// acknowledgements: the producer's tracker reads its outbox rows FOR
	// UPDATE and updates them, through an inbox of its own.
	"acks": {"outbox": "SELECT, UPDATE", "ack_inbox": "SELECT, INSERT, UPDATE, DELETE"},
}

// postgresExtra are the privileges PostgreSQL needs beyond
// documentedPrivileges.
var postgresExtra = map[string]map[string]string{
	"cleanup": {"outbox": "UPDATE"},
}

// mysqlExtra are the privileges MySQL needs beyond documentedPrivileges:
// the key locks of explicit events (the consumer's answers) are rows of
// the keys table, upserted (MariaDB asks SELECT of an ON DUPLICATE KEY
// UPDATE too).
var mysqlExtra = map[string]map[string]string{
	"capture":  {"outbox_keys": "SELECT, INSERT, UPDATE"},
	"consumer": {"outbox_keys": "SELECT, INSERT, UPDATE"},
}

// privRole creates the role of part with the documented privileges.
func privRole(t *testing.T, admin *gorm.DB, part string) *testenv.Role {
	t.Helper()
	r := testenv.NewRole(t, admin, part)
	for table, privs := range documentedPrivileges[part] {
		r.Grant(t, privs, table)
	}
	if admin.Dialector.Name() == "mysql" {
		for table, privs := range mysqlExtra[part] {
			r.Grant(t, privs, table)
		}
	}
	if admin.Dialector.Name() == "postgres" {
		for table, privs := range postgresExtra[part] {
			r.Grant(t, privs, table)
		}
		if part == "capture" {
			// The service's own table has a serial key (not the outbox:
			// its identity column needs no grant).
			r.Admin(t, `GRANT USAGE ON SEQUENCE priv_items_id_seq TO `+r.Name)
		}
	}
	return r
}

// applyDDL creates a table of the library from its printed DDL, as an
// admin would, statement by statement.
func applyDDL(t *testing.T, db *gorm.DB, script dialects.Script, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range script.Steps {
		for _, s := range st.Statements {
			if _, err := sqlDB.Exec(s); err != nil {
				t.Fatalf("DDL of %s, version %d: %s: %v", script.Table, st.Version, s, err)
			}
		}
	}
}

// testLog writes to the test's log.
type testLog struct{ t *testing.T }

func (w testLog) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(b), "\n"))
	return len(b), nil
}

// wantDenied fails the test unless err is the database refusing a
// privilege.
func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	if err == nil || !strings.Contains(strings.ToLower(err.Error()), "denied") {
		t.Errorf("%s: want a permission error, got %v", what, err)
	}
}

func countWhere(t *testing.T, db *gorm.DB, table, where string, args ...any) int64 {
	t.Helper()
	var n int64
	if err := db.Table(table).Where(where, args...).Count(&n).Error; err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// The tables are created by an admin from the printed DDL; then roles that
// hold only the privileges the README lists — no ownership, no CREATE —
// capture, relay, consume, answer, apply the answers and clean up.
func TestLeastPrivileges(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		admin := d.Open(t, nil)
		driver := admin.Dialector.Name()
		script, err := gormoutbox.DDL(driver, "outbox")
		applyDDL(t, admin, script, err)
		script, err = inbox.DDL(driver, "inbox")
		applyDDL(t, admin, script, err)
		script, err = inbox.DDL(driver, "ack_inbox")
		applyDDL(t, admin, script, err)
		if err := admin.AutoMigrate(&PrivItem{}, &privCopy{}); err != nil {
			t.Fatal(err)
		}
		if driver == "postgres" {
			// The trigger's function runs for the inserting role, which
			// needs no EXECUTE on it.
			if err := admin.Exec(`REVOKE EXECUTE ON FUNCTION outbox_notify() FROM PUBLIC`).Error; err != nil {
				t.Fatal(err)
			}
		}

		brokers, _ := kafkaenv.Kafka(t, 2)
		kafkaenv.CreateTopic(t, brokers, "priv-items", 2)
		kafkaenv.CreateTopic(t, brokers, "priv-items-acks", 2)
		// Warnings and errors of the consumers (a refused privilege) show
		// with the test's log.
		quiet := slog.New(slog.NewTextHandler(testLog{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
		icfg := func(topic, table string) inbox.Config {
			cfg := inbox.Config{Brokers: brokers, GroupID: kafkaenv.TopicName("priv"), Topics: []string{topic}, Table: table,
				MaxWait: 50 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: quiet}
			// The topics are the model's: on a shared cluster they hold
			// earlier runs' messages, which these groups skip.
			kafkaenv.SeekGroupToEnd(t, brokers, cfg.GroupID, topic)
			return cfg
		}
		ordersCfg, acksCfg := icfg("priv-items", "inbox"), icfg("priv-items-acks", "ack_inbox")

		withPlugin := func(db *gorm.DB) *gorm.DB {
			t.Helper()
			if err := db.Use(gormoutbox.New(gormoutbox.Config{})); err != nil {
				t.Fatal(err)
			}
			return db
		}
		capDB := withPlugin(privRole(t, admin, "capture").Open(t, nil))
		relayRole := privRole(t, admin, "relay")
		relayDB := relayRole.Open(t, nil)
		cleanDB := privRole(t, admin, "cleanup").Open(t, nil)
		consDB := withPlugin(privRole(t, admin, "consumer").Open(t, nil))
		acksDB := withPlugin(privRole(t, admin, "acks").Open(t, nil))

		relay := newRelay(t, relayDB, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{})

		// LISTEN needs no privilege: the relay's role hears the capture's commits.
		var woken atomic.Int64
		if driver == "postgres" {
			lctx, stop := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- relay.ListenWith(lctx, func() { woken.Add(1) }, pgListen("")) }()
			t.Cleanup(func() { stop(); <-done })
			waitFor(t, 10*time.Second, "the relay's LISTEN", func() bool {
				return countWhere(t, admin, "pg_stat_activity", "usename = ? AND query LIKE ?", relayRole.Name, "LISTEN %") > 0
			})
		}

		// Capture: GORM writes of the tagged model, in transactions.
		if err := capDB.Transaction(func(tx *gorm.DB) error {
			items := []PrivItem{{SKU: "a", Quantity: 1}, {SKU: "b", Quantity: 2}, {SKU: "c", Quantity: 3}}
			if err := tx.Create(&items).Error; err != nil {
				return err
			}
			if err := tx.Model(&items[0]).Update("quantity", 10).Error; err != nil {
				return err
			}
			return tx.Delete(&items[2]).Error
		}); err != nil {
			t.Fatalf("capture with INSERT on the outbox: %v", err)
		}
		if err := capDB.Create(&PrivItem{SKU: "d", Quantity: 4}).Error; err != nil {
			t.Fatalf("capture with INSERT on the outbox: %v", err)
		}
		rows := readOutbox(t, admin, "")
		checkRows(t, rows, want{Topic: "priv-items", Type: "PrivItemCreated"}, want{Type: "PrivItemCreated"},
			want{Type: "PrivItemCreated"}, want{Type: "PrivItemUpdated"}, want{Type: "PrivItemDeleted"}, want{Type: "PrivItemCreated"})
		ours := map[string]bool{}
		for _, r := range rows {
			ours[r.EventID] = true
		}
		if driver == "postgres" {
			waitFor(t, 10*time.Second, "a NOTIFY from the capture's commits", func() bool { return woken.Load() > 0 })
		}
		// The capture role reads nothing of the outbox, and cannot migrate.
		var n int64
		wantDenied(t, "SELECT from the outbox as capture", capDB.Raw(`SELECT COUNT(*) FROM outbox`).Scan(&n).Error)
		wantDenied(t, "Migrate as capture", capDB.Config.Plugins[gormoutbox.PluginName].(*gormoutbox.Plugin).Migrate(ctx))

		// The relay publishes them and marks them published.
		drainUntilEmpty(t, relay, 30*time.Second)
		recs := kafkaenv.ReadTopic(t, brokers, "priv-items", len(ours), 30*time.Second, runIDs(ours))
		if len(recs) != len(ours) {
			t.Fatalf("%d messages on priv-items, want %d", len(recs), len(ours))
		}
		for _, r := range readOutbox(t, admin, "") {
			if r.PublishedAt == nil {
				t.Errorf("outbox row %d not marked published by the relay", r.ID)
			}
		}
		if st, err := relay.TopicStats(ctx); err != nil || st["priv-items"].Pending != 0 {
			t.Errorf("TopicStats as relay: %+v, %v", st, err)
		}
		_, err = relay.Cleanup(ctx, -time.Hour)
		wantDenied(t, "Cleanup as relay (no DELETE)", err)

		// The consuming service: inbox, its own table, an answer per event.
		orders, err := inbox.New(consDB, func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			if !ours[m.EventID] {
				return nil // another run's, on a shared cluster
			}
			if err := tx.Create(&privCopy{EventID: m.EventID, Topic: m.Topic}).Error; err != nil {
				return err
			}
			return ack.Reply(tx, m, gormoutbox.AckSuccess, "")
		}, ordersCfg)
		if err != nil {
			t.Fatal(err)
		}
		wantDenied(t, "inbox Migrate as consumer", orders.Migrate(ctx))
		start(t, orders)
		waitFor(t, 30*time.Second, "the consumer's copies", func() bool {
			return countWhere(t, admin, "priv_copies", "topic = ?", "priv-items") == int64(len(ours))
		})
		var recorded []string
		if err := admin.Table("inbox").Where("status = 'done'").Pluck("event_id", &recorded).Error; err != nil {
			t.Fatal(err)
		}
		got := 0
		for _, id := range recorded {
			if ours[id] {
				got++
			}
		}
		if got != len(ours) {
			t.Errorf("inbox records %d of our %d events", got, len(ours))
		}

		// A message the handler keeps failing on is parked, listed and
		// replayed under the same role.
		parkTopic := kafkaenv.TopicName("priv-park")
		kafkaenv.CreateTopic(t, brokers, parkTopic, 1)
		var failing atomic.Bool
		failing.Store(true)
		pcfg := ordersCfg
		pcfg.GroupID, pcfg.Topics, pcfg.MaxAttempts = kafkaenv.TopicName("priv-park"), []string{parkTopic}, 2
		parking, err := inbox.New(consDB, func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			if failing.Load() {
				return errors.New("not yet")
			}
			return tx.Create(&privCopy{EventID: m.EventID, Topic: m.Topic}).Error
		}, pcfg)
		if err != nil {
			t.Fatal(err)
		}
		parked := produceInbox(t, brokers, parkTopic, 1, 1)[0]
		start(t, parking)
		waitFor(t, 30*time.Second, "the failing message parked", func() bool {
			dl, err := parking.DeadLetters(ctx, 10)
			if err != nil {
				t.Fatalf("inbox DeadLetters as consumer: %v", err)
			}
			return len(dl) == 1 && dl[0].EventID == parked.EventID
		})
		failing.Store(false)
		if n, err := parking.Replay(ctx, parked.EventID); err != nil || n != 1 {
			t.Errorf("inbox Replay as consumer: %d, %v", n, err)
		}
		if n := countWhere(t, admin, "inbox", "event_id = ? AND status = 'done'", parked.EventID); n != 1 {
			t.Errorf("the replayed message: %d done records, want 1", n)
		}

		// The answers go out through the same relay; the tracker applies them.
		tracker := ack.NewTracker(ack.Config{Logger: quiet, Timeout: time.Hour})
		acks, err := inbox.New(acksDB, tracker.Handle, acksCfg)
		if err != nil {
			t.Fatal(err)
		}
		start(t, acks)
		drainUntilEmpty(t, relay, 30*time.Second)
		waitFor(t, 30*time.Second, "the events processed", func() bool {
			return countWhere(t, admin, "outbox", "topic = ? AND processed_at IS NOT NULL", "priv-items") == int64(len(ours))
		})
		if n, err := tracker.Expire(ctx, acksDB); err != nil || n != 0 {
			t.Errorf("Expire as acks: %d, %v", n, err)
		}

		// Cleanup: the processed events and the answers.
		cleaner := newRelay(t, cleanDB, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{})
		if n, err := cleaner.Cleanup(ctx, -time.Hour); err != nil || n != int64(2*len(ours)) {
			t.Errorf("Cleanup as cleanup: %d, %v; want %d", n, err, 2*len(ours))
		}
		if n := countWhere(t, admin, "outbox", "1 = 1"); n != 0 {
			t.Errorf("%d outbox rows left after cleanup", n)
		}
		// A relay with DeleteOnPublish deletes what it publishes: it needs
		// DELETE as well.
		if err := capDB.Transaction(func(tx *gorm.DB) error {
			return gormoutbox.Publish(tx, gormoutbox.Event{Topic: "priv-items", Key: "plain", Type: "Plain", Payload: "no answer asked"})
		}); err != nil {
			t.Fatalf("Publish as capture: %v", err)
		}
		deleter := newRelay(t, relayDB, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{DeleteOnPublish: true})
		_, err = deleter.Drain(ctx)
		wantDenied(t, "Drain with DeleteOnPublish as relay (no DELETE)", err)
		relayRole.Grant(t, "DELETE", "outbox")
		drainUntilEmpty(t, deleter, 30*time.Second)
		if n := countWhere(t, admin, "outbox", "1 = 1"); n != 0 {
			t.Errorf("%d outbox rows left after a DeleteOnPublish relay with DELETE", n)
		}

		for name, c := range map[string]*inbox.Consumer{"consumer": orders, "acks": acks} {
			if _, err := c.DeadLetters(ctx, 10); err != nil {
				t.Errorf("inbox DeadLetters as %s: %v", name, err)
			}
			if n, err := c.Cleanup(ctx, time.Now().Add(time.Hour), 100); err != nil || n < int64(len(ours)) {
				t.Errorf("inbox Cleanup as %s: %d, %v; want at least %d", name, n, err, len(ours))
			}
		}
	})
}

// Migrate needs to create the tables: CREATE on the schema (PostgreSQL,
// where the migrating role then owns them, as later migrations and the
// NOTIFY switch require) or CREATE, ALTER, SELECT and INSERT on the
// database (MySQL).
func TestLeastPrivilegeMigrate(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		admin := d.Open(t, nil)
		driver := admin.Dialector.Name()
		migrator := testenv.NewRole(t, admin, "migrator")
		if driver == "postgres" {
			migrator.GrantSchema(t, "CREATE")
		} else {
			migrator.GrantSchema(t, "CREATE, ALTER, SELECT, INSERT")
		}
		db := migrator.Open(t, nil)
		for _, notify := range []bool{true, false, true} {
			p := gormoutbox.New(gormoutbox.Config{DisableNotify: !notify})
			if err := db.Use(p); err != nil && !errors.Is(err, gorm.ErrRegistered) {
				t.Fatal(err)
			}
			delete(db.Config.Plugins, gormoutbox.PluginName) // the next round registers its own
			if err := p.Migrate(ctx); err != nil {
				t.Fatalf("Migrate (notify %v) as the migrating role: %v", notify, err)
			}
		}
		if err := inbox.MigrateTable(ctx, db, "inbox"); err != nil {
			t.Fatalf("inbox migrate as the migrating role: %v", err)
		}
		var v int
		latest := mysql.LatestVersion
		if driver == "postgres" {
			latest = postgres.LatestVersion
		}
		if err := admin.Raw(`SELECT MAX(version) FROM outbox_migrations`).Scan(&v).Error; err != nil || v != latest {
			t.Errorf("outbox schema version %d, %v", v, err)
		}
		if driver != "postgres" {
			return
		}
		// Another role with CREATE on the schema does not own the table:
		// turning the trigger off is refused.
		other := testenv.NewRole(t, admin, "notowner")
		other.GrantSchema(t, "CREATE")
		other.Grant(t, "SELECT", "outbox_migrations")
		odb := other.Open(t, nil)
		p := gormoutbox.New(gormoutbox.Config{DisableNotify: true})
		if err := odb.Use(p); err != nil {
			t.Fatal(err)
		}
		err := p.Migrate(ctx)
		if err == nil || !strings.Contains(err.Error(), "must be owner") {
			t.Errorf("Migrate with DisableNotify by a role that does not own the table: %v, want \"must be owner\"", err)
		}
		// With nothing to do, it runs.
		p = gormoutbox.New(gormoutbox.Config{})
		delete(odb.Config.Plugins, gormoutbox.PluginName)
		if err := odb.Use(p); err != nil {
			t.Fatal(err)
		}
		if err := p.Migrate(ctx); err != nil {
			t.Errorf("Migrate with nothing to do by a role with CREATE on the schema: %v", err)
		}
		// A version left to apply is refused to it too.
		if err := admin.Exec(`DELETE FROM outbox_migrations WHERE version = ?`, latest).Error; err != nil {
			t.Fatal(err)
		}
		if err := p.Migrate(ctx); err == nil || !strings.Contains(err.Error(), "must be owner") {
			t.Errorf("Migrate of version %d by a role that does not own the table: %v, want \"must be owner\"", latest, err)
		}
		p = gormoutbox.New(gormoutbox.Config{})
		delete(db.Config.Plugins, gormoutbox.PluginName)
		if err := db.Use(p); err != nil {
			t.Fatal(err)
		}
		if err := p.Migrate(ctx); err != nil {
			t.Errorf("Migrate of version 3 by the owner: %v", err)
		}
	})
}
