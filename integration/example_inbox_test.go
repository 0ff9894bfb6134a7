package integration

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/inbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
)

// StockCopy is a consuming service's copy of another service's stock.
type StockCopy struct {
	SKU      string `gorm:"primaryKey;size:64"`
	Quantity int
}

// The inbox hands each event to the handler once: the second delivery of
// event e1 (a producer's retry, say) is skipped, so the handler's writes
// happen once per event.
func Example_inbox() {
	db, cleanup, err := testenv.NewPostgres(nil) // your *gorm.DB
	if err != nil {
		fmt.Println(err)
		return
	}
	defer cleanup()
	brokers, stop, err := kafkaenv.NewKafka(1) // your brokers
	if err != nil {
		fmt.Println(err)
		return
	}
	defer stop()
	ctx := context.Background()
	topic := kafkaenv.TopicName("stock")
	if err := db.AutoMigrate(&StockCopy{}); err != nil {
		fmt.Println(err)
		return
	}

	// Three deliveries of two events, as a relay's retry can produce.
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, Balancer: &kafkago.Murmur2Balancer{},
		AllowAutoTopicCreation: true, BatchTimeout: time.Millisecond}
	msg := func(id, sku, qty string) kafkago.Message {
		return kafkago.Message{Key: []byte(sku), Value: []byte(qty), Headers: []kafkago.Header{{Key: "event-id", Value: []byte(id)}}}
	}
	for i := 0; i < 50; i++ { // the topic is created on first use
		if err = w.WriteMessages(ctx, msg("e1", "pear", "5"), msg("e1", "pear", "5"), msg("e2", "pear", "3")); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	w.Close()
	if err != nil {
		fmt.Println(err)
		return
	}

	c, err := inbox.New(db, func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
		fmt.Printf("handling %s: %s = %s\n", m.EventID, m.Key, m.Value)
		return tx.Exec(`INSERT INTO stock_copies (sku, quantity) VALUES (?, ?)
			ON CONFLICT (sku) DO UPDATE SET quantity = excluded.quantity`, string(m.Key), string(m.Value)).Error
	}, inbox.Config{Brokers: brokers, GroupID: "orders", Topics: []string{topic}, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		fmt.Println(err)
		return
	}
	if err := c.Migrate(ctx); err != nil {
		fmt.Println(err)
		return
	}
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Run(rctx) }()
	for i := 0; i < 300 && c.Stats().Handled+c.Stats().Duplicates < 3; i++ {
		time.Sleep(50 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		fmt.Println(err)
	}
	var copy StockCopy
	db.Take(&copy, "sku = ?", "pear")
	s := c.Stats()
	fmt.Printf("handled %d, skipped %d; pear = %d\n", s.Handled, s.Duplicates, copy.Quantity)
	// Output:
	// handling e1: pear = 5
	// handling e2: pear = 3
	// handled 2, skipped 1; pear = 3
}
