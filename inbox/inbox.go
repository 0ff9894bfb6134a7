// Package inbox is the consumer side of the outbox: it reads Kafka topics
// with a kafka-go consumer group and runs a handler for each message inside
// a GORM transaction that also records the message's event id in an inbox
// table. A message recorded before (a redelivery: at-least-once delivery
// sends some messages twice) is skipped, so the handler's database writes
// happen once per event. The group's offsets are committed only after the
// transaction commits.
//
//	c, err := inbox.New(db, func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
//		return tx.Save(&Copy{...}).Error // and gormoutbox.Publish(tx, ...) for events of your own
//	}, inbox.Config{Brokers: brokers, GroupID: "orders", Topics: []string{"inventory"}})
//	if err := c.Migrate(ctx); err != nil { ... }
//	err = c.Run(ctx) // until ctx is cancelled
//
// Several messages share one transaction (Config.BatchSize), each handler
// behind its own savepoint: a failing handler is undone alone. Its message
// is retried with backoff, and the later messages of its partition wait
// (per-key order: a key lives in one partition); after Config.MaxAttempts
// the message is parked as a dead letter in the inbox table and the
// partition moves on. Nothing is dropped silently. Broker and database
// outages pause the consumer; they do not end Run. Config.Workers handles
// disjoint sets of partitions concurrently.
//
// Package ack builds acknowledgements (SUCCESS / FAILED answers to the
// producing service) on top of the inbox.
package inbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"gorm.io/gorm"
)

// Header names the inbox reads.
const (
	// HeaderEventID carries the event id (gormoutbox sends it).
	HeaderEventID = "event-id"
	// HeaderProcessAttempt numbers re-sends of an event that a consumer
	// answered FAILED to (see package ack): a re-send is a new delivery to
	// process, so it is deduplicated apart from the first.
	HeaderProcessAttempt = "process-attempt"
)

// Errors.
var (
	// ErrInvalidConfig reports a Config field that cannot be used.
	ErrInvalidConfig = errors.New("inbox: invalid config")
	// ErrNoHandler: New was given a nil handler.
	ErrNoHandler = errors.New("inbox: no handler")
)

// Message is a Kafka message handed to the handler.
type Message struct {
	kafkago.Message
	// EventID is what the inbox deduplicates on (Config.EventID).
	EventID string
	// Attempt counts the handler's runs on this message in this process,
	// from 1.
	Attempt int
	// Consumer is the consumer's name (its GroupID).
	Consumer string
}

// Header returns the value of the first header called name, "" if none.
func (m *Message) Header(name string) string {
	for _, h := range m.Headers {
		if h.Key == name {
			return string(h.Value)
		}
	}
	return ""
}

// Handler processes one message. tx is the inbox's transaction (behind a
// savepoint of this message): write through it, and publish events with
// gormoutbox.Publish(tx, ...) so that they commit with the inbox record.
// With Config.Workers > 1, handlers of different partitions run
// concurrently.
// Returning an error undoes the handler's writes; the message is retried.
// The handler must not commit or roll back tx.
type Handler func(ctx context.Context, tx *gorm.DB, m *Message) error

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
	// DefaultEventID.
	EventID func(*Message) string
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

// DefaultEventID is the event-id header (with "#n" appended for the n-th
// process attempt of a re-sent event, n ≥ 2), or "topic/partition/offset"
// for messages without one. Ids over MaxIDLen bytes are hashed.
func DefaultEventID(m *Message) string {
	id := m.Header(HeaderEventID)
	if id == "" {
		id = m.Topic + "/" + strconv.Itoa(m.Partition) + "/" + strconv.FormatInt(m.Offset, 10)
	} else if a := m.Header(HeaderProcessAttempt); a != "" && a != "1" {
		id += "#" + a
	}
	if len(id) > MaxIDLen {
		sum := sha256.Sum256([]byte(id))
		id = "sha256:" + hex.EncodeToString(sum[:])
	}
	return id
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
	for name, v := range map[string]int{"BatchSize": c.BatchSize, "MaxAttempts": c.MaxAttempts, "Workers": c.Workers} {
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

// Consumer reads messages and hands them to its handler once per event.
type Consumer struct {
	db      *gorm.DB
	handler Handler
	cfg     Config
	st      *store

	running atomic.Bool
	stats   struct {
		handled, duplicates, retries, parked, batches, commitErrors atomic.Int64
		txFailures, fetchErrors                                     atomic.Int64
		inTx, inCommit                                              atomic.Int64 // nanoseconds
	}
}

// New returns a Consumer of db's inbox table. The table must exist
// (Migrate). db is used as it is: register the gormoutbox plugin on it for
// handlers that publish.
func New(db *gorm.DB, handler Handler, cfg Config) (*Consumer, error) {
	if handler == nil {
		return nil, ErrNoHandler
	}
	if db == nil {
		return nil, fmt.Errorf("%w: nil *gorm.DB", ErrInvalidConfig)
	}
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	st, err := newStore(db, cfg.Table)
	if err != nil {
		return nil, err
	}
	return &Consumer{db: db, handler: handler, cfg: cfg, st: st}, nil
}

// Migrate creates or upgrades the inbox table (idempotent, safe from
// several processes at once).
func (c *Consumer) Migrate(ctx context.Context) error {
	sqlDB, err := c.db.DB()
	if err != nil {
		return fmt.Errorf("inbox: migrate: %w", err)
	}
	if err := c.st.d.MigrateSteps(ctx, sqlDB, c.st.table, c.st.migrations()); err != nil {
		return fmt.Errorf("inbox: %w", err)
	}
	return nil
}

// Stats are counters since the Consumer was made.
type Stats struct {
	// Handled messages: the handler ran and its transaction committed.
	Handled int64
	// Duplicates skipped: recorded in the inbox before.
	Duplicates int64
	// Retries: handler failures that were tried again.
	Retries int64
	// Parked messages (dead letters).
	Parked int64
	// Batches committed.
	Batches int64
	// CommitErrors: offset commits that failed (the messages come again
	// and are skipped as duplicates).
	CommitErrors int64
	// TxFailures: batch transactions that failed (the database, not a
	// handler) and were tried again after a backoff.
	TxFailures int64
	// FetchErrors: failed reads from Kafka (the group could not be joined:
	// the broker is down, credentials are wrong), each tried again after a
	// backoff and logged at warn.
	FetchErrors int64
	// InTx is the time spent in batch transactions (handlers included),
	// InOffsetCommit the time spent committing offsets: with the time Run
	// has been running, they tell whether the database, the broker or the
	// wait for messages bounds the throughput.
	InTx, InOffsetCommit time.Duration
}

// GroupID returns the consumer's group (its name in the inbox table).
func (c *Consumer) GroupID() string { return c.cfg.GroupID }

// Stats returns the counters.
func (c *Consumer) Stats() Stats {
	return Stats{
		Handled:        c.stats.handled.Load(),
		Duplicates:     c.stats.duplicates.Load(),
		Retries:        c.stats.retries.Load(),
		Parked:         c.stats.parked.Load(),
		Batches:        c.stats.batches.Load(),
		CommitErrors:   c.stats.commitErrors.Load(),
		TxFailures:     c.stats.txFailures.Load(),
		FetchErrors:    c.stats.fetchErrors.Load(),
		InTx:           time.Duration(c.stats.inTx.Load()),
		InOffsetCommit: time.Duration(c.stats.inCommit.Load()),
	}
}

// partition is the queue of one topic partition's fetched messages.
type partition struct {
	topic string
	id    int
	msgs  []*Message // in offset order, not yet done
	// notBefore delays the head message after a failure.
	notBefore time.Time
	lastErr   string
	fails     int // failures of the head message
}

type pkey struct {
	topic string
	id    int
}

// Run reads and handles messages until ctx is cancelled; then it finishes
// the batch in flight (its transaction and offsets), leaves the group and
// returns nil. Kafka and database failures do not end it: they are logged
// at warn, counted in Stats and tried again with backoff, so a broker or
// database outage only pauses the consumer.
// A Consumer runs once at a time.
func (c *Consumer) Run(ctx context.Context) error {
	if !c.running.CompareAndSwap(false, true) {
		return errors.New("inbox: Run called while running")
	}
	defer c.running.Store(false)
	rc := kafkago.ReaderConfig{
		Brokers:        c.cfg.Brokers,
		GroupID:        c.cfg.GroupID,
		GroupTopics:    c.cfg.Topics,
		Dialer:         c.cfg.Dialer,
		StartOffset:    c.cfg.StartOffset,
		MaxWait:        c.cfg.MaxWait,
		CommitInterval: 0, // synchronous commits, after the transaction
		QueueCapacity:  c.cfg.BatchSize,
		SessionTimeout: c.cfg.SessionTimeout,
		// Partitions added to a topic are read too (the group rebalances).
		WatchPartitionChanges: true,
		ErrorLogger: kafkago.LoggerFunc(func(msg string, args ...any) {
			c.cfg.Logger.Warn("inbox: kafka reader: " + fmt.Sprintf(msg, args...))
		}),
	}
	if c.cfg.Reader != nil {
		c.cfg.Reader(&rc)
		rc.GroupID, rc.GroupTopics, rc.CommitInterval = c.cfg.GroupID, c.cfg.Topics, 0
	}
	reader := kafkago.NewReader(rc)
	defer reader.Close()

	fetchCtx, stopFetch := context.WithCancel(ctx)
	defer stopFetch()
	in := make(chan kafkago.Message, c.cfg.BatchSize)
	var fetchErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(in)
		fails := 0
		for {
			m, err := reader.FetchMessage(fetchCtx)
			if err != nil {
				if fetchCtx.Err() != nil {
					return
				}
				if errors.Is(err, io.EOF) { // the reader was closed
					fetchErr = err
					return
				}
				// kafka-go reports that joining the group failed several
				// times (the broker is down, say) and keeps trying: so do
				// we, after a pause.
				fails++
				c.stats.fetchErrors.Add(1)
				d := backoff(c.cfg.MinBackoff, c.cfg.MaxBackoff, fails)
				c.cfg.Logger.Warn("inbox: reading from Kafka failed; trying again", "group", c.cfg.GroupID,
					"failures", fails, "retry_in", d, "error", err)
				select {
				case <-time.After(d):
				case <-fetchCtx.Done():
					return
				}
				continue
			}
			fails = 0
			select {
			case in <- m:
			case <-fetchCtx.Done():
				return
			}
		}
	}()

	// With several workers, each partition goes to one of them (so its
	// messages stay in order); each works in its own transactions.
	ins := []chan kafkago.Message{in}
	if n := c.cfg.Workers; n > 1 {
		ins = make([]chan kafkago.Message, n)
		for i := range ins {
			ins[i] = make(chan kafkago.Message, c.cfg.BatchSize)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() {
				for _, ch := range ins {
					close(ch)
				}
			}()
			for m := range in {
				select {
				case ins[workerOf(m.Topic, m.Partition, n)] <- m:
				case <-fetchCtx.Done():
					return
				}
			}
		}()
	}
	var lwg sync.WaitGroup
	for _, ch := range ins {
		lwg.Add(1)
		go func() {
			defer lwg.Done()
			c.loop(ctx, reader, ch)
		}()
	}
	lwg.Wait()
	stopFetch()
	wg.Wait()
	if fetchErr != nil {
		return fmt.Errorf("inbox: fetch: %w", fetchErr)
	}
	return nil
}

// workerOf is the worker of a topic partition.
func workerOf(topic string, partition, n int) int {
	h := uint32(2166136261)
	for i := 0; i < len(topic); i++ {
		h ^= uint32(topic[i])
		h *= 16777619
	}
	return int((h + uint32(partition)) % uint32(n))
}

// loop handles the messages of in until ctx ends (after finishing the batch
// in flight) or in is closed.
func (c *Consumer) loop(ctx context.Context, reader *kafkago.Reader, in <-chan kafkago.Message) {
	r := &run{c: c, reader: reader, parts: map[pkey]*partition{}}
	// Work that has started finishes even when ctx is cancelled.
	work := context.WithoutCancel(ctx)
	maxQueued := 10 * c.cfg.BatchSize
	for {
		if ctx.Err() != nil {
			return
		}
		// Wait for something to do: a message, or a backed-off partition
		// coming due.
		if r.ready(c.cfg.Now()) == 0 {
			var timer <-chan time.Time
			var t *time.Timer
			if d, ok := r.nextDue(c.cfg.Now()); ok {
				t = time.NewTimer(d)
				timer = t.C
			}
			src := in
			if r.queued >= maxQueued {
				src = nil // full: wait for a backed-off partition instead
			}
			closed := false
			select {
			case m, ok := <-src:
				if ok {
					r.add(m)
				} else {
					closed = true
				}
			case <-timer:
			case <-ctx.Done():
			}
			if t != nil {
				t.Stop()
			}
			if closed || ctx.Err() != nil {
				return
			}
		}
		// Take what else has arrived, up to a batch.
	drain:
		for r.queued < maxQueued && r.ready(c.cfg.Now()) < c.cfg.BatchSize {
			select {
			case m, ok := <-in:
				if !ok {
					break drain
				}
				r.add(m)
			default:
				break drain
			}
		}
		r.step(work)
	}
}

// run is the state of one Run.
type run struct {
	c      *Consumer
	reader *kafkago.Reader
	parts  map[pkey]*partition
	order  []*partition // round robin
	next   int
	queued int
	// dbFails counts consecutive batches whose transaction failed.
	dbFails int
	dbWait  time.Time
}

func (r *run) add(km kafkago.Message) {
	k := pkey{km.Topic, km.Partition}
	p := r.parts[k]
	if p == nil {
		p = &partition{topic: km.Topic, id: km.Partition}
		r.parts[k] = p
		r.order = append(r.order, p)
	}
	// After a rebalance the reader may start a partition again from its
	// committed offset: drop queued messages from there on (they come
	// again, in order).
	if n := len(p.msgs); n > 0 && km.Offset <= p.msgs[n-1].Offset {
		i := slices.IndexFunc(p.msgs, func(m *Message) bool { return m.Offset >= km.Offset })
		r.queued -= n - i
		p.msgs = p.msgs[:i]
		if i == 0 {
			p.fails, p.notBefore, p.lastErr = 0, time.Time{}, ""
		}
	}
	m := &Message{Message: km, Consumer: r.c.cfg.GroupID}
	m.EventID = r.c.cfg.EventID(m)
	p.msgs = append(p.msgs, m)
	r.queued++
}

// ready counts the queued messages that may be handled now.
func (r *run) ready(now time.Time) int {
	if now.Before(r.dbWait) {
		return 0
	}
	n := 0
	for _, p := range r.order {
		if len(p.msgs) > 0 && !now.Before(p.notBefore) {
			n += len(p.msgs)
		}
	}
	return n
}

// nextDue is how long until a backed-off partition (or the database) may
// be tried again.
func (r *run) nextDue(now time.Time) (time.Duration, bool) {
	var best time.Time
	for _, p := range r.order {
		if len(p.msgs) > 0 && p.notBefore.After(now) && (best.IsZero() || p.notBefore.Before(best)) {
			best = p.notBefore
		}
	}
	if r.dbWait.After(now) && (best.IsZero() || r.dbWait.After(best)) {
		best = r.dbWait
	}
	if best.IsZero() {
		return 0, false
	}
	return best.Sub(now), true
}

// slice is a partition's part of a batch.
type slice struct {
	p    *partition
	msgs []*Message
	done int // messages handled or skipped, a prefix of msgs
}

// step handles one batch of ready messages, and parks the head messages
// that ran out of attempts.
func (r *run) step(ctx context.Context) {
	c := r.c
	now := c.cfg.Now()
	if now.Before(r.dbWait) {
		return
	}
	var batch []*slice
	n := 0
	for i := 0; i < len(r.order) && n < c.cfg.BatchSize; i++ {
		p := r.order[(r.next+i)%len(r.order)]
		if len(p.msgs) == 0 || now.Before(p.notBefore) {
			continue
		}
		if p.fails >= c.cfg.MaxAttempts {
			if err := r.park(ctx, p); err != nil {
				r.dbFailed(err)
				return
			}
			if len(p.msgs) == 0 {
				continue
			}
		}
		take := min(len(p.msgs), c.cfg.BatchSize-n)
		batch = append(batch, &slice{p: p, msgs: p.msgs[:take]})
		n += take
	}
	if len(r.order) > 0 {
		r.next = (r.next + 1) % len(r.order)
	}
	if n == 0 {
		return
	}
	t0 := time.Now()
	err := r.handle(ctx, batch)
	c.stats.inTx.Add(int64(time.Since(t0)))
	if err != nil {
		r.dbFailed(err)
		return
	}
	r.dbFails, r.dbWait = 0, time.Time{}
	// Commit the offsets of what is done, partition by partition.
	var done []*Message
	var commit []kafkago.Message
	for _, s := range batch {
		if s.done == 0 {
			continue
		}
		done = append(done, s.msgs[:s.done]...)
		commit = append(commit, s.msgs[s.done-1].Message)
	}
	if c.cfg.AfterCommit != nil && len(done) > 0 {
		c.cfg.AfterCommit(ctx, done)
	}
	if len(commit) > 0 {
		if err := r.commit(ctx, commit...); err != nil {
			c.stats.commitErrors.Add(1)
			c.cfg.Logger.Warn("inbox: offset commit failed; the messages will be delivered again and skipped as duplicates",
				"group", c.cfg.GroupID, "error", err)
		}
	}
	for _, s := range batch {
		s.p.msgs = s.p.msgs[s.done:]
		r.queued -= s.done
	}
}

// commitTimeout bounds an offset commit: a commit that cannot be made
// only means redeliveries, which the inbox skips.
const commitTimeout = 10 * time.Second

func (r *run) commit(ctx context.Context, ms ...kafkago.Message) error {
	ctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	defer func(t0 time.Time) { r.c.stats.inCommit.Add(int64(time.Since(t0))) }(time.Now())
	return r.reader.CommitMessages(ctx, ms...)
}

// dbFailed backs the whole consumer off after a failed transaction: the
// database (not a handler) failed, so no message loses an attempt.
func (r *run) dbFailed(err error) {
	r.c.stats.txFailures.Add(1)
	r.dbFails++
	d := backoff(r.c.cfg.MinBackoff, r.c.cfg.MaxBackoff, r.dbFails)
	r.dbWait = r.c.cfg.Now().Add(d)
	r.c.cfg.Logger.Warn("inbox: batch transaction failed; retrying", "group", r.c.cfg.GroupID,
		"failures", r.dbFails, "retry_in", d, "error", err)
}

// handle runs one batch in one transaction.
func (r *run) handle(ctx context.Context, batch []*slice) (err error) {
	c := r.c
	now := c.cfg.Now().UTC()
	tx := c.db.WithContext(ctx).Begin()
	if tx.Error != nil {
		return tx.Error
	}
	committed := false
	defer func() {
		if !committed {
			tx.Rollback()
			for _, s := range batch {
				s.done = 0
			}
		}
	}()
	pool := rawTx(tx.Statement.ConnPool) // the inbox's own statements are not prepared
	// Distinct ids: a message whose id came earlier in the batch is a
	// duplicate (a producer retry can put both in one batch).
	var ms []*Message
	first := map[string]bool{}
	for _, s := range batch {
		for _, m := range s.msgs {
			if !first[m.EventID] {
				first[m.EventID] = true
				ms = append(ms, m)
			}
		}
	}
	fresh, err := c.st.claim(ctx, pool, c.cfg.GroupID, ms, now)
	if err != nil {
		return fmt.Errorf("record %d messages in %s: %w", len(ms), c.st.table, err)
	}
	var handled, dups int64
	var retries int64
	sp := newSavepointPool(tx.Statement.ConnPool, c.st.pg)
	htx := tx.Session(&gorm.Session{NewDB: true, Context: ctx})
	htx.Statement.ConnPool = sp
	owner := map[string]*Message{} // the message that claimed each fresh id
	for _, s := range batch {
		for i, m := range s.msgs {
			if !fresh[m.EventID] || owner[m.EventID] != nil {
				dups++
				s.done = i + 1
				continue
			}
			owner[m.EventID] = m
			m.Attempt = 1
			if i == 0 {
				m.Attempt = s.p.fails + 1
			}
			herr := c.call(ctx, htx, m)
			if herr == nil {
				if err := sp.keep(ctx); err != nil {
					return fmt.Errorf("release savepoint: %w", err)
				}
				handled++
				s.done = i + 1
				if i == 0 {
					s.p.fails, s.p.lastErr, s.p.notBefore = 0, "", time.Time{}
				}
				continue
			}
			if uerr := sp.undo(ctx); uerr != nil {
				return fmt.Errorf("undo handler of %s: %w", m.EventID, uerr)
			}
			// Unrecord this message and the later ones of its partition:
			// they wait for it.
			var ids []string
			for _, w := range s.msgs[i:] {
				if owner[w.EventID] == w || (owner[w.EventID] == nil && fresh[w.EventID]) {
					ids = append(ids, w.EventID)
					delete(fresh, w.EventID)
					delete(owner, w.EventID)
				}
			}
			if err := c.st.unclaim(ctx, pool, c.cfg.GroupID, ids); err != nil {
				return fmt.Errorf("unrecord %d messages: %w", len(ids), err)
			}
			s.p.fails = m.Attempt
			s.p.lastErr = herr.Error()
			retries++
			if s.p.fails < c.cfg.MaxAttempts {
				d := backoff(c.cfg.MinBackoff, c.cfg.MaxBackoff, s.p.fails)
				s.p.notBefore = c.cfg.Now().Add(d)
				c.cfg.Logger.Warn("inbox: handler failed; will retry", "group", c.cfg.GroupID,
					"topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "event_id", m.EventID,
					"attempt", s.p.fails, "max_attempts", c.cfg.MaxAttempts, "retry_in", d, "error", herr)
			}
			break
		}
	}
	if err := tx.Commit().Error; err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	committed = true
	sp.runCommitted()
	c.stats.handled.Add(handled)
	c.stats.duplicates.Add(dups)
	c.stats.retries.Add(retries)
	c.stats.batches.Add(1)
	return nil
}

// call runs the handler, turning a panic into an error.
func (c *Consumer) call(ctx context.Context, tx *gorm.DB, m *Message) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("handler panicked: %v", v)
		}
	}()
	return c.handler(ctx, tx, m)
}

// park records p's head message as a dead letter, commits its offset and
// moves the partition on.
func (r *run) park(ctx context.Context, p *partition) error {
	c := r.c
	m := p.msgs[0]
	sqlDB, err := c.db.DB()
	if err != nil {
		return err
	}
	if err := c.st.park(ctx, sqlDB, c.cfg.GroupID, m, p.fails, p.lastErr, c.cfg.Now().UTC()); err != nil {
		return fmt.Errorf("park %s: %w", m.EventID, err)
	}
	c.stats.parked.Add(1)
	c.cfg.Logger.Error("inbox: message parked as a dead letter after repeated handler failures",
		"group", c.cfg.GroupID, "topic", m.Topic, "partition", m.Partition, "offset", m.Offset,
		"event_id", m.EventID, "attempts", p.fails, "error", p.lastErr)
	if c.cfg.AfterCommit != nil {
		c.cfg.AfterCommit(ctx, []*Message{m})
	}
	if err := r.commit(ctx, m.Message); err != nil {
		c.stats.commitErrors.Add(1)
		c.cfg.Logger.Warn("inbox: offset commit failed", "group", c.cfg.GroupID, "error", err)
	}
	p.msgs = p.msgs[1:]
	r.queued--
	p.fails, p.lastErr, p.notBefore = 0, "", time.Time{}
	return nil
}

// backoff is exponential with equal jitter: half fixed, half random.
func backoff(minD, maxD time.Duration, attempt int) time.Duration {
	d := minD
	for i := 1; i < attempt && d < maxD; i++ {
		d *= 2
	}
	d = min(d, maxD)
	half := d / 2
	return half + time.Duration(rand.Int64N(int64(half)+1))
}

// DeadLetters lists up to limit messages parked by this consumer's group,
// oldest first.
func (c *Consumer) DeadLetters(ctx context.Context, limit int) ([]DeadLetter, error) {
	if limit <= 0 {
		limit = 100
	}
	sqlDB, err := c.db.DB()
	if err != nil {
		return nil, err
	}
	out, err := c.st.dead(ctx, sqlDB, c.cfg.GroupID, limit)
	if err != nil {
		return nil, fmt.Errorf("inbox: dead letters: %w", err)
	}
	return out, nil
}

// Replay runs the handler again on parked messages, each in its own
// transaction that also marks it done. It stops at the first handler
// failure (the message stays parked) and returns how many it handled; ids
// that are not parked messages of this group are skipped.
func (c *Consumer) Replay(ctx context.Context, eventIDs ...string) (int, error) {
	if len(eventIDs) == 0 {
		return 0, nil
	}
	sqlDB, err := c.db.DB()
	if err != nil {
		return 0, err
	}
	var dead []DeadLetter
	for chunk := range slices.Chunk(eventIDs, 500) {
		d, err := c.st.dead(ctx, sqlDB, c.cfg.GroupID, len(chunk), chunk...)
		if err != nil {
			return 0, fmt.Errorf("inbox: replay: %w", err)
		}
		dead = append(dead, d...)
	}
	byID := make(map[string]*DeadLetter, len(dead))
	for i := range dead {
		byID[dead[i].EventID] = &dead[i]
	}
	n := 0
	for _, id := range eventIDs {
		dl := byID[id]
		if dl == nil {
			continue
		}
		m := &Message{EventID: dl.EventID, Attempt: dl.Attempts + 1, Consumer: c.cfg.GroupID, Message: kafkago.Message{
			Topic: dl.Topic, Partition: dl.Partition, Offset: dl.Offset, Key: dl.Key, Value: dl.Value}}
		for k, v := range dl.Headers {
			m.Headers = append(m.Headers, kafkago.Header{Key: k, Value: []byte(v)})
		}
		var sp *savepointPool
		err := c.db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
			ok, err := c.st.revive(ctx, rawTx(tx.Statement.ConnPool), c.cfg.GroupID, id, c.cfg.Now().UTC())
			if err != nil || !ok {
				return err
			}
			sp = newSavepointPool(tx.Statement.ConnPool, false)
			htx := tx.Session(&gorm.Session{NewDB: true, Context: ctx})
			htx.Statement.ConnPool = sp
			if err := c.call(ctx, htx, m); err != nil {
				return err
			}
			return sp.keep(ctx)
		})
		if err == nil && sp != nil {
			sp.runCommitted()
		}
		if err != nil {
			return n, fmt.Errorf("inbox: replay %s: %w", id, err)
		}
		n++
	}
	return n, nil
}

// Cleanup deletes the records of messages handled before before, limit
// rows per statement (default 1,000) so that no statement holds locks for
// long, until none is left or ctx ends; it returns how many it deleted.
// Keep records longer than a message can be redelivered (the topic's
// retention, or how far back offsets may be reset): a message whose record
// is gone is handled again. Parked messages are kept.
func (c *Consumer) Cleanup(ctx context.Context, before time.Time, limit int) (int64, error) {
	if limit <= 0 {
		limit = 1000
	}
	sqlDB, err := c.db.DB()
	if err != nil {
		return 0, err
	}
	var total int64
	for ctx.Err() == nil {
		n, err := c.st.cleanup(ctx, sqlDB, before.UTC(), limit)
		total += n
		if err != nil {
			return total, fmt.Errorf("inbox: cleanup: %w", err)
		}
		if n < int64(limit) {
			break
		}
	}
	return total, ctx.Err()
}
