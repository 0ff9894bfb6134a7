// Package kafkaenv gives tests and examples Kafka brokers: real ones named by
// OUTBOX_TEST_KAFKA_BROKERS, else an in-process kfake cluster. It lives in the
// integration module so that the library's module graph has no kfake.
package kafkaenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
)

// KafkaEnv names real brokers for the tests ("host:port,host:port").
const KafkaEnv = "OUTBOX_TEST_KAFKA_BROKERS"

// Kafka gives a test broker addresses: the brokers in OUTBOX_TEST_KAFKA_BROKERS
// when set, otherwise an in-process kfake cluster (the real Kafka wire
// protocol over TCP on loopback) with automatic topic creation and
// partitions partitions per topic, closed when the test ends. Tests on a
// shared cluster should use topic names of their own (see TopicName).
func Kafka(t testing.TB, partitions int) (brokers []string, cluster *kfake.Cluster) {
	t.Helper()
	if v := os.Getenv(KafkaEnv); v != "" {
		return strings.Split(v, ","), nil
	}
	c, err := kfake.NewCluster(
		kfake.NumBrokers(1),
		kfake.DefaultNumPartitions(partitions),
		kfake.AllowAutoTopicCreation(),
	)
	if err != nil {
		t.Fatalf("testenv: start kfake: %v", err)
	}
	t.Cleanup(c.Close)
	return c.ListenAddrs(), c
}

// TopicName returns a topic name unique to this run, for tests that may
// run against a shared cluster.
func TopicName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + "-" + hex.EncodeToString(b[:])
}

// ReplicationEnv sets the replication factor of topics the tests create on
// real brokers (default 1).
const ReplicationEnv = "OUTBOX_TEST_KAFKA_REPLICATION"

// CreateTopic creates topic with partitions partitions; a topic that
// exists already is left as it is.
func CreateTopic(t testing.TB, brokers []string, topic string, partitions int) {
	t.Helper()
	CreateTopicWith(t, brokers, topic, partitions, nil)
}

// CreateTopicWith is CreateTopic with topic configs (e.g.
// "max.message.bytes").
func CreateTopicWith(t testing.TB, brokers []string, topic string, partitions int, configs map[string]string) {
	t.Helper()
	rf := 1
	if v := os.Getenv(ReplicationEnv); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			t.Fatalf("testenv: %s=%q: %v", ReplicationEnv, v, err)
		}
		rf = n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 20 * time.Second}
	tc := kafka.TopicConfig{Topic: topic, NumPartitions: partitions, ReplicationFactor: rf}
	for k, v := range configs {
		tc.ConfigEntries = append(tc.ConfigEntries, kafka.ConfigEntry{ConfigName: k, ConfigValue: v})
	}
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{tc}})
	if err != nil {
		t.Fatalf("testenv: create topic %s: %v", topic, err)
	}
	if err := res.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		t.Fatalf("testenv: create topic %s: %v", topic, err)
	}
}

// Record is a message read back from a topic.
type Record struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte
	Headers   map[string]string
}

// ReadTopic reads topic from the start until it has at least n records or
// timeout passes, and returns them in the order fetched (offset order
// within a partition). It fails the test on timeout, reporting how many it
// got.
//
// keep, when not nil, filters the records (on a shared cluster, to those of
// this test run); n counts the records kept.
func ReadTopic(t testing.TB, brokers []string, topic string, n int, timeout time.Duration, keep func(Record) bool) []Record {
	t.Helper()
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(brokers...),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(200*time.Millisecond),
	)
	if err != nil {
		t.Fatalf("testenv: kgo client: %v", err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var out []Record
	for len(out) < n {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("testenv: read %s: got %d of %d records within %v", topic, len(out), n, timeout)
		}
		fs.EachError(func(topic string, p int32, err error) {
			t.Logf("testenv: fetch %s/%d: %v", topic, p, err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			h := make(map[string]string, len(r.Headers))
			for _, x := range r.Headers {
				h[x.Key] = string(x.Value)
			}
			rec := Record{Partition: r.Partition, Offset: r.Offset, Key: r.Key, Value: r.Value, Headers: h}
			if keep == nil || keep(rec) {
				out = append(out, rec)
			}
		})
	}
	return out
}

// NewKafka is Kafka for Example functions (which have no testing.TB): the
// brokers of OUTBOX_TEST_KAFKA_BROKERS, or an in-process kfake cluster that
// the returned function closes.
func NewKafka(partitions int) ([]string, func(), error) {
	if v := os.Getenv(KafkaEnv); v != "" {
		return strings.Split(v, ","), func() {}, nil
	}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.DefaultNumPartitions(partitions), kfake.AllowAutoTopicCreation())
	if err != nil {
		return nil, nil, fmt.Errorf("testenv: start kfake: %w", err)
	}
	return c.ListenAddrs(), c.Close, nil
}

// SeekGroupToEnd commits, for group (which must have no member), the
// current end of every partition of topics, so that the group reads only
// what is written from now on: on a shared cluster, topics with fixed
// names (a model's tag) may hold messages of earlier runs.
func SeekGroupToEnd(t testing.TB, brokers []string, group string, topics ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 20 * time.Second}
	meta, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		t.Fatalf("testenv: metadata of %v: %v", topics, err)
	}
	lreq := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, tp := range meta.Topics {
		if tp.Error != nil {
			t.Fatalf("testenv: metadata of %s: %v", tp.Name, tp.Error)
		}
		for _, p := range tp.Partitions {
			lreq.Topics[tp.Name] = append(lreq.Topics[tp.Name], kafka.LastOffsetOf(p.ID))
		}
	}
	lres, err := c.ListOffsets(ctx, lreq)
	if err != nil {
		t.Fatalf("testenv: list offsets of %v: %v", topics, err)
	}
	creq := &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{}}
	for topic, ps := range lres.Topics {
		for _, p := range ps {
			if p.Error != nil {
				t.Fatalf("testenv: list offsets of %s/%d: %v", topic, p.Partition, p.Error)
			}
			creq.Topics[topic] = append(creq.Topics[topic], kafka.OffsetCommit{Partition: p.Partition, Offset: p.LastOffset})
		}
	}
	// A member that just left (a previous test's consumer) may still be in
	// the group for a while: try again until the group is empty.
	for {
		cres, err := c.OffsetCommit(ctx, creq)
		if err == nil {
			for topic, ps := range cres.Topics {
				for _, p := range ps {
					if p.Error != nil && err == nil {
						err = fmt.Errorf("%s/%d: %w", topic, p.Partition, p.Error)
					}
				}
			}
		}
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("testenv: commit offsets of %s: %v", group, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
