package gormoutbox

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
)

// Defaults of RelayConfig.
const (
	DefaultBatchSize    = 500
	DefaultMaxAttempts  = 10
	DefaultMinBackoff   = time.Second
	DefaultMaxBackoff   = 5 * time.Minute
	DefaultBudget       = 10 * time.Second
	DefaultCleanupBatch = 1000
	DefaultLockWait     = time.Second
	DefaultWorkers      = 2
	// DefaultBatchBytes is the default RelayConfig.BatchBytes: 16 MiB.
	DefaultBatchBytes = 16 << 20
	// DefaultUnknownTopicGrace is how long a topic the broker does not
	// know is treated as an outage before its messages' attempts count.
	DefaultUnknownTopicGrace = time.Minute
	// DefaultPublishTimeout bounds one Publish call (one claim's batch).
	DefaultPublishTimeout = 30 * time.Second
	// DefaultBlockedRecheck is how long a row blocked behind a dead row of
	// its key waits before a claim looks at it again.
	DefaultBlockedRecheck = time.Minute
	// DefaultOutageMaxBackoff caps the relay's wait between tries while
	// the broker is down.
	DefaultOutageMaxBackoff = 10 * time.Second
)

// RelayConfig configures a Relay. The zero value is ready to use.
type RelayConfig struct {
	// Table and Shards must match the plugin's. Default: those of the
	// plugin registered on the *gorm.DB given to NewRelay, else "outbox"
	// and 16.
	Table  string
	Shards int

	// BatchSize is the most rows one claim takes and one Publish call
	// sends. Default 500.
	BatchSize int

	// BatchBytes bounds the payload bytes of one claim as well as its
	// rows: a claim stops before the running sum of its rows' payloads
	// passes BatchBytes (it always takes its first row, however large),
	// so that a backlog of large rows is read a few at a time rather
	// than BatchSize at once. Default 16 MiB (DefaultBatchBytes);
	// negative means no bound.
	BatchBytes int64

	// MaxAttempts is how many failed publications dead-letter a row.
	// Only failures of the message count: those of the broker or the
	// network (ErrBrokerUnavailable) never do. Default 10.
	MaxAttempts int

	// MinBackoff and MaxBackoff bound the wait before a failed row is
	// tried again: MinBackoff × 2^(attempts−1), capped at MaxBackoff, of
	// which a random half is taken off (jitter). Defaults 1s and 5m.
	MinBackoff time.Duration
	MaxBackoff time.Duration

	// OutageMaxBackoff caps the relay's backoff as a whole while the
	// broker is down (ErrBrokerUnavailable): MinBackoff × 2^(n−1) after
	// the n-th failed batch in a row, capped here rather than at
	// MaxBackoff, so that the relay finds the broker back within about
	// this long however long the outage (one claim and one refused
	// connection per try). Default 10s, brought within [MinBackoff,
	// MaxBackoff].
	OutageMaxBackoff time.Duration

	// UnknownTopicGrace is how long after a topic first fails with
	// ErrUnknownTopic (a topic being created, a cluster starting) its
	// messages' failures are treated as an outage (no attempt counted);
	// after it they count toward MaxAttempts. Default 1m; negative means
	// no grace.
	UnknownTopicGrace time.Duration

	// PublishTimeout bounds one Publish call: the Publisher gets a context
	// with this deadline, and on PostgreSQL the claim transaction, which
	// holds the batch's row locks while it publishes, is bounded by it too
	// (see README, Operating). A call that runs out of time fails with the
	// context's error, an outage (ErrBrokerUnavailable) for the kafka
	// Publisher. Default 30s.
	PublishTimeout time.Duration

	// SkipDeadKeys lets the later rows of a key go past a dead-lettered
	// row of that key. By default (false) a dead row blocks its key: the
	// later rows stay pending (counted as Blocked in Stats) until the
	// dead row is replayed (then they follow it, in order) or deleted.
	// Set it when a key's order matters less than its later events being
	// delivered; a Replay then sends the old event after the newer ones.
	SkipDeadKeys bool

	// BlockedRecheck is how long a row blocked behind a dead row of its
	// key waits before a claim looks at it again (Replay of the dead row
	// releases its key at once; a deleted dead row releases it at the
	// next look). Default 1m.
	BlockedRecheck time.Duration

	// DeleteOnPublish deletes rows once published instead of marking them
	// (then there is nothing for Cleanup to do). Default false.
	DeleteOnPublish bool

	// Budget bounds one Drain: it stops claiming once Budget has passed
	// (the batch in flight is finished). Default 10s.
	Budget time.Duration

	// MaxShards bounds the shards one MySQL pass locks; with N relays, set
	// it to Shards/N so that they split the work. Default 0: every free
	// shard (other relays then stand by). Not used on PostgreSQL, where
	// relays share rows through SKIP LOCKED. (MaxShards and LockWait
	// reach the dialect as dialects.ClaimOptions.ShardLocks, which only
	// the dialects that lock shards read: see
	// dialects.Capabilities.LocksShards.)
	MaxShards int

	// LockWait is how long a MySQL pass that finds every shard locked
	// waits for one, so that a standby relay takes over within LockWait of
	// the holder's death. Default 1s; negative means no wait.
	LockWait time.Duration

	// CleanupBatch is the most rows one cleanup statement deletes.
	// Default 1000.
	CleanupBatch int

	// Workers is how many claim-publish-mark loops one Drain runs at once,
	// each over its own part of the shards (shard % Workers), so that each
	// key stays with one worker and keeps its order. While one worker waits
	// for the database, another can publish: with 2 workers a relay
	// overlaps its database round trips with its Kafka calls. Calls to the
	// Publisher are made from several goroutines; the kafka Publisher
	// serialises them. On MySQL each worker locks its own shards (at most
	// MaxShards/Workers of them). Default 2 (1 when Shards is 1); at most
	// Shards. One worker runs claim, publish and mark strictly in turn:
	// about 30% slower here (docs/benchmarks.md).
	Workers int

	// Overlap makes each worker claim its next batch while its current one
	// is published and marked: on the databases whose passes can be forked
	// (dialects.Forker: both), each worker then holds two claims — the
	// batch being published and the next one — on two connections, so that
	// the claim's database time overlaps the broker's; batches are still
	// published one after the other, in claim order, and a key with a row
	// left unpublished holds back its rows of the next batch. It pays where
	// round trips, not CPU, bound the relay (a database across a network);
	// on the 2-core machine of docs/benchmarks.md, where the database, the
	// broker and the relay share the CPU, it cost more CPU per event than it
	// saved in waiting (PostgreSQL 35.9k vs 41.1k events/s, MariaDB 18.6k vs
	// 23.1k). Default false.
	Overlap bool

	// HeldConns is how many connections the relay holds between passes
	// (each worker's pass and fork run on them), so that a pass never
	// waits for a connection to be opened when the application's pool
	// keeps few idle ones (database/sql keeps 2 by default). They are
	// taken from the pool as the passes first need them, checked after
	// 2 s unused, replaced when broken, and returned to the pool after
	// 10 s unused and by Relay.Close.
	// Default Workers (2 × Workers with Overlap); negative holds none.
	HeldConns int

	// Hooks are called, in order, around each message's publication (see
	// Hook; package hooks has ready-made ones).
	Hooks []Hook

	// Dialect overrides the dialect picked from the GORM dialector.
	Dialect dialects.Dialect

	// Logger receives the relay's logs. Default: the plugin's
	// Config.Logger, else slog.Default() (as it is when NewRelay runs).
	// Failed Publish calls (with the topics and the error) and dead
	// letters are logged at warn, at most one line of each kind per
	// WarnInterval (30s), which counts the failures held back since the
	// previous one; failing topics that publish again at info; passes at
	// debug. Keys, payloads and header values are never logged.
	Logger *slog.Logger

	// Now returns the current time; for tests. Default time.Now.
	Now func() time.Time
}

// relayConfig fills in the defaults of cfg — those of the plugin
// registered on db, if any, then the package's — and validates it: the
// error joins one ErrInvalidConfig per field at fault, naming it.
func relayConfig(db *gorm.DB, cfg RelayConfig) (RelayConfig, dialects.Table, error) {
	p, _ := from(db)
	if p != nil {
		if cfg.Table == "" {
			cfg.Table = p.Table()
		}
		if cfg.Shards == 0 {
			cfg.Shards = p.Shards()
		}
		if cfg.Dialect == nil {
			cfg.Dialect = p.Dialect()
		}
		if cfg.Logger == nil {
			cfg.Logger = p.cfg.Logger
		}
	}
	if cfg.Table == "" {
		cfg.Table = DefaultTable
	}
	if cfg.Shards == 0 {
		cfg.Shards = DefaultShards
	}
	def := func(v *int, d int) {
		if *v == 0 {
			*v = d
		}
	}
	def(&cfg.BatchSize, DefaultBatchSize)
	if cfg.BatchBytes == 0 {
		cfg.BatchBytes = DefaultBatchBytes
	}
	def(&cfg.MaxAttempts, DefaultMaxAttempts)
	def(&cfg.CleanupBatch, DefaultCleanupBatch)
	def(&cfg.Workers, min(DefaultWorkers, max(cfg.Shards, 1)))
	if cfg.HeldConns == 0 {
		cfg.HeldConns = cfg.Workers
		if cfg.Overlap {
			cfg.HeldConns = 2 * cfg.Workers
		}
	}
	defd := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defd(&cfg.MinBackoff, DefaultMinBackoff)
	defd(&cfg.MaxBackoff, DefaultMaxBackoff)
	defd(&cfg.Budget, DefaultBudget)
	defd(&cfg.LockWait, DefaultLockWait)
	defd(&cfg.UnknownTopicGrace, DefaultUnknownTopicGrace)
	defd(&cfg.PublishTimeout, DefaultPublishTimeout)
	defd(&cfg.BlockedRecheck, DefaultBlockedRecheck)
	defd(&cfg.OutageMaxBackoff, min(max(DefaultOutageMaxBackoff, cfg.MinBackoff), cfg.MaxBackoff))
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: RelayConfig."+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	table, err := dialects.ParseTable(cfg.Table)
	if err != nil {
		bad("Table: %w", err)
	}
	if cfg.Shards < 1 || cfg.Shards > 1<<16 {
		bad("Shards = %d, want 1..65536", cfg.Shards)
	}
	if cfg.BatchSize < 1 || cfg.BatchSize > 10000 {
		bad("BatchSize = %d, want 1..10000", cfg.BatchSize)
	}
	if cfg.MaxAttempts < 1 {
		bad("MaxAttempts = %d, want at least 1", cfg.MaxAttempts)
	}
	if cfg.MinBackoff < 0 || cfg.MaxBackoff < cfg.MinBackoff {
		bad("MinBackoff = %v, MaxBackoff = %v: want 0 <= MinBackoff <= MaxBackoff", cfg.MinBackoff, cfg.MaxBackoff)
	}
	if cfg.OutageMaxBackoff < cfg.MinBackoff {
		bad("OutageMaxBackoff = %v, want at least MinBackoff (%v)", cfg.OutageMaxBackoff, cfg.MinBackoff)
	}
	if cfg.BlockedRecheck < 0 {
		bad("BlockedRecheck = %v must not be negative", cfg.BlockedRecheck)
	}
	if cfg.PublishTimeout < 0 {
		bad("PublishTimeout = %v must not be negative", cfg.PublishTimeout)
	}
	if cfg.Budget < 0 {
		bad("Budget = %v must not be negative", cfg.Budget)
	}
	if cfg.MaxShards < 0 || cfg.MaxShards > cfg.Shards {
		bad("MaxShards = %d, want 0..Shards (%d)", cfg.MaxShards, cfg.Shards)
	}
	if cfg.CleanupBatch < 1 {
		bad("CleanupBatch = %d, want at least 1", cfg.CleanupBatch)
	}
	if cfg.Workers < 1 || cfg.Workers > cfg.Shards {
		bad("Workers = %d, want 1..Shards (%d)", cfg.Workers, cfg.Shards)
	}
	if cfg.Dialect == nil {
		d, err := dialectFor(db)
		if err != nil {
			errs = append(errs, err)
		}
		cfg.Dialect = d
	}
	if len(errs) > 0 {
		return cfg, table, errors.Join(errs...)
	}
	return cfg, table, nil
}
