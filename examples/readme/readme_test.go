package readme_test

// Every ```go block of ../../README.md is here, between a "readme:begin"
// and a "readme:end" comment, verbatim or as the body of a function;
// TestREADMEBlocksMatch checks that the two stay the same. The Example
// functions are compiled, not run (they need your servers); the Test
// functions run the same code against the project's test databases and
// an in-process Kafka-protocol broker.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"gorm.io/driver/mysql"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/ack"
	"github.com/go-outbox/outbox/dialects/postgres/pgxlisten"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/hooks"
	"github.com/go-outbox/outbox/inbox"
	outboxkafka "github.com/go-outbox/outbox/kafka"
	"github.com/go-outbox/outbox/scheduler"
)

// Step 1: tag the models that are event sources.

// readme:begin
type Inventory struct {
	gormoutbox.Source `outbox:"topic:inventory;aggregate:inventory;events:create,update,delete"`
	ID                uint   `gorm:"primaryKey"`
	SKU               string `gorm:"uniqueIndex;size:64" outbox:"key"` // the message key (default: the primary key)
	Quantity          int
	CostPrice         int `outbox:"-"` // never leaves the service
}

// readme:end

// Step 2: register the plugin.
func register(ctx context.Context, db *gorm.DB) error {
	// readme:begin
	ob := gormoutbox.New(gormoutbox.Config{}) // table "outbox", 16 shards, W3C trace context
	if err := db.Use(ob); err != nil {        // unsupported dialect or bad config
		return err
	}
	if err := ob.Validate(&Inventory{}); err != nil { // every tag problem, naming model and field
		return err
	}
	if err := ob.Migrate(ctx); err != nil { // creates or upgrades the outbox table; idempotent
		return err
	}
	// readme:end
	return nil
}

// Step 2: writes capture themselves.
func writes(db *gorm.DB, item Inventory) error {
	// readme:begin
	db.Create(&Inventory{SKU: "apple", Quantity: 10})                // InventoryCreated
	db.Model(&item).Update("quantity", gorm.Expr("quantity - ?", 3)) // InventoryUpdated: the row after the update
	db.Delete(&item)                                                 // InventoryDeleted: the row as it was
	// readme:end
	return db.Error
}

// Step 2: domain events of your own.
func reserve(db *gorm.DB, item Inventory, orderID string, n int) error {
	// readme:begin
	err := db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Model(&item).Update("quantity", gorm.Expr("quantity - ?", n)).Error; err != nil {
			return err
		}
		return gormoutbox.Publish(tx, gormoutbox.Event{
			Topic: "orders", Key: orderID, Type: "StockReserved",
			Payload: map[string]any{"order": orderID, "sku": item.SKU, "quantity": n},
		})
	})
	// readme:end
	return err
}

// Step 3: the whole wiring of a service: plugin, publisher, relay,
// scheduler, wake-ups, cleanup, graceful stop.
func service(ctx context.Context, db *gorm.DB, brokers []string) error {
	// readme:begin
	s := scheduler.New(scheduler.Config{Logger: slog.Default()})
	wake := func() { _ = s.Wake("outbox-relay") } // never blocks; wake-ups during a pass cost one more pass

	ob := gormoutbox.New(gormoutbox.Config{Wake: wake}) // step 2, now with in-process wake-ups
	if err := db.Use(ob); err != nil {
		return err
	}
	if err := ob.Migrate(ctx); err != nil {
		return err
	}

	pub, err := outboxkafka.NewPublisher(outboxkafka.Config{Brokers: brokers})
	if err != nil {
		return err
	}
	defer pub.Close()
	relay, err := gormoutbox.NewRelay(db, pub, gormoutbox.RelayConfig{})
	if err != nil {
		return err
	}
	defer relay.Close() // the connections it holds between passes

	if err := s.Add("outbox-relay", "*/1 * * * * *", scheduler.RelayJob(relay)); err != nil { // every second
		return err
	}
	if err := s.Add("outbox-cleanup", "0 */10 * * * *", scheduler.CleanupJob(relay, 24*time.Hour)); err != nil {
		return err
	}
	s.Start()
	if db.Dialector.Name() == "postgres" {
		go func() { _ = relay.ListenWith(ctx, wake, gormoutbox.ListenOptions{Listener: pgxlisten.New()}) }() // LISTEN/NOTIFY: commits of every process and transaction
	}

	<-ctx.Done() // e.g. from signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return s.Stop(stopCtx) // no new pass starts; the batch in flight is published and marked
	// readme:end
}

// Step 4: the consuming service.

// StockCopy is the consuming service's copy of the stock.
type StockCopy struct {
	SKU      string `gorm:"primaryKey;size:64"`
	Quantity int
}

func consume(ctx context.Context, db *gorm.DB, brokers []string) error {
	// readme:begin
	c, err := inbox.New(db, func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
		var item Inventory
		if err := json.Unmarshal(m.Value, &item); err != nil {
			return err // retried with backoff, then parked as a dead letter: never dropped
		}
		return tx.Save(&StockCopy{SKU: item.SKU, Quantity: item.Quantity}).Error
	}, inbox.Config{Brokers: brokers, GroupID: "orders", Topics: []string{"inventory"}})
	if err != nil {
		return err
	}
	if err := c.Migrate(ctx); err != nil { // the inbox table; idempotent
		return err
	}
	return c.Run(ctx) // until ctx ends; the batch in flight is committed first
	// readme:end
}

// Step 5: acknowledgements.

// readme:begin
// Order asks its consumers to answer each event, on the topic orders-acks.
type Order struct {
	gormoutbox.Source `outbox:"topic:orders;ack:orders-acks"`
	ID                uint `gorm:"primaryKey"`
	Status            string
}

// readme:end

func fulfil(tx *gorm.DB, m *inbox.Message) error {
	return tx.Exec("SELECT 1").Error
}

func answering() inbox.Handler {
	// readme:begin
	handler := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
		err := tx.Transaction(func(tx *gorm.DB) error { return fulfil(tx, m) }) // undone alone if it fails
		if err != nil {
			return ack.Reply(tx, m, gormoutbox.AckFailed, err.Error()) // the producer sends it again, up to a limit
		}
		return ack.Reply(tx, m, gormoutbox.AckSuccess, "")
	}
	// readme:end
	return handler
}

func tracking(ctx context.Context, db *gorm.DB, brokers []string) error {
	// readme:begin
	tracker := ack.NewTracker(ack.Config{
		MaxAttempts: 3,                                                // process attempts; then the row is failed
		Hooks:       []gormoutbox.AckHook{hooks.Slog(slog.Default())}, // logs "notify the team" at error level
	})
	answers, err := inbox.New(db, tracker.Handle,
		inbox.Config{Brokers: brokers, GroupID: "products-acks", Topics: []string{"orders-acks"}})
	if err != nil {
		return err
	}
	if err := answers.Migrate(ctx); err != nil {
		return err
	}
	go func() { _ = answers.Run(ctx) }()
	// readme:end
	s := scheduler.New(scheduler.Config{})
	// readme:begin
	// with ack.Config{Timeout: 5 * time.Minute}: unanswered events count as failed attempts
	if err := s.Add("ack-timeout", "@every 1m", scheduler.AckTimeoutJob(tracker, db)); err != nil {
		return err
	}
	if err := s.Add("inbox-cleanup", "0 0 * * * *", scheduler.InboxCleanupJob(answers, 7*24*time.Hour)); err != nil {
		return err
	}
	// readme:end
	return nil
}

// Secure clusters.
func secureConfig(pool *x509.CertPool) outboxkafka.Config {
	// readme:begin
	cfg := outboxkafka.Config{
		Brokers: []string{"kafka-1:9093", "kafka-2:9093"},
		TLS:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		SASL: outboxkafka.SASL{Mechanism: outboxkafka.SASLScramSHA512,
			Username: "outbox", Password: os.Getenv("KAFKA_PASSWORD")},
	}
	// readme:end
	return cfg
}

// Metrics, traces and logs.
func observe(db *gorm.DB, pub gormoutbox.Publisher) (*hooks.OTel, error) {
	// readme:begin
	otelHook, err := hooks.NewOTel(hooks.OTelConfig{}) // otel's global MeterProvider and TracerProvider
	if err != nil {
		return nil, err
	}
	relay, err := gormoutbox.NewRelay(db, pub, gormoutbox.RelayConfig{
		Hooks: []gormoutbox.Hook{hooks.Slog(slog.Default()), otelHook, guard{}},
	})
	if err != nil {
		return nil, err
	}
	if err := otelHook.Observe(relay); err != nil { // the gauges, read from the table at each collection
		return nil, err
	}
	// readme:end
	return otelHook, nil
}

// A hook of your own.

// readme:begin
type guard struct{ gormoutbox.HookBase }

func (guard) BeforePublish(ctx context.Context, m *gormoutbox.Message) error {
	if len(m.Value) > 512<<10 {
		return fmt.Errorf("payload of %d bytes: %w", len(m.Value), gormoutbox.ErrDeadLetter)
	}
	m.Headers = append(m.Headers, gormoutbox.Header{Key: "producer", Value: []byte("inventory-service")})
	return nil
}

// readme:end

// MariaDB.
func openMariaDB(dsn string) (*gorm.DB, error) {
	// readme:begin
	db, err := gorm.Open(mysql.New(mysql.Config{DSN: dsn, DisableWithReturning: true}), &gorm.Config{})
	// readme:end
	return db, err
}

// Example_adopt is the README's three steps in one service; compiled, not
// run (it needs a database and a Kafka cluster).
func Example_adopt() {
	ctx := context.Background()
	var db *gorm.DB // gorm.Open(postgres.Open(dsn)) or openMariaDB(dsn)
	if db == nil {
		return
	}
	if err := db.AutoMigrate(&Inventory{}); err != nil {
		fmt.Println(err)
		return
	}
	go func() { _ = service(ctx, db, []string{"kafka:9092"}) }()
	item := Inventory{SKU: "pear", Quantity: 5}
	_ = db.Create(&item).Error
	_ = reserve(db, item, "order-1", 2)
	_ = writes(db, item)
}

// Example_register is step 2 alone.
func Example_register() {
	var db *gorm.DB // your database
	if db == nil {
		return
	}
	if err := register(context.Background(), db); err != nil {
		fmt.Println(err)
	}
}

// Example_observe wires the hooks.
func Example_observe() {
	var (
		db  *gorm.DB             // your database
		pub gormoutbox.Publisher // e.g. outboxkafka.NewPublisher(...)
	)
	if db == nil || pub == nil {
		return
	}
	h, err := observe(db, pub)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer h.Close()
}

// Example_consume is steps 4 and 5; compiled, not run.
func Example_consume() {
	ctx := context.Background()
	var db *gorm.DB // the consuming service's database
	if db == nil {
		return
	}
	brokers := []string{"kafka:9092"}
	_ = db.AutoMigrate(&StockCopy{}, &Order{})
	_ = tracking(ctx, db, brokers)
	_, _ = inbox.New(db, answering(), inbox.Config{Brokers: brokers, GroupID: "fulfilment", Topics: []string{"orders"}})
	_ = consume(ctx, db, brokers)
}
