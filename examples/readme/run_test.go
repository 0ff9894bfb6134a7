package readme_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/go-outbox/outbox/dialects/mysql"
	"github.com/go-outbox/outbox/dialects/postgres"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	outboxkafka "github.com/go-outbox/outbox/kafka"
)

// TestREADMEService runs the README's steps against the test databases
// (OUTBOX_TEST_POSTGRES_URL, OUTBOX_TEST_MYSQL_DSN, or the project's own
// servers) and an in-process kfake broker, and reads what reached Kafka.
func TestREADMEService(t *testing.T) {
	if testing.Short() {
		t.Skip("needs databases")
	}
	for _, d := range testenv.Dialects() {
		t.Run(d.Name, func(t *testing.T) {
			db := d.Open(t, nil)
			if err := db.AutoMigrate(&Inventory{}); err != nil {
				t.Fatal(err)
			}
			// The README's topics have fixed names: on a shared cluster
			// (OUTBOX_TEST_KAFKA_BROKERS) they may hold earlier runs'
			// messages, which the checks below leave out.
			brokers := readmeBrokers(t)
			kafkaenv.SeekGroupToEnd(t, brokers, "orders", "inventory") // step 4's group reads this run only

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- service(ctx, db, brokers) }()

			// service registers the plugin and migrates; wait for the table.
			sqlDB, err := db.DB()
			if err != nil {
				t.Fatal(err)
			}
			count := func(where string) int {
				var n int
				if err := sqlDB.QueryRow("SELECT count(*) FROM outbox" + where).Scan(&n); err != nil {
					return -1
				}
				return n
			}
			latest := postgres.LatestVersion
			if d.Name == "mysql" {
				latest = mysql.LatestVersion
			}
			waitFor(t, "the outbox table's migration", func() bool {
				var v int
				err := sqlDB.QueryRow("SELECT MAX(version) FROM outbox_migrations").Scan(&v)
				return err == nil && v == latest
			})

			item := Inventory{SKU: "pear", Quantity: 5, CostPrice: 42}
			if err := db.Create(&item).Error; err != nil {
				t.Fatal(err)
			}
			if err := reserve(db, item, "order-1", 2); err != nil {
				t.Fatal(err)
			}
			if err := writes(db, item); err != nil {
				t.Fatal(err)
			}
			if n := count(""); n != 6 {
				t.Fatalf("outbox rows: %d, want 6", n)
			}
			waitFor(t, "every row published", func() bool { return count(" WHERE published_at IS NULL") == 0 })

			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("service: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("service did not stop")
			}

			ours := map[string]bool{}
			rows, err := sqlDB.Query("SELECT event_id FROM outbox")
			if err != nil {
				t.Fatal(err)
			}
			for rows.Next() {
				var id string
				if err := rows.Scan(&id); err != nil {
					t.Fatal(err)
				}
				ours[id] = true
			}
			rows.Close()
			thisRun := func(r kafkaenv.Record) bool { return ours[r.Headers[gormoutbox.HeaderEventID]] }
			perKey := map[string][]string{}
			for _, r := range kafkaenv.ReadTopic(t, brokers, "inventory", 5, 10*time.Second, thisRun) {
				if strings.Contains(string(r.Value), "42") {
					t.Errorf("CostPrice leaked: %s", r.Value)
				}
				perKey[string(r.Key)] = append(perKey[string(r.Key)], r.Headers[gormoutbox.HeaderEventType])
			}
			// Order per key (the topic may have several partitions).
			if got, want := strings.Join(perKey["pear"], ","), "InventoryCreated,InventoryUpdated,InventoryUpdated,InventoryDeleted"; got != want {
				t.Errorf("inventory topic, key pear: %q, want %q", got, want)
			}
			if got := strings.Join(perKey["apple"], ","); got != "InventoryCreated" {
				t.Errorf("inventory topic, key apple: %q, want InventoryCreated", got)
			}
			orders := kafkaenv.ReadTopic(t, brokers, "orders", 1, 10*time.Second, thisRun)
			if k, typ := string(orders[0].Key), orders[0].Headers[gormoutbox.HeaderEventType]; k != "order-1" || typ != "StockReserved" {
				t.Errorf("orders topic: key %q type %q", k, typ)
			}

			// Step 4: the consuming service's inbox fills its copy, once
			// per event.
			if err := db.AutoMigrate(&StockCopy{}); err != nil {
				t.Fatal(err)
			}
			cctx, ccancel := context.WithCancel(context.Background())
			cdone := make(chan error, 1)
			go func() { cdone <- consume(cctx, db, brokers) }()
			copyOf := func(sku string) (int, bool) {
				var c StockCopy
				err := db.Where("sku = ?", sku).Take(&c).Error
				return c.Quantity, err == nil
			}
			waitFor(t, "the copy", func() bool {
				n := 0
				for id := range ours {
					var one int
					if sqlDB.QueryRow("SELECT count(*) FROM inbox WHERE event_id = "+placeholder(d.Name), id).Scan(&one) == nil {
						n += one
					}
				}
				return n == len(ours)-1 // every inventory event (the orders one is another topic)
			})
			ccancel()
			if err := <-cdone; err != nil {
				t.Fatalf("consume: %v", err)
			}
			if q, ok := copyOf("apple"); !ok || q != 10 {
				t.Errorf("copy of apple: %d, %v; want 10", q, ok)
			}
			if q, ok := copyOf("pear"); !ok || q != 0 {
				t.Errorf("copy of pear: %d, %v; want 0 (its last event)", q, ok)
			}

			// The hooks of "Operating it", on the same table.
			h, err := observe(db, noPublisher{})
			if err != nil {
				t.Fatal(err)
			}
			if err := h.Close(); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestREADMERegister runs step 2 alone.
func TestREADMERegister(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a database")
	}
	db := testenv.OpenPostgres(t, nil)
	if err := register(context.Background(), db); err != nil {
		t.Fatal(err)
	}
}

// TestREADMEMariaDB opens the server of OUTBOX_TEST_MYSQL_DSN (or the
// project's) as the README shows.
func TestREADMEMariaDB(t *testing.T) {
	if testing.Short() {
		t.Skip("needs a database")
	}
	db, err := openMariaDB(testenv.MySQLDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	defer sqlDB.Close()
	if err := sqlDB.Ping(); err != nil {
		t.Fatal(err)
	}
}

func TestREADMEGuard(t *testing.T) {
	ctx := context.Background()
	m := gormoutbox.Message{Value: []byte(`{}`)}
	if err := (guard{}).BeforePublish(ctx, &m); err != nil || len(m.Headers) != 1 || m.Headers[0].Key != "producer" {
		t.Fatalf("small message: err %v, headers %v", err, m.Headers)
	}
	big := gormoutbox.Message{Value: make([]byte, 1<<20)}
	if err := (guard{}).BeforePublish(ctx, &big); !errors.Is(err, gormoutbox.ErrDeadLetter) {
		t.Fatalf("big message: err %v, want ErrDeadLetter", err)
	}
}

func TestREADMESecureConfig(t *testing.T) {
	t.Setenv("KAFKA_PASSWORD", "s3cr3t-pw")
	cfg := secureConfig(x509.NewCertPool())
	pub, err := outboxkafka.NewPublisher(cfg) // connects on first Publish only
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	for _, s := range []string{fmt.Sprintf("%v", cfg), fmt.Sprintf("%+v", cfg), fmt.Sprintf("%#v", cfg)} {
		if strings.Contains(s, "s3cr3t-pw") {
			t.Errorf("password printed: %s", s)
		}
	}
}

type noPublisher struct{}

func (noPublisher) Publish(context.Context, []gormoutbox.Message) error {
	return fmt.Errorf("not used")
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// readmeBrokers returns the brokers of OUTBOX_TEST_KAFKA_BROKERS, with the
// README's topics created, or an in-process kfake cluster seeded with them.
func readmeBrokers(t *testing.T) []string {
	t.Helper()
	if v := os.Getenv(kafkaenv.KafkaEnv); v != "" {
		brokers := strings.Split(v, ",")
		for _, topic := range []string{"inventory", "orders"} {
			kafkaenv.CreateTopic(t, brokers, topic, 1)
		}
		return brokers
	}
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(1, "inventory", "orders"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	return cluster.ListenAddrs()
}

func placeholder(dialect string) string {
	if dialect == "postgres" {
		return "$1"
	}
	return "?"
}
