package kafkapub

import (
	"context"
	"errors"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/kafka"
)

func msg(topic, key, value string) gormoutbox.Message {
	return gormoutbox.Message{Topic: topic, Key: []byte(key), Value: []byte(value), EventID: value,
		Headers: []gormoutbox.Header{{Key: gormoutbox.HeaderEventID, Value: []byte(value)}}}
}

func newPub(t *testing.T, cfg kafka.Config) *kafka.Publisher {
	t.Helper()
	p, err := kafka.NewPublisher(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Once a key's message fails, its later messages in the same Publish are
// not sent (ErrHeldBack) while other keys go on.
func TestPublishHoldsBackAFailedKey(t *testing.T) {
	brokers, c := kafkaenv.Kafka(t, 2)
	if c == nil {
		t.Skip("needs the in-process kfake broker")
	}
	topic := kafkaenv.TopicName("hold")
	kafkaenv.CreateTopic(t, brokers, topic, 2)
	// Two keys on different partitions (murmur2, as the publisher).
	bal := &kafkago.Murmur2Balancer{}
	a, b := "a", ""
	pa := bal.Balance(kafkago.Message{Key: []byte(a)}, 0, 1)
	for _, k := range []string{"b", "c", "d", "e", "f", "g", "h"} {
		if bal.Balance(kafkago.Message{Key: []byte(k)}, 0, 1) != pa {
			b = k
			break
		}
	}
	if b == "" {
		t.Fatal("no key found on the other partition")
	}
	c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Partitions: []int32{int32(pa)},
		Err: kerr.NotLeaderForPartition, Count: 1})
	// BatchSize 2: [a1 b1] then [a2 b2] — a1 fails in the first call.
	p := newPub(t, kafka.Config{Brokers: brokers, BatchSize: 2, MaxAttempts: 1})
	err := p.Publish(context.Background(), []gormoutbox.Message{
		msg(topic, a, "a1"), msg(topic, b, "b1"), msg(topic, a, "a2"), msg(topic, b, "b2"),
	})
	var pe gormoutbox.PublishErrors
	if !errors.As(err, &pe) || len(pe) != 4 {
		t.Fatalf("Publish: %v, want PublishErrors of 4", err)
	}
	if !errors.Is(pe[0], kafkago.NotLeaderForPartition) || pe[1] != nil ||
		!errors.Is(pe[2], gormoutbox.ErrHeldBack) || pe[3] != nil {
		t.Fatalf("errors %v, want [NotLeader nil HeldBack nil]", pe)
	}
	recs := kafkaenv.ReadTopic(t, brokers, topic, 2, 10*time.Second, nil)
	if len(recs) != 2 || string(recs[0].Value)[0] != 'b' || string(recs[1].Value)[0] != 'b' {
		t.Fatalf("topic holds %v, want b1 and b2 only", recs)
	}
}

// A topic kafka-go cannot find fails its own messages only.
func TestPublishUnknownTopicFailsOnlyItsMessages(t *testing.T) {
	brokers, c := kafkaenv.Kafka(t, 1)
	if c == nil {
		t.Skip("needs the in-process kfake broker")
	}
	good := kafkaenv.TopicName("good")
	kafkaenv.CreateTopic(t, brokers, good, 1)
	p := newPub(t, kafka.Config{Brokers: brokers, MaxAttempts: 1, WriteTimeout: 2 * time.Second})
	missing := kafkaenv.TopicName("missing")
	err := p.Publish(context.Background(), []gormoutbox.Message{
		msg(missing, "k", "m1"), msg(good, "k", "g1"), msg(missing, "j", "m2"), msg(good, "k", "g2"),
	})
	var pe gormoutbox.PublishErrors
	if !errors.As(err, &pe) || pe[0] == nil || pe[1] != nil || pe[2] == nil || pe[3] != nil {
		t.Fatalf("Publish: %v, want only the missing topic's messages failed", err)
	}
	if recs := kafkaenv.ReadTopic(t, brokers, good, 2, 10*time.Second, nil); len(recs) != 2 {
		t.Fatalf("good topic holds %d records, want 2", len(recs))
	}
}

// A message over BatchBytes is refused as too large before any I/O; the
// later ones of its key are held back (nothing overtakes it), the others of
// the call are sent.
func TestPublishTooLarge(t *testing.T) {
	brokers, _ := kafkaenv.Kafka(t, 1)
	topic := kafkaenv.TopicName("large")
	kafkaenv.CreateTopic(t, brokers, topic, 1)
	p := newPub(t, kafka.Config{Brokers: brokers, BatchBytes: 2048})
	big := make([]byte, 4096)
	err := p.Publish(context.Background(), []gormoutbox.Message{
		msg(topic, "k", "s1"), {Topic: topic, Key: []byte("k"), Value: big, EventID: "big"}, msg(topic, "k", "s2"),
		msg(topic, "other", "o1"),
	})
	var pe gormoutbox.PublishErrors
	if !errors.As(err, &pe) || pe[0] != nil || !errors.Is(pe[1], gormoutbox.ErrMessageTooLarge) ||
		!errors.Is(pe[2], gormoutbox.ErrHeldBack) || pe[3] != nil {
		t.Fatalf("Publish: %v, want the big message refused as too large, the next of its key held back, the other key sent", err)
	}
	if recs := kafkaenv.ReadTopic(t, brokers, topic, 2, 10*time.Second, nil); len(recs) != 2 {
		t.Fatalf("topic holds %d records, want 2", len(recs))
	}
}

func TestNewPublisherErrors(t *testing.T) {
	for _, cfg := range []kafka.Config{{}, {Brokers: []string{""}}, {Brokers: []string{"x:1"}, BatchBytes: 10},
		{Brokers: []string{"x:1"}, BatchSize: -1}, {Brokers: []string{"x:1"}, MaxAttempts: -1}} {
		if _, err := kafka.NewPublisher(cfg); !errors.Is(err, kafka.ErrInvalidConfig) {
			t.Errorf("NewPublisher(%+v): %v, want ErrInvalidConfig", cfg, err)
		}
	}
}
