package integration

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/go-outbox/outbox/integration/kafkaenv"
)

// kafka-go talks to the test broker (kfake, or OUTBOX_TEST_KAFKA_BROKERS)
// over TCP: a keyed message with headers goes in and comes back out.
func TestKafkaBrokerRoundTrip(t *testing.T) {
	brokers, _ := kafkaenv.Kafka(t, 1)
	topic := kafkaenv.TopicName("smoke")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	w := &kafka.Writer{
		Addr:                   kafka.TCP(brokers...),
		Topic:                  topic,
		Balancer:               &kafka.Hash{},
		RequiredAcks:           kafka.RequireAll,
		AllowAutoTopicCreation: true,
		BatchTimeout:           time.Millisecond,
	}
	defer w.Close()
	msg := kafka.Message{Key: []byte("k1"), Value: []byte(`{"n":1}`),
		Headers: []kafka.Header{{Key: "event-id", Value: []byte("e-1")}}}
	var err error
	for i := 0; i < 20; i++ { // the topic is created on first use
		if err = w.WriteMessages(ctx, msg); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("WriteMessages: %v", err)
	}
	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		t.Fatal(err)
	}
	parts, err := conn.ReadPartitions(topic)
	conn.Close()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range parts {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: p.ID, MaxWait: 100 * time.Millisecond})
		rctx, rcancel := context.WithTimeout(ctx, 2*time.Second)
		m, err := r.ReadMessage(rctx)
		rcancel()
		r.Close()
		if err != nil {
			continue
		}
		if string(m.Key) != "k1" || string(m.Value) != `{"n":1}` || len(m.Headers) != 1 || string(m.Headers[0].Value) != "e-1" {
			t.Fatalf("read back %q=%q headers %v", m.Key, m.Value, m.Headers)
		}
		found = true
	}
	if !found {
		t.Fatalf("message not found on any of %d partitions", len(parts))
	}
}
