package inbox

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	kafkago "github.com/segmentio/kafka-go"
)

// Config configures a Consumer. Brokers, GroupID and Topics are required.
type Config struct {
	// Brokers are the bootstrap addresses, "host:port".
	Brokers []string
	// GroupID is the Kafka consumer group, and the consumer's name in the
	// inbox table (at most 191 bytes): consumers of different groups
	// deduplicate apart.
	GroupID string
	// Topics are read with the group.
	Topics []string

	// Table is the inbox table, "inbox" by default; "schema.table" is
	// accepted.
	Table string
	// Workers is how many batches run at once, each in its own
	// transaction, over disjoint sets of partitions (a partition's
	// messages always go to the same worker, in order). More workers help
	// when handlers, not the commit, take the time; handlers then run
	// concurrently and AfterCommit may be called concurrently. Default 1.
	Workers int
	// BatchSize bounds the messages of one transaction. More messages per
	// commit is faster (a commit costs a disk flush); a failing handler is
	// undone alone either way. Default 100.
	BatchSize int
	// MaxAttempts is how many times the handler runs on a message before
	// it is parked as a dead letter. Default 10.
	MaxAttempts int
	// MinBackoff and MaxBackoff bound the wait before a failed message is
	// tried again (exponential with jitter). Defaults 100ms and 10s.
	MinBackoff, MaxBackoff time.Duration
	// StartOffset is where a group without committed offsets starts:
	// kafkago.FirstOffset (default) or kafkago.LastOffset.
	StartOffset int64
	// MaxWait bounds how long a fetch from the broker waits for data.
	// Default 250ms.
	MaxWait time.Duration
	// SessionTimeout is how long the group coordinator waits for a silent
	// member (a crashed process) before giving its partitions to the
	// others. Default 30s (kafka-go's).
	SessionTimeout time.Duration
	// Reader, when set, may change the kafka-go reader configuration the
	// inbox built (heartbeat and rebalance timeouts, fetch sizes) before
	// the reader is made. GroupID, GroupTopics and CommitInterval must not
	// be changed.
	Reader func(*kafkago.ReaderConfig)
	// Dialer connects to the brokers (TLS, SASL): nil means kafka-go's
	// default dialer. kafka.Config.Dialer builds one from the publisher's
	// settings.
	Dialer *kafkago.Dialer
	// EventID returns the id a message is deduplicated on. Default
	// DefaultEventID. What it returns is made storable as DefaultEventID
	// does: "" becomes "topic/partition/offset", an id over MaxIDLen
	// bytes, not valid UTF-8, holding a NUL or ending in a space becomes "sha256:" and its
	// hex SHA-256.
	EventID func(*Message) string
	// SequenceKeys bounds how many keys (per topic partition) the consumer
	// remembers the x-sequence (HeaderSequence) of, the least recently used
	// forgotten first. Default DefaultSequenceKeys (100,000; some 160
	// bytes each, plus the key). A forgotten key only costs its next
	// redelivery the database's event-id check.
	SequenceKeys int
	// IgnoreSequence turns the x-sequence check off: every message is
	// deduplicated by its event id alone. The check keeps the numbers of
	// each source (HeaderSequenceSource) apart, so two producers with
	// numberings of their own (two outbox tables, two services, an ack topic
	// that several services answer on) may publish the same keys to one
	// topic; set it when a producer sends one source for numbers that do
	// not come from one numbering, or when Config.EventID tells apart
	// deliveries that share an x-sequence.
	IgnoreSequence bool
	// AfterCommit, when set, is called after a batch's transaction commits
	// and before its offsets are committed, with the messages it handled
	// or skipped (metrics, tests).
	AfterCommit func(ctx context.Context, batch []*Message)
	// Logger receives retries, parked messages and offset commit
	// failures. Default: slog.Default().
	Logger *slog.Logger
	// Now is the clock (tests). Default time.Now.
	Now func() time.Time
}

func (c *Config) defaults() error {
	if len(c.Brokers) == 0 {
		return fmt.Errorf("%w: Brokers is empty", ErrInvalidConfig)
	}
	if c.GroupID == "" {
		return fmt.Errorf("%w: GroupID is empty", ErrInvalidConfig)
	}
	if len(c.GroupID) > MaxIDLen {
		return fmt.Errorf("%w: GroupID %q is longer than %d bytes", ErrInvalidConfig, c.GroupID, MaxIDLen)
	}
	if len(c.Topics) == 0 {
		return fmt.Errorf("%w: Topics is empty", ErrInvalidConfig)
	}
	for i, t := range c.Topics {
		if t == "" {
			return fmt.Errorf("%w: Topics[%d] is empty", ErrInvalidConfig, i)
		}
	}
	if c.Table == "" {
		c.Table = "inbox"
	}
	for name, v := range map[string]int{"BatchSize": c.BatchSize, "MaxAttempts": c.MaxAttempts, "Workers": c.Workers,
		"SequenceKeys": c.SequenceKeys} {
		if v < 0 {
			return fmt.Errorf("%w: %s is %d", ErrInvalidConfig, name, v)
		}
	}
	if c.BatchSize == 0 {
		c.BatchSize = 100
	}
	if c.BatchSize > 1000 {
		return fmt.Errorf("%w: BatchSize %d is over 1000", ErrInvalidConfig, c.BatchSize)
	}
	if c.MaxAttempts == 0 {
		c.MaxAttempts = 10
	}
	if c.Workers == 0 {
		c.Workers = 1
	}
	if c.SequenceKeys == 0 {
		c.SequenceKeys = DefaultSequenceKeys
	}
	if c.Workers > 64 {
		return fmt.Errorf("%w: Workers %d is over 64", ErrInvalidConfig, c.Workers)
	}
	if c.MinBackoff < 0 || c.MaxBackoff < 0 || c.MaxWait < 0 {
		return fmt.Errorf("%w: MinBackoff, MaxBackoff and MaxWait must not be negative", ErrInvalidConfig)
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = 100 * time.Millisecond
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = 10 * time.Second
	}
	if c.MaxBackoff < c.MinBackoff {
		return fmt.Errorf("%w: MaxBackoff %v is below MinBackoff %v", ErrInvalidConfig, c.MaxBackoff, c.MinBackoff)
	}
	switch c.StartOffset {
	case 0:
		c.StartOffset = kafkago.FirstOffset
	case kafkago.FirstOffset, kafkago.LastOffset:
	default:
		return fmt.Errorf("%w: StartOffset %d: want kafkago.FirstOffset or kafkago.LastOffset", ErrInvalidConfig, c.StartOffset)
	}
	if c.MaxWait == 0 {
		c.MaxWait = 250 * time.Millisecond
	}
	if c.EventID == nil {
		c.EventID = DefaultEventID
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return nil
}
