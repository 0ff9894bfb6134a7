package testenv

import (
	"os"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
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
	return randomName(prefix + "-")
}
