package integration

import (
	"context"
	"fmt"
	"log/slog"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/inbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/eventid"
	"github.com/go-outbox/outbox/internal/testenv"
)

// BenchmarkInboxThroughput reads the same topic (inboxBenchMessages
// messages with event-id headers, 8 partitions) three times in one run: with
// a bare kafka-go consumer group (FetchMessage, CommitMessages every 100
// messages), with the inbox and a no-op handler (dedupe record, savepoint
// logic, offset commits), and with the inbox and a handler that inserts one
// row, with one worker and with four. It reports messages/s of each and the inbox's ratio to bare
// kafka-go, and where the inbox's time went (transactions, offset commits).
//
//	go test -run '^$' -bench InboxThroughput -benchtime 1x ./integration/
func BenchmarkInboxThroughput(b *testing.B) {
	for _, d := range testenv.Dialects() {
		b.Run(d.Name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				benchInbox(b, d)
			}
		})
	}
}

const inboxBenchMessages = 50_000

type benchRow struct {
	ID      uint `gorm:"primaryKey"`
	EventID string
}

func benchInbox(b *testing.B, d testenv.Dialect) {
	db := d.Open(b, nil)
	if sqlDB, err := db.DB(); err == nil {
		sqlDB.SetMaxIdleConns(8)
	}
	if err := db.AutoMigrate(&benchRow{}); err != nil {
		b.Fatal(err)
	}
	brokers, _ := kafkaenv.Kafka(b, 8)
	topic := kafkaenv.TopicName("inbox-bench")
	kafkaenv.CreateTopic(b, brokers, topic, 8)
	var ids eventid.Generator
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Topic: topic, Balancer: &kafkago.Murmur2Balancer{},
		RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond, BatchSize: 1000}
	batch := make([]kafkago.Message, 0, 1000)
	for i := 0; i < inboxBenchMessages; i++ {
		batch = append(batch, kafkago.Message{Key: []byte(fmt.Sprint("k", i%1000)), Value: []byte(`{"n":1}`),
			Headers: []kafkago.Header{{Key: "event-id", Value: []byte(ids.New())}}})
		if len(batch) == cap(batch) {
			if err := w.WriteMessages(context.Background(), batch...); err != nil {
				b.Fatal(err)
			}
			batch = batch[:0]
		}
	}
	w.Close()

	// Bare kafka-go.
	b.ResetTimer()
	bare := bareGroupRead(b, brokers, topic, kafkaenv.TopicName("bare"))

	run := func(name string, workers int, h inbox.Handler) (float64, inbox.Stats, time.Duration) {
		c, err := inbox.New(db, h, inbox.Config{Brokers: brokers, GroupID: kafkaenv.TopicName(name), Topics: []string{topic},
			Workers: workers, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Migrate(context.Background()); err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- c.Run(ctx) }()
		deadline := time.Now().Add(5 * time.Minute)
		var first time.Time
		for c.Stats().Handled < inboxBenchMessages {
			if first.IsZero() && c.Stats().Handled > 0 {
				first = time.Now()
			}
			if time.Now().After(deadline) {
				b.Fatalf("%s: %d of %d handled in 5 minutes", name, c.Stats().Handled, inboxBenchMessages)
			}
			time.Sleep(2 * time.Millisecond)
		}
		took := time.Since(start)
		cancel()
		if err := <-done; err != nil {
			b.Fatal(err)
		}
		return float64(inboxBenchMessages) / took.Seconds(), c.Stats(), took
	}
	noop, ns, ntook := run("noop", 1, func(context.Context, *gorm.DB, *inbox.Message) error { return nil })
	writeRow := func(_ context.Context, tx *gorm.DB, m *inbox.Message) error {
		return tx.Create(&benchRow{EventID: m.EventID}).Error
	}
	write, ws, wtook := run("write", 1, writeRow)
	write4, _, _ := run("write4", 4, writeRow)
	b.StopTimer()
	b.ReportMetric(bare, "bare_msgs/s")
	b.ReportMetric(noop, "inbox_noop_msgs/s")
	b.ReportMetric(write, "inbox_write_msgs/s")
	b.ReportMetric(noop/bare, "noop/bare")
	b.ReportMetric(write/bare, "write/bare")
	b.ReportMetric(write4, "inbox_write_4workers_msgs/s")
	b.Logf("%s: bare kafka-go %.0f msgs/s; inbox no-op %.0f msgs/s (%d batches; in tx %.0f%%, offset commits %.0f%% of %v); inbox writing a row %.0f msgs/s (%d batches; in tx %.0f%%, offset commits %.0f%% of %v), with 4 workers %.0f msgs/s",
		d.Name, bare, noop, ns.Batches, pct(ns.InTx, ntook), pct(ns.InOffsetCommit, ntook), ntook.Round(time.Millisecond),
		write, ws.Batches, pct(ws.InTx, wtook), pct(ws.InOffsetCommit, wtook), wtook.Round(time.Millisecond), write4)
}

func pct(part, whole time.Duration) float64 { return 100 * part.Seconds() / whole.Seconds() }

// bareGroupRead reads inboxBenchMessages messages with a kafka-go consumer
// group, committing offsets every 100 messages, and returns messages/s
// (joining the group included, as for the inbox).
func bareGroupRead(b *testing.B, brokers []string, topic, group string) float64 {
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, GroupID: group, GroupTopics: []string{topic},
		StartOffset: kafkago.FirstOffset, MaxWait: 250 * time.Millisecond, QueueCapacity: 100})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	pending := make([]kafkago.Message, 0, 100)
	for n := 0; n < inboxBenchMessages; n++ {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			b.Fatalf("bare read: %d of %d: %v", n, inboxBenchMessages, err)
		}
		pending = append(pending, m)
		if len(pending) == cap(pending) || n == inboxBenchMessages-1 {
			if err := r.CommitMessages(ctx, pending...); err != nil {
				b.Fatal(err)
			}
			pending = pending[:0]
		}
	}
	return float64(inboxBenchMessages) / time.Since(start).Seconds()
}
