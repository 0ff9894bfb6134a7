package gormoutbox

import (
	"context"
	"database/sql"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
)

// Header names of the envelope the relay adds to every message. The
// headers captured with the event (content-type, traceparent, tracestate,
// schema-version and your own) are sent too.
const (
	HeaderEventID       = "event-id"
	HeaderEventType     = "event-type"
	HeaderAggregateType = "aggregate-type"
	HeaderAggregateID   = "aggregate-id"
	HeaderOccurredAt    = "occurred-at" // RFC 3339, UTC, the time the event was captured
	HeaderContentType   = "content-type"
	// HeaderSequence is the event's x-sequence number, in decimal: its
	// outbox row id (or the higher one Replay gave it), so strictly
	// increasing per key in the order the relay publishes — rows of a key
	// take their ids in commit order — and the same on every publication
	// of the event. A consumer may drop any message whose number is not
	// above the last it applied for the key and HeaderSequenceSource.
	// Events without a key carry none. See the README's "Sequence numbers".
	HeaderSequence = "x-sequence"
	// HeaderSequenceSource names the outbox table an x-sequence comes
	// from: a random number (hex) of the table, stored by Migrate.
	// Numbers of different sources are unrelated — two services, or two
	// outbox tables, may publish the same key to one topic — so a
	// consumer compares x-sequence only within one source. Sent with
	// every x-sequence once the relay has read it.
	HeaderSequenceSource = "x-sequence-source"
)

// Message is one outbox row as handed to a Publisher.
type Message struct {
	Topic string
	// Key is the message key; nil means none.
	Key   []byte
	Value []byte
	// Headers: the envelope first, then the captured headers, sorted by name.
	Headers []Header
	// EventID repeats the event-id header, for logs.
	EventID string
	// ID is the outbox row's id, Attempts its failed publications so far,
	// and CreatedAt when it was captured (for lag metrics).
	ID        int64
	Attempts  int
	CreatedAt time.Time
	// Sequence repeats the x-sequence header (0: none).
	Sequence int64
}

// Header is a message header.
type Header struct {
	Key   string
	Value []byte
}

// Publisher sends messages to the broker. The kafka package has the
// kafka-go implementation.
//
// Publish is called with the messages of one claim, in outbox order. It
// returns nil when every message was written, PublishErrors (one entry per
// message, nil for those written) when some were not, or any other error
// when none was. It must never write a message after an earlier message
// of the same topic and key failed in the same call: return ErrHeldBack for
// those instead. Messages the broker refuses as too large should fail with
// an error wrapping ErrMessageTooLarge, which dead-letters them at once.
//
// Errors say whose fault a failure is. An error wrapping
// ErrBrokerUnavailable (for the whole call, or for a message in
// PublishErrors) belongs to the broker or the network: the relay counts no
// attempt for it, keeps the rows pending and backs off as a whole
// (MinBackoff doubling up to MaxBackoff, with jitter) until a batch
// publishes again, however long that takes. An error wrapping
// ErrUnknownTopic is treated so for RelayConfig.UnknownTopicGrace. Any
// other error is the message's: it counts toward MaxAttempts, after which
// the row is dead-lettered. A custom Publisher should wrap its
// connection, timeout and availability errors in ErrBrokerUnavailable;
// the kafka package does (see its classify rules).
//
// ctx carries RelayConfig.PublishTimeout's deadline: a call that outlives
// it should give up with ctx's error (wrapped in ErrBrokerUnavailable).
// A Relay with several Workers calls Publish from several goroutines, with
// disjoint keys; a Publisher shared by relays is called concurrently too.
type Publisher interface {
	Publish(ctx context.Context, msgs []Message) error
}

// PublishErrors reports a partial failure: one entry per message given to
// Publish, nil for the messages written.
type PublishErrors []error

// Error implements error.
func (e PublishErrors) Error() string {
	n, first := 0, error(nil)
	for _, err := range e {
		if err != nil {
			if first == nil {
				first = err
			}
			n++
		}
	}
	return fmt.Sprintf("%d of %d messages not published; first: %v", n, len(e), first)
}

// Hook observes and steers the relay. The relay calls its methods, for
// each hook of RelayConfig.Hooks in order, from the goroutine of the batch
// (several at once with several Workers: implementations must be safe for
// concurrent use). Embed HookBase to implement only some of them.
type Hook interface {
	// BeforePublish runs before a message is handed to the Publisher. It
	// may change the message (add headers, say). An error vetoes it: the
	// message is not sent; an error wrapping ErrDeadLetter dead-letters it
	// at once, any other counts as a failed attempt (retried with
	// backoff). Later messages of its key in the batch are held back.
	BeforePublish(ctx context.Context, m *Message) error
	// AfterPublish runs for each message the broker took; took is how
	// long the Publish call lasted.
	AfterPublish(ctx context.Context, m *Message, took time.Duration)
	// OnError runs for each message not published that will be tried
	// again, with the attempt number that failed (1 for the first). A
	// message held back behind a failed one of its key (err wraps
	// ErrHeldBack) was not attempted, and a failure of the broker (err
	// wraps ErrBrokerUnavailable) counts no attempt: attempt is then its
	// count so far.
	OnError(ctx context.Context, m *Message, err error, attempt int)
	// OnDeadLetter runs for each message dead-lettered.
	OnDeadLetter(ctx context.Context, m *Message, err error, attempts int)
}

// HookBase implements Hook with methods that do nothing; embed it.
type HookBase struct{}

// BeforePublish implements Hook.
func (HookBase) BeforePublish(context.Context, *Message) error { return nil }

// AfterPublish implements Hook.
func (HookBase) AfterPublish(context.Context, *Message, time.Duration) {}

// OnError implements Hook.
func (HookBase) OnError(context.Context, *Message, error, int) {}

// OnDeadLetter implements Hook.
func (HookBase) OnDeadLetter(context.Context, *Message, error, int) {}

// Relay moves committed outbox rows to a Publisher: it claims due rows,
// publishes them in outbox order, and marks them published, schedules a
// retry, or dead-letters them. Several relays, in one process or many,
// may run over the same table; each key's order is kept.
//
// Run it from the scheduler package, or call Drain yourself. A Relay is
// safe for concurrent use, but passes of one Relay should not overlap
// (the scheduler sees to it); use several Relays for parallel passes.
type Relay struct {
	kickMu sync.Mutex
	kickCh chan struct{} // closed (and replaced) by kick: idle workers look again
	cfg    RelayConfig
	db     *sql.DB
	d      dialects.Dialect
	table  dialects.Table
	pub    Publisher
	log    *slog.Logger
	warn   logLimiter     // rate-limits warnings (relay_log.go)
	fails  failWatch      // topics failing, to say when they publish again
	outage outage         // the backoff as a whole while the broker is down (relay_outage.go)
	admin  *Admin         // the admin calls (admin.go)
	source sequenceSource // of the per-key counters (relay_source.go)
	conns  connKeeper     // the connections held between passes (relay_conns.go)
}

// Close returns the connections the relay holds between passes
// (RelayConfig.HeldConns) to the pool. A relay may still be used after
// Close: it takes connections again as it needs them.
func (r *Relay) Close() error {
	r.conns.close()
	return nil
}

// Row is an outbox row as the relay reads it (see DeadLetters).
type Row = dialects.Row

// NewRelay returns a relay over the outbox table of db that publishes with
// pub. db needs no plugin registered (a relay may run in a process that
// writes nothing), but when one is, its table, shards and dialect are the
// defaults.
func NewRelay(db *gorm.DB, pub Publisher, cfg RelayConfig) (*Relay, error) {
	if db == nil {
		return nil, fmt.Errorf("%w: NewRelay: nil *gorm.DB", ErrInvalidConfig)
	}
	if pub == nil {
		return nil, fmt.Errorf("%w: NewRelay: nil Publisher", ErrInvalidConfig)
	}
	cfg, table, err := relayConfig(db, cfg)
	if err != nil {
		return nil, err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("gormoutbox: NewRelay: %w", err)
	}
	log := cfg.Logger
	if log == nil {
		// Not silent by default: a relay whose every publication fails
		// must say so (rate-limited, see WarnInterval).
		log = slog.Default()
	}
	return &Relay{cfg: cfg, db: sqlDB, d: cfg.Dialect, table: table, pub: pub,
		log: log.With("outbox_table", table.String()), warn: logLimiter{every: WarnInterval},
		kickCh: make(chan struct{}), admin: newAdmin(sqlDB, cfg.Dialect, table, cfg.Now, cfg.CleanupBatch),
		conns: connKeeper{db: sqlDB, keep: max(cfg.HeldConns, 0)}}, nil
}

// Notify tells a running pass that new rows were committed: its idle
// workers look again at once instead of at their next poll. Listen calls
// it; call it from Config.Wake too when the relay runs in the writing
// process. It never blocks.
func (r *Relay) Notify() {
	r.kickMu.Lock()
	close(r.kickCh)
	r.kickCh = make(chan struct{})
	r.kickMu.Unlock()
}

func (r *Relay) kicked() <-chan struct{} {
	r.kickMu.Lock()
	defer r.kickMu.Unlock()
	return r.kickCh
}
