package inventory

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
)

// Topics of the example: Item's outbox tag names "inventory" for the
// stock events and "inventory-acks" for the order service's answers.
func Topics() []string { return []string{TopicInventory, TopicAcks} }

// The topics.
const (
	TopicInventory = "inventory"
	TopicAcks      = "inventory-acks"
)

// Partitions is the partition count of the topics the demo creates. A topic
// that already exists keeps its own.
const Partitions = 8

// kafkaEnv is the demo's Kafka: the brokers it was given, or an in-process
// kfake cluster, and an admin client.
type kafkaEnv struct {
	addrs   []string
	cluster *kfake.Cluster // nil for brokers given by the user
	tr      *kafkago.Transport
	client  *kafkago.Client
	log     *slog.Logger
}

// openKafka connects to brokers (comma-separated host:port), or starts an
// in-process kfake cluster (one broker, Topics seeded) when brokers is
// empty.
func openKafka(ctx context.Context, brokers string, log *slog.Logger) (*kafkaEnv, error) {
	k := &kafkaEnv{log: log}
	if strings.TrimSpace(brokers) == "" {
		c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(Partitions, Topics()...))
		if err != nil {
			return nil, fmt.Errorf("start an in-process kfake cluster: %w", err)
		}
		k.cluster, k.addrs = c, c.ListenAddrs()
	} else {
		for _, a := range strings.Split(brokers, ",") {
			if a = strings.TrimSpace(a); a != "" {
				k.addrs = append(k.addrs, a)
			}
		}
		if len(k.addrs) == 0 {
			return nil, errNoBrokers
		}
	}
	k.tr = &kafkago.Transport{}
	k.client = &kafkago.Client{Addr: kafkago.TCP(k.addrs...), Timeout: 10 * time.Second, Transport: k.tr}
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if _, err := k.client.Metadata(cctx, &kafkago.MetadataRequest{Topics: Topics()}); err != nil {
		k.Close()
		return nil, fmt.Errorf("kafka brokers %s do not answer: %w", strings.Join(k.addrs, ","), err)
	}
	return k, nil
}

// Close closes the admin client's connections and the kfake cluster.
func (k *kafkaEnv) Close() {
	k.tr.CloseIdleConnections()
	if k.cluster != nil {
		k.cluster.Close()
	}
}

// createTopics creates Topics with Partitions partitions and the broker's
// default replication factor; a topic that already exists (a real
// cluster's, or one the kfake cluster seeded) is left as it is. It returns
// the partitions of each topic once the cluster lists them all with a
// leader.
func (k *kafkaEnv) createTopics(ctx context.Context) (map[string][]int, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req := &kafkago.CreateTopicsRequest{}
	for _, t := range Topics() {
		req.Topics = append(req.Topics, kafkago.TopicConfig{Topic: t, NumPartitions: Partitions, ReplicationFactor: -1})
	}
	res, err := k.client.CreateTopics(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("create topics %v: %w", Topics(), err)
	}
	for _, t := range Topics() {
		if err := res.Errors[t]; err != nil && !errors.Is(err, kafkago.TopicAlreadyExists) {
			return nil, fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	// A new topic's partitions may take a moment to get their leaders.
	for {
		parts, err := k.partitions(ctx)
		if err == nil {
			return parts, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("topics %v not ready: %w", Topics(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// partitions returns the partitions of each of Topics, or an error if a
// topic or a partition is not ready.
func (k *kafkaEnv) partitions(ctx context.Context) (map[string][]int, error) {
	md, err := k.client.Metadata(ctx, &kafkago.MetadataRequest{Topics: Topics()})
	if err != nil {
		return nil, err
	}
	out := make(map[string][]int)
	for _, t := range md.Topics {
		if t.Error != nil {
			return nil, fmt.Errorf("topic %s: %w", t.Name, t.Error)
		}
		for _, p := range t.Partitions {
			if p.Error != nil {
				return nil, fmt.Errorf("topic %s, partition %d: %w", t.Name, p.ID, p.Error)
			}
			out[t.Name] = append(out[t.Name], p.ID)
		}
		slices.Sort(out[t.Name])
	}
	for _, t := range Topics() {
		if len(out[t]) == 0 {
			return nil, fmt.Errorf("topic %s has no partitions yet", t)
		}
	}
	return out, nil
}

// partitionOffset is where the consumer starts on a partition.
type partitionOffset struct {
	topic     string
	partition int
	offset    int64
}

// endOffsets returns the current end (the next offset) of every partition
// in parts, in topic and partition order.
func (k *kafkaEnv) endOffsets(ctx context.Context, parts map[string][]int) ([]partitionOffset, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req := &kafkago.ListOffsetsRequest{Topics: make(map[string][]kafkago.OffsetRequest)}
	for t, ps := range parts {
		for _, p := range ps {
			req.Topics[t] = append(req.Topics[t], kafkago.LastOffsetOf(p))
		}
	}
	res, err := k.client.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("list offsets: %w", err)
	}
	var out []partitionOffset
	for _, t := range Topics() {
		got := make(map[int]int64)
		for _, po := range res.Topics[t] {
			if po.Error != nil {
				return nil, fmt.Errorf("list offsets of %s/%d: %w", t, po.Partition, po.Error)
			}
			got[po.Partition] = po.LastOffset
		}
		for _, p := range parts[t] {
			off, ok := got[p]
			if !ok {
				return nil, fmt.Errorf("list offsets: no answer for %s/%d", t, p)
			}
			out = append(out, partitionOffset{t, p, off})
		}
	}
	return out, nil
}

// seekGroupToEnd commits, for group (which has no member yet), the current
// end of every partition of topics: the group then reads only what is
// written from now on, whatever earlier runs left on a shared cluster,
// and misses nothing written before its consumers join.
func (k *kafkaEnv) seekGroupToEnd(ctx context.Context, group string, parts map[string][]int, topics ...string) error {
	ends, err := k.endOffsets(ctx, parts)
	if err != nil {
		return err
	}
	req := &kafkago.OffsetCommitRequest{GroupID: group, GenerationID: -1, Topics: map[string][]kafkago.OffsetCommit{}}
	for _, e := range ends {
		if slices.Contains(topics, e.topic) {
			req.Topics[e.topic] = append(req.Topics[e.topic], kafkago.OffsetCommit{Partition: e.partition, Offset: e.offset})
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	res, err := k.client.OffsetCommit(ctx, req)
	if err != nil {
		return fmt.Errorf("set the start offsets of group %s: %w", group, err)
	}
	for t, ps := range res.Topics {
		for _, p := range ps {
			if p.Error != nil {
				return fmt.Errorf("set the start offset of group %s on %s/%d: %w", group, t, p.Partition, p.Error)
			}
		}
	}
	return nil
}
