package integration

import (
	"context"
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	outboxkafka "github.com/go-outbox/outbox/kafka"
)

// The relay publishes committed outbox rows to Kafka and marks them
// published. Here one pass (Drain) is run by hand; in a service the
// scheduler package runs it on a cron spec.
func Example_relay() {
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
	ob := gormoutbox.New(gormoutbox.Config{})
	if err := db.Use(ob); err != nil {
		fmt.Println(err)
		return
	}
	if err := ob.Migrate(ctx); err != nil {
		fmt.Println(err)
		return
	}
	topic := kafkaenv.TopicName("orders")
	_ = db.Transaction(func(tx *gorm.DB) error {
		return gormoutbox.Publish(tx,
			gormoutbox.Event{Topic: topic, Key: "order-1", Type: "OrderPlaced", Payload: map[string]int{"total": 30}},
			gormoutbox.Event{Topic: topic, Key: "order-1", Type: "OrderPaid", Payload: map[string]int{"total": 30}},
		)
	})

	pub, err := outboxkafka.NewPublisher(outboxkafka.Config{Brokers: brokers, AllowAutoTopicCreation: true})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer pub.Close()
	relay, err := gormoutbox.NewRelay(db, pub, gormoutbox.RelayConfig{})
	if err != nil {
		fmt.Println(err)
		return
	}
	var res gormoutbox.DrainResult
	for i := 0; i < 50 && res.Published == 0; i++ { // the topic is created on first use
		if res, err = relay.Drain(ctx); err != nil {
			fmt.Println(err)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Println("published:", res.Published)

	// What a consumer sees.
	cl, _ := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	defer cl.Close()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for n := 0; n < 2 && rctx.Err() == nil; {
		cl.PollFetches(rctx).EachRecord(func(r *kgo.Record) {
			h := map[string]string{}
			for _, x := range r.Headers {
				h[x.Key] = string(x.Value)
			}
			fmt.Printf("%s %s %s event-id set: %v\n", r.Key, h[gormoutbox.HeaderEventType], r.Value, h[gormoutbox.HeaderEventID] != "")
			n++
		})
	}
	// Output:
	// published: 2
	// order-1 OrderPlaced {"total":30} event-id set: true
	// order-1 OrderPaid {"total":30} event-id set: true
}
