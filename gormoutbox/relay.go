package gormoutbox

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
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
	// ErrHeldBack) was not attempted: attempt is then its count so far.
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

// ErrDeadLetter, wrapped in an error a BeforePublish hook returns,
// dead-letters the message at once instead of retrying it.
var ErrDeadLetter = errors.New("dead-lettered by a hook")

// Publisher error kinds.
var (
	// ErrMessageTooLarge: the broker (or the client's batch limit) cannot
	// take the message; retrying cannot help, so it is dead-lettered at once.
	ErrMessageTooLarge = errors.New("message too large")
	// ErrHeldBack: the message was not sent because an earlier message of
	// its key failed; it is left as it was, with no attempt counted.
	ErrHeldBack = errors.New("held back behind a failed message of the same key")
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

	// MaxAttempts is how many failed publications dead-letter a row.
	// Default 10.
	MaxAttempts int

	// MinBackoff and MaxBackoff bound the wait before a failed row is
	// tried again: MinBackoff × 2^(attempts−1), capped at MaxBackoff, of
	// which a random half is taken off (jitter). Defaults 1s and 5m.
	MinBackoff time.Duration
	MaxBackoff time.Duration

	// DeleteOnPublish deletes rows once published instead of marking them
	// (then there is nothing for Cleanup to do). Default false.
	DeleteOnPublish bool

	// Budget bounds one Drain: it stops claiming once Budget has passed
	// (the batch in flight is finished). Default 10s.
	Budget time.Duration

	// MaxShards bounds the shards one MySQL pass locks; with N relays, set
	// it to Shards/N so that they split the work. Default 0: every free
	// shard (other relays then stand by). Not used on PostgreSQL, where
	// relays share rows through SKIP LOCKED.
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
	warn   logLimiter // rate-limits warnings (relay_log.go)
	fails  failWatch  // topics failing, to say when they publish again
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
	def(&cfg.MaxAttempts, DefaultMaxAttempts)
	def(&cfg.CleanupBatch, DefaultCleanupBatch)
	def(&cfg.Workers, min(DefaultWorkers, max(cfg.Shards, 1)))
	defd := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	defd(&cfg.MinBackoff, DefaultMinBackoff)
	defd(&cfg.MaxBackoff, DefaultMaxBackoff)
	defd(&cfg.Budget, DefaultBudget)
	defd(&cfg.LockWait, DefaultLockWait)
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
		return nil, errors.Join(errs...)
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
		kickCh: make(chan struct{})}, nil
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

// DrainResult counts what one Drain did.
type DrainResult struct {
	// Batches is the number of claims that returned rows.
	Batches int
	// Published, Retried and Dead count rows by outcome; HeldBack counts
	// rows left for later because an earlier row of their key failed.
	Published, Retried, Dead, HeldBack int
}

func (a *DrainResult) add(b DrainResult) {
	a.Batches += b.Batches
	a.Published += b.Published
	a.Retried += b.Retried
	a.Dead += b.Dead
	a.HeldBack += b.HeldBack
}

// Drain runs one relay pass: it claims and publishes batches until no due
// row is left, the Budget is spent, ctx is done, or a whole batch failed
// (the broker is likely down; the rows wait for their backoff). A batch
// that has started is always finished — published and marked — even when
// ctx is cancelled meanwhile, so that stopping never turns a sent message
// into a duplicate.
func (r *Relay) Drain(ctx context.Context) (DrainResult, error) {
	start := time.Now()
	opts := dialects.ClaimOptions{Shards: r.cfg.Shards, MaxShards: r.cfg.MaxShards, LockWait: max(r.cfg.LockWait, 0)}
	var (
		total DrainResult
		err   error
		pl    passLog
	)
	if w := r.cfg.Workers; w == 1 {
		total, err = r.drain(ctx, start, opts, newIdleGroup(1), &pl)
	} else {
		g := newIdleGroup(w)
		if opts.MaxShards > 0 {
			opts.MaxShards = (opts.MaxShards + w - 1) / w
		}
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			errs []error
		)
		for i := 0; i < w; i++ {
			o := opts
			o.ShardMod, o.ShardRem = w, i
			wg.Add(1)
			go func() {
				defer wg.Done()
				res, err := r.drain(ctx, start, o, g, &pl)
				mu.Lock()
				defer mu.Unlock()
				total.add(res)
				if err != nil {
					errs = append(errs, err)
				}
			}()
		}
		wg.Wait()
		err = errors.Join(errs...)
	}
	r.logPass(r.cfg.Now(), &pl)
	if total.Batches > 0 {
		r.log.Debug("outbox relay: pass", "batches", total.Batches, "published", total.Published,
			"retried", total.Retried, "dead", total.Dead, "held_back", total.HeldBack,
			"duration", time.Since(start))
	}
	return total, err
}

// drain is one worker's loop of Drain.
func (r *Relay) drain(ctx context.Context, start time.Time, opts dialects.ClaimOptions, g *idleGroup, pl *passLog) (DrainResult, error) {
	var total DrainResult
	pass, err := r.d.Open(ctx, r.db, r.table, opts)
	if err != nil {
		g.leave()
		return total, err
	}
	idle := false
	defer func() {
		if cerr := pass.Close(); cerr != nil {
			r.log.Error("outbox relay: closing pass", "error", cerr)
		}
	}()
	for ctx.Err() == nil && time.Since(start) < r.cfg.Budget {
		kick := r.kicked() // taken before the claim: a Notify during it is not lost
		rows, err := pass.Claim(ctx, r.cfg.Now(), r.cfg.BatchSize)
		if err != nil {
			if !idle {
				g.leave()
			}
			if ctx.Err() != nil {
				return total, ctx.Err() // stopped between batches: nothing in flight
			}
			return total, err
		}
		if len(rows) == 0 {
			// Done when every worker has found nothing; until then keep
			// looking, for the others' pass is not over and new rows of
			// this worker's shards would otherwise wait for the next one.
			if !idle {
				idle = true
				if g.idle() {
					break
				}
			}
			if g.done() {
				break
			}
			t := time.NewTimer(idlePoll)
			select {
			case <-ctx.Done():
			case <-g.overCh:
			case <-kick:
			case <-t.C:
			}
			t.Stop()
			continue
		}
		if idle {
			idle = false
			g.busy()
		}
		res, allFailed, err := r.batch(context.WithoutCancel(ctx), pass, rows, pl)
		total.add(res)
		if err != nil {
			g.leave()
			return total, err
		}
		if allFailed {
			break
		}
	}
	if !idle {
		g.leave()
	}
	return total, nil
}

// idlePoll is how often a worker that found nothing looks again while
// another worker of the pass is still busy.
const idlePoll = 5 * time.Millisecond

// idleGroup ends the workers of one Drain together: a worker that finds
// nothing is idle; when all are idle (or gone) at once, the pass is over.
type idleGroup struct {
	mu         sync.Mutex
	n, idleNow int
	over       bool
	overCh     chan struct{} // closed when over: idle workers stop waiting
}

func newIdleGroup(n int) *idleGroup { return &idleGroup{n: n, overCh: make(chan struct{})} }

// end marks the pass over; g.mu is held.
func (g *idleGroup) end() {
	if !g.over {
		g.over = true
		close(g.overCh)
	}
}

// idle marks one worker idle and reports whether the pass is over.
func (g *idleGroup) idle() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.idleNow++
	if g.idleNow >= g.n {
		g.end()
	}
	return g.over
}

// busy marks an idle worker busy again.
func (g *idleGroup) busy() {
	g.mu.Lock()
	g.idleNow--
	g.mu.Unlock()
}

// leave removes a busy worker for good (it stopped: budget, error).
func (g *idleGroup) leave() {
	g.mu.Lock()
	g.n--
	if g.idleNow >= g.n {
		g.end()
	}
	g.mu.Unlock()
}

func (g *idleGroup) done() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.over
}

// batch publishes claimed rows and records the outcome.
func (r *Relay) batch(ctx context.Context, pass dialects.Pass, rows []Row, pl *passLog) (DrainResult, bool, error) {
	res := DrainResult{Batches: 1}
	msgs := make([]Message, len(rows))
	for i := range rows {
		msgs[i] = message(&rows[i])
	}
	errs := make([]error, len(rows))
	// Hooks first: a veto keeps the message (and the later ones of its key)
	// out of the call.
	send := make([]int, 0, len(rows))
	if len(r.cfg.Hooks) > 0 {
		vetoed := make(map[string]error)
		for i := range msgs {
			tk := msgs[i].Topic + "\x00" + string(msgs[i].Key)
			if verr, ok := vetoed[tk]; ok && msgs[i].Key != nil {
				errs[i] = fmt.Errorf("%w (%v)", ErrHeldBack, verr)
				continue
			}
			for _, h := range r.cfg.Hooks {
				if err := h.BeforePublish(ctx, &msgs[i]); err != nil {
					errs[i] = fmt.Errorf("vetoed by a hook: %w", err)
					vetoed[tk] = err
					break
				}
			}
			if errs[i] == nil {
				send = append(send, i)
			}
		}
	} else {
		for i := range msgs {
			send = append(send, i)
		}
	}
	var (
		perr  error
		took  time.Duration
		batch = msgs
	)
	if len(send) > 0 {
		if len(send) < len(msgs) {
			batch = make([]Message, len(send))
			for j, i := range send {
				batch[j] = msgs[i]
			}
		}
		start := time.Now()
		perr = r.pub.Publish(ctx, batch)
		took = time.Since(start)
		var pe PublishErrors
		switch {
		case perr == nil:
		case errors.As(perr, &pe) && len(pe) == len(batch):
			for j, i := range send {
				errs[i] = pe[j]
			}
		default:
			for _, i := range send {
				errs[i] = perr
			}
		}
	} else {
		perr = errors.New("every message of the batch was vetoed by a hook")
	}
	now := r.cfg.Now()
	out := dialects.Outcome{Now: now, Delete: r.cfg.DeleteOnPublish}
	failed := make(map[string]bool)
	allFailed := perr != nil
	var lb batchLog
	if r.fails.watching() {
		lb.ok = make(map[string]bool)
	}
	for i := range rows {
		row, err := &rows[i], errs[i]
		tk := row.Topic + "\x00" + string(row.Key)
		if err == nil {
			allFailed = false
			if lb.ok != nil {
				lb.ok[row.Topic] = true
			}
			for _, h := range r.cfg.Hooks {
				h.AfterPublish(ctx, &msgs[i], took)
			}
			if row.Key != nil && failed[tk] {
				// The publisher broke its contract: a later message of a
				// failed key was written. It is out of order on the topic;
				// say so loudly rather than hide it.
				r.log.Error("outbox relay: publisher wrote a message after an earlier one of its key failed",
					"event_id", row.EventID, "topic", row.Topic)
			}
			out.Published = append(out.Published, row.ID)
			continue
		}
		if !errors.Is(err, ErrMessageTooLarge) {
			// A message too large is dead-lettered at once and holds
			// nothing back: the later ones of its key may be written.
			failed[tk] = true
		}
		if errors.Is(err, ErrHeldBack) {
			res.HeldBack++
			for _, h := range r.cfg.Hooks {
				h.OnError(ctx, &msgs[i], err, row.Attempts)
			}
			continue
		}
		rt := dialects.Retry{ID: row.ID, Attempts: row.Attempts + 1, Error: truncate(err.Error(), 2000)}
		once := errors.Is(err, ErrMessageTooLarge) || errors.Is(err, ErrDeadLetter)
		switch {
		case once:
			rt.Dead = true
		case rt.Attempts >= r.cfg.MaxAttempts:
			rt.Dead = true
		default:
			rt.AvailableAt = now.Add(r.backoff(rt.Attempts))
		}
		lb.fail(row.Topic, once)
		if rt.Dead {
			res.Dead++
			lb.dead(row, rt.Error)
			// Each at debug; a rate-limited summary at warn (logPass).
			r.log.Debug("outbox relay: dead-lettered", "id", row.ID, "event_id", row.EventID,
				"topic", row.Topic, "attempts", rt.Attempts, "error", rt.Error)
			for _, h := range r.cfg.Hooks {
				h.OnDeadLetter(ctx, &msgs[i], err, rt.Attempts)
			}
		} else {
			res.Retried++
			for _, h := range r.cfg.Hooks {
				h.OnError(ctx, &msgs[i], err, rt.Attempts)
			}
		}
		out.Retries = append(out.Retries, rt)
		out.Keys = append(out.Keys, dialects.TopicKey{Topic: row.Topic, Key: row.Key})
	}
	res.Published = len(out.Published)
	if err := pass.Finish(ctx, out); err != nil {
		// Nothing is lost: the rows stay pending and are claimed again;
		// those already sent are sent twice (consumers dedupe by event id).
		return DrainResult{Batches: 1}, allFailed, fmt.Errorf("gormoutbox: relay: %w", err)
	}
	pl.add(res, perr, &lb)
	return res, allFailed, nil
}

// backoff returns the wait before attempt n+1: MinBackoff × 2^(n−1), capped
// at MaxBackoff, with "equal jitter" (a random point in its upper half).
func (r *Relay) backoff(n int) time.Duration {
	d := r.cfg.MinBackoff
	for i := 1; i < n && d < r.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, r.cfg.MaxBackoff)
	if d <= 1 {
		return d
	}
	return d/2 + rand.N(d/2)
}

func message(row *Row) Message {
	h := make([]Header, 0, 5+len(row.Headers))
	h = append(h,
		Header{HeaderEventID, []byte(row.EventID)},
		Header{HeaderEventType, []byte(row.EventType)},
		Header{HeaderOccurredAt, []byte(row.CreatedAt.UTC().Format(time.RFC3339Nano))},
	)
	if row.AggregateType != "" {
		h = append(h, Header{HeaderAggregateType, []byte(row.AggregateType)})
	}
	if row.AggregateID != "" {
		h = append(h, Header{HeaderAggregateID, []byte(row.AggregateID)})
	}
	names := make([]string, 0, len(row.Headers))
	for k := range row.Headers {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		h = append(h, Header{k, []byte(row.Headers[k])})
	}
	return Message{Topic: row.Topic, Key: row.Key, Value: row.Payload, Headers: h, EventID: row.EventID,
		ID: row.ID, Attempts: row.Attempts, CreatedAt: row.CreatedAt}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}

// Replay puts dead-lettered rows back in the queue (attempts reset, due
// now) and returns how many it put back. Rows that are not dead are left
// alone. A replayed row may reach the topic after later rows of its key,
// which went on while it was dead.
func (r *Relay) Replay(ctx context.Context, ids ...int64) (int64, error) {
	n, err := r.d.Replay(ctx, r.db, r.table, r.cfg.Now(), ids)
	if err != nil {
		return 0, fmt.Errorf("gormoutbox: %w", err)
	}
	return n, nil
}

// Failed lists rows whose last process attempt a consumer answered FAILED
// (see Acknowledge), in id order, with their process attempts and last
// error; q selects them as for DeadLetters.
func (r *Relay) Failed(ctx context.Context, q DeadLetterQuery) ([]Row, error) {
	rows, err := dialects.QueryFailed(ctx, r.db, r.d, r.table, q)
	if err != nil {
		return nil, fmt.Errorf("gormoutbox: %w", err)
	}
	return rows, nil
}

// Resend puts failed rows back in the queue for one more process attempt
// (the next "process-attempt"; a FAILED answer to it fails the row again at
// once when the tracker's MaxAttempts is spent), due now. Use it once the
// consumer's problem is fixed. It returns how many rows it put back; ids
// that are not failed rows are left alone.
func (r *Relay) Resend(ctx context.Context, ids ...int64) (int64, error) {
	n, err := dialects.Resend(ctx, r.db, r.d, r.table, r.cfg.Now(), ids)
	if err != nil {
		return 0, fmt.Errorf("gormoutbox: %w", err)
	}
	return n, nil
}

// DeadLetterQuery selects dead-lettered rows.
type DeadLetterQuery = dialects.DeadQuery

// DeadLetters lists dead-lettered rows in id order, with their attempts and
// last error.
func (r *Relay) DeadLetters(ctx context.Context, q DeadLetterQuery) ([]Row, error) {
	rows, err := r.d.DeadLetters(ctx, r.db, r.table, q)
	if err != nil {
		return nil, fmt.Errorf("gormoutbox: %w", err)
	}
	return rows, nil
}

// Cleanup deletes rows published more than retention ago, CleanupBatch rows
// per statement so that no statement holds locks for long, until none is
// left or ctx is done. It returns how many rows it deleted.
func (r *Relay) Cleanup(ctx context.Context, retention time.Duration) (int64, error) {
	before := r.cfg.Now().Add(-retention)
	var total int64
	for ctx.Err() == nil {
		n, err := r.d.Cleanup(ctx, r.db, r.table, before, r.cfg.CleanupBatch)
		total += n
		if err != nil {
			return total, fmt.Errorf("gormoutbox: %w", err)
		}
		if n < int64(r.cfg.CleanupBatch) {
			break
		}
	}
	return total, ctx.Err()
}

// Stats counts the pending and dead rows of the outbox table.
type Stats = dialects.Stats

// Stats reports pending and dead rows and the age of the oldest pending.
func (r *Relay) Stats(ctx context.Context) (Stats, error) {
	return r.d.Stats(ctx, r.db, r.table)
}

// TopicStats reports Stats per topic (pending, dead, oldest pending).
func (r *Relay) TopicStats(ctx context.Context) (map[string]Stats, error) {
	return dialects.QueryTopicStats(ctx, r.db, r.d, r.table)
}

// CountStates is TopicStats with the published rows that wait for nothing
// and the processed rows counted too (Stats.Published, Stats.Processed):
// every state of every row. It reads all published rows, so it is for
// operators (outboxctl status -all), not for metrics.
func (r *Relay) CountStates(ctx context.Context) (map[string]Stats, error) {
	stats, err := r.TopicStats(ctx)
	if err != nil {
		return nil, err
	}
	if err := dialects.CountDone(ctx, r.db, r.d, r.table, stats); err != nil {
		return nil, err
	}
	return stats, nil
}
