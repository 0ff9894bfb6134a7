package integration

import (
	"context"
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects/postgres/pgxlisten"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
)

// pgListen returns the options of Relay.ListenWith on PostgreSQL: pgx's
// listener, with its own connections opened from dsn when not empty.
func pgListen(dsn string) gormoutbox.ListenOptions {
	return gormoutbox.ListenOptions{Listener: pgxlisten.New(), DSN: dsn}
}

// Models used across the capture tests.

type Inventory struct {
	gormoutbox.Source `outbox:"topic:inventory;aggregate:inventory;events:create,update,delete"`
	ID                uint   `gorm:"primaryKey"`
	SKU               string `gorm:"size:64;uniqueIndex" outbox:"key"`
	Quantity          int
	CostPrice         int    `outbox:"-"`
	Note              string `gorm:"size:64;default:none"`
	CreatedAt         time.Time
	UpdatedAt         time.Time
}

type SoftItem struct {
	gormoutbox.Source `outbox:"topic:items"`
	ID                uint `gorm:"primaryKey"`
	Name              string
	DeletedAt         gorm.DeletedAt `gorm:"index"`
}

type Account struct {
	gormoutbox.Source `outbox:"topic:accounts;create_type:AccountOpened;update_type:AccountChanged;delete_type:AccountClosed;version:2"`
	Region            string `gorm:"primaryKey;size:16" json:"region"`
	Number            int    `gorm:"primaryKey;autoIncrement:false" json:"number"`
	Owner             string `json:"owner"`
	Secret            string `json:"secret" outbox:"-"`
}

type CreateOnly struct {
	gormoutbox.Source `outbox:"topic:create-only;events:create"`
	ID                uint `gorm:"primaryKey"`
	Name              string
}

// Stamped has a default the database computes.
type Stamped struct {
	gormoutbox.Source `outbox:"topic:stamped"`
	ID                uint      `gorm:"primaryKey"`
	Name              string    `gorm:"size:32"`
	Stamp             time.Time `gorm:"default:CURRENT_TIMESTAMP(3)"`
}

// Plain is not an event source.
type Plain struct {
	ID   uint `gorm:"primaryKey"`
	Name string
}

// outboxRow is one row of the outbox table as a test reads it back.
type outboxRow struct {
	ID            int64
	EventID       string
	Topic         string
	Key           *string
	Type          string
	AggregateType string
	AggregateID   string
	Payload       map[string]any
	RawPayload    []byte
	Headers       map[string]string
	Shard         int
	Attempts      int
	PublishedAt   *time.Time
}

var uuidV7 = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)

// setup opens a fresh database of the dialect, registers the plugin with
// cfg, migrates the outbox and creates the tables of models.
func setup(t *testing.T, d testenv.Dialect, gcfg *gorm.Config, cfg gormoutbox.Config, models ...any) (*gorm.DB, *gormoutbox.Plugin) {
	t.Helper()
	db := d.Open(t, gcfg)
	p := gormoutbox.New(cfg)
	if err := db.Use(p); err != nil {
		t.Fatalf("db.Use: %v", err)
	}
	if err := p.Migrate(context.Background()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if len(models) > 0 {
		if err := db.AutoMigrate(models...); err != nil {
			t.Fatalf("AutoMigrate: %v", err)
		}
	}
	return db, p
}

func readOutbox(t *testing.T, db *gorm.DB, table string) []outboxRow {
	t.Helper()
	if table == "" {
		table = "outbox"
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	rows, err := sqlDB.Query(`SELECT id, event_id, topic, msg_key, event_type, aggregate_type, aggregate_id,
		payload, headers, shard, attempts, published_at FROM ` + table + ` ORDER BY id`)
	if err != nil {
		t.Fatalf("read outbox: %v", err)
	}
	defer rows.Close()
	var out []outboxRow
	for rows.Next() {
		var r outboxRow
		var key []byte
		var headers []byte
		if err := rows.Scan(&r.ID, &r.EventID, &r.Topic, &key, &r.Type, &r.AggregateType, &r.AggregateID,
			&r.RawPayload, &headers, &r.Shard, &r.Attempts, &r.PublishedAt); err != nil {
			t.Fatalf("scan outbox: %v", err)
		}
		if key != nil {
			s := string(key)
			r.Key = &s
		}
		if err := json.Unmarshal(r.RawPayload, &r.Payload); err != nil {
			r.Payload = nil
		}
		if err := json.Unmarshal(headers, &r.Headers); err != nil {
			t.Fatalf("outbox row %d: headers %q: %v", r.ID, headers, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// want describes an expected outbox row; empty fields are not checked.
type want struct {
	Topic, Key, Type, AggregateType, AggregateID string
	Payload                                      map[string]any // members checked for equality
	Absent                                       []string       // members that must not be there
}

func checkRows(t *testing.T, got []outboxRow, wants ...want) {
	t.Helper()
	if len(got) != len(wants) {
		for _, r := range got {
			t.Logf("row: %s %s key=%v agg=%s/%s payload=%s", r.Topic, r.Type, deref(r.Key), r.AggregateType, r.AggregateID, r.RawPayload)
		}
		t.Fatalf("outbox has %d rows, want %d", len(got), len(wants))
	}
	seen := map[string]bool{}
	for i, w := range wants {
		r := got[i]
		if !uuidV7.MatchString(r.EventID) {
			t.Errorf("row %d: event_id %q is not a UUIDv7", i, r.EventID)
		}
		if seen[r.EventID] {
			t.Errorf("row %d: duplicate event_id %s", i, r.EventID)
		}
		seen[r.EventID] = true
		if w.Topic != "" && r.Topic != w.Topic {
			t.Errorf("row %d: topic %q, want %q", i, r.Topic, w.Topic)
		}
		if w.Key != "" && deref(r.Key) != w.Key {
			t.Errorf("row %d: key %q, want %q", i, deref(r.Key), w.Key)
		}
		if w.Type != "" && r.Type != w.Type {
			t.Errorf("row %d: type %q, want %q", i, r.Type, w.Type)
		}
		if w.AggregateType != "" && r.AggregateType != w.AggregateType {
			t.Errorf("row %d: aggregate_type %q, want %q", i, r.AggregateType, w.AggregateType)
		}
		if w.AggregateID != "" && r.AggregateID != w.AggregateID {
			t.Errorf("row %d: aggregate_id %q, want %q", i, r.AggregateID, w.AggregateID)
		}
		for k, v := range w.Payload {
			gv, ok := r.Payload[k]
			if !ok {
				t.Errorf("row %d: payload %s has no %q", i, r.RawPayload, k)
				continue
			}
			if !jsonEqual(gv, v) {
				t.Errorf("row %d: payload %q = %v, want %v (payload %s)", i, k, gv, v, r.RawPayload)
			}
		}
		for _, k := range w.Absent {
			if _, ok := r.Payload[k]; ok {
				t.Errorf("row %d: payload %s has %q, which must be left out", i, r.RawPayload, k)
			}
		}
	}
}

func jsonEqual(a, b any) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	var na, nb any
	_ = json.Unmarshal(ja, &na)
	_ = json.Unmarshal(jb, &nb)
	x, _ := json.Marshal(na)
	y, _ := json.Marshal(nb)
	return string(x) == string(y)
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}

func count(t *testing.T, db *gorm.DB, model any) int64 {
	t.Helper()
	var n int64
	if err := db.Session(&gorm.Session{NewDB: true}).Unscoped().Model(model).Count(&n).Error; err != nil {
		t.Fatalf("count %T: %v", model, err)
	}
	return n
}

func forEachDialect(t *testing.T, f func(t *testing.T, d testenv.Dialect)) {
	forEachOf(t, testenv.Dialects(), f)
}

// forEachCaptureDialect adds MariaDB opened with RETURNING
// (testenv.CaptureDialects), for the tests of capture paths it changes.
func forEachCaptureDialect(t *testing.T, f func(t *testing.T, d testenv.Dialect)) {
	forEachOf(t, testenv.CaptureDialects(), f)
}

// forEachOf runs f as a parallel subtest per dialect.
func forEachOf(t *testing.T, ds []testenv.Dialect, f func(t *testing.T, d testenv.Dialect)) {
	for _, d := range ds {
		t.Run(d.Name, func(t *testing.T) {
			t.Parallel()
			f(t, d)
		})
	}
}

// restartableKafka is an in-process kfake broker that keeps its data in a
// directory of the test, so that it can be stopped and started again on
// the same address.
type restartableKafka struct {
	t       *testing.T
	dir     string
	seed    kfake.Opt
	port    int
	cluster *kfake.Cluster
}

// newRestartableKafka starts one, seeded with topic; it is closed when the
// test ends. It skips the test when OUTBOX_TEST_KAFKA_BROKERS names real
// brokers.
func newRestartableKafka(t *testing.T, topic string, partitions int) *restartableKafka {
	t.Helper()
	if os.Getenv(kafkaenv.KafkaEnv) != "" {
		t.Skip("stops and restarts the in-process kfake broker (" + kafkaenv.KafkaEnv + " is set)")
	}
	k := &restartableKafka{t: t, dir: t.TempDir(), seed: kfake.SeedTopics(int32(partitions), topic)}
	k.start()
	_, port, _ := strings.Cut(k.Brokers()[0], "127.0.0.1:")
	k.port, _ = strconv.Atoi(port)
	t.Cleanup(func() {
		if k.cluster != nil {
			k.cluster.Close()
		}
	})
	return k
}

func (k *restartableKafka) start() {
	k.t.Helper()
	opts := []kfake.Opt{kfake.NumBrokers(1), kfake.DataDir(k.dir), k.seed}
	if k.port != 0 {
		opts = append(opts, kfake.Ports(k.port))
	}
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		k.t.Fatalf("start kfake: %v", err)
	}
	k.cluster = c
}

// Brokers are the broker addresses, the same after a restart.
func (k *restartableKafka) Brokers() []string { return k.cluster.ListenAddrs() }

// Stop takes the broker down.
func (k *restartableKafka) Stop() {
	k.cluster.Close()
	k.cluster = nil
}

// Start brings it up again, with its data, on the same address.
func (k *restartableKafka) Start() { k.start() }
