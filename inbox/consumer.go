package inbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/internal/backoff"
)

// Consumer reads messages and hands them to its handler once per event.
type Consumer struct {
	db      *gorm.DB
	handler Handler
	cfg     Config
	st      *store
	seqs    *seqMarks // nil with Config.IgnoreSequence

	running   atomic.Bool
	seqWarned atomic.Bool // a malformed x-sequence was logged
	stats     struct {
		handled, duplicates, stale, retries, parked, batches, commitErrors atomic.Int64
		txFailures, fetchErrors                                            atomic.Int64
		inTx, inCommit                                                     atomic.Int64 // nanoseconds
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
	c := &Consumer{db: db, handler: handler, cfg: cfg, st: st}
	if !cfg.IgnoreSequence {
		c.seqs = newSeqMarks(cfg.SequenceKeys)
	}
	return c, nil
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
	// Duplicates skipped: recorded in the inbox before (redeliveries),
	// Stale included.
	Duplicates int64
	// Stale: the part of Duplicates recognised by their x-sequence
	// (HeaderSequence), skipped without a database round trip.
	Stale int64
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
		Stale:          c.stats.stale.Load(),
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
				d := backoff.Exponential(c.cfg.MinBackoff, c.cfg.MaxBackoff, fails, nil)
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
	return int((dialects.HashKey([]byte(topic)) + uint32(partition)) % uint32(n))
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
