package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
)

// funcPublisher is a Publisher made of a function.
type funcPublisher func(ctx context.Context, msgs []gormoutbox.Message) error

func (f funcPublisher) Publish(ctx context.Context, msgs []gormoutbox.Message) error {
	return f(ctx, msgs)
}

// An outage much longer than MaxAttempts × MaxBackoff dead-letters nothing:
// the broker's errors count no attempt, the relay backs off as a whole,
// and once the broker is back every event arrives, in order per key.
func TestRelayLongOutageDeadLettersNothing(t *testing.T) {
	const keys, perKey = 8, 20
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		topic := kafkaenv.TopicName("outage")
		k := newRestartableKafka(t, topic, 4)
		brokers := k.Brokers()
		ids := writeSeqEvents(t, db, topic, keys, perKey, 1, 20)

		cfg := fastRetry
		cfg.MaxAttempts = 3 // 3 × 80ms: the outage below is ~12 times longer
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{MaxAttempts: 1, WriteTimeout: 500 * time.Millisecond}), cfg)
		k.Stop()
		var total gormoutbox.DrainResult
		for end := time.Now().Add(3 * time.Second); time.Now().Before(end); {
			res, err := r.Drain(ctx)
			if err != nil {
				t.Fatal(err)
			}
			total.Retried += res.Retried
			total.Dead += res.Dead
			time.Sleep(10 * time.Millisecond)
		}
		if total.Retried == 0 || total.Dead != 0 {
			t.Fatalf("drains during the outage: %+v, want failures and no dead letter", total)
		}
		if n := countRows(t, db, "attempts > 0 OR dead_at IS NOT NULL"); n != 0 {
			t.Fatalf("%d rows count attempts or are dead after the outage, want 0", n)
		}
		k.Start()
		res := drainUntilEmpty(t, r, time.Minute)
		if st, _ := r.Stats(ctx); st.Dead != 0 || res.Dead != 0 {
			t.Fatalf("after the outage: %+v, stats %+v; want 0 dead", res, st)
		}
		recs := kafkaenv.ReadTopic(t, brokers, topic, keys*perKey, 30*time.Second, runIDs(ids))
		dups := checkSeqOrder(t, recs, keys, perKey)
		t.Logf("%s: 3s outage, %d failed publications, 0 dead, %d events in order, %d duplicates",
			d.Name, total.Retried, keys*perKey, dups)
	})
}

// A topic the broker does not know is an outage for UnknownTopicGrace,
// then a failure of the message, dead-lettered after MaxAttempts.
func TestRelayUnknownTopicGrace(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		writeSeqEvents(t, db, "nosuchtopic", 1, 2, 1, 2)
		pub := funcPublisher(func(context.Context, []gormoutbox.Message) error {
			return fmt.Errorf("%w: topic nosuchtopic", gormoutbox.ErrUnknownTopic)
		})
		cfg := fastRetry
		cfg.MaxAttempts = 2
		cfg.UnknownTopicGrace = 300 * time.Millisecond
		r := newRelay(t, db, pub, cfg)
		if _, err := r.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		if n := countRows(t, db, "attempts > 0"); n != 0 {
			t.Fatalf("%d rows count an attempt within the grace, want 0", n)
		}
		time.Sleep(350 * time.Millisecond)
		dead := 0
		for end := time.Now().Add(5 * time.Second); dead < 2 && time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			res, err := r.Drain(ctx)
			if err != nil {
				t.Fatal(err)
			}
			dead += res.Dead
		}
		if dead != 2 {
			t.Fatalf("%d rows dead-lettered after the grace, want 2", dead)
		}
	})
}

// Two PostgreSQL relays through a broker outage: the push-back of a failed
// key's later rows never waits on the other relay's rows, so they cannot
// deadlock; after the outage every event arrives in order.
func TestRelayTwoPostgresRelaysOutageNoDeadlock(t *testing.T) {
	const keys, perKey = 40, 25
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		if d.Name != "postgres" {
			t.Skip("PostgreSQL relays share rows (SKIP LOCKED); MySQL relays split shards")
		}
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		topic := kafkaenv.TopicName("deadlock")
		k := newRestartableKafka(t, topic, 4)
		brokers := k.Brokers()
		ids := writeSeqEvents(t, db, topic, keys, perKey, 4, 10)
		// Small claims, jittered backoffs (rows fall due in scattered
		// order, so each relay holds rows of keys the other also holds)
		// and publications that take a while (claims overlap).
		cfg := fastRetry
		cfg.BatchSize = 7
		cfg.MinBackoff, cfg.MaxBackoff = 2*time.Millisecond, 40*time.Millisecond
		var relays []*gormoutbox.Relay
		for i := 0; i < 2; i++ {
			kp := newPublisher(t, brokers, kafka.Config{MaxAttempts: 1, WriteTimeout: 300 * time.Millisecond})
			slow := funcPublisher(func(ctx context.Context, msgs []gormoutbox.Message) error {
				time.Sleep(time.Duration(len(msgs)) * 2 * time.Millisecond)
				return kp.Publish(ctx, msgs)
			})
			relays = append(relays, newRelay(t, db, slow, cfg))
		}
		k.Stop()
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			errs     []error
			failures atomic.Int64
		)
		stop := time.Now().Add(3 * time.Second)
		for _, r := range relays {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(stop) {
					res, err := r.Drain(context.Background())
					failures.Add(int64(res.Retried))
					if err != nil {
						mu.Lock()
						errs = append(errs, err)
						mu.Unlock()
					}
				}
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if strings.Contains(err.Error(), "deadlock") {
				t.Fatalf("relay error during the outage: %v", err)
			}
			t.Logf("relay error during the outage (not a deadlock): %v", err)
		}
		if failures.Load() == 0 {
			t.Fatal("no failed publication during the outage")
		}
		k.Start()
		drainUntilEmpty(t, relays[0], time.Minute)
		recs := kafkaenv.ReadTopic(t, brokers, topic, keys*perKey, 30*time.Second, runIDs(ids))
		dups := checkSeqOrder(t, recs, keys, perKey)
		t.Logf("two relays, 3s outage: %d failed publications, no deadlock, %d events in order, %d duplicates",
			failures.Load(), keys*perKey, dups)
	})
}

// A Publish call gets RelayConfig.PublishTimeout as its deadline; one that
// runs out of it (the broker hangs) is an outage: the claim is released,
// no attempt counted.
func TestRelayPublishDeadline(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		writeSeqEvents(t, db, "hang", 2, 3, 1, 6)
		pub := funcPublisher(func(ctx context.Context, _ []gormoutbox.Message) error {
			if _, ok := ctx.Deadline(); !ok {
				return errors.New("Publish called without a deadline")
			}
			<-ctx.Done()
			return fmt.Errorf("%w: %w", gormoutbox.ErrBrokerUnavailable, ctx.Err())
		})
		cfg := fastRetry
		cfg.PublishTimeout = 200 * time.Millisecond
		r := newRelay(t, db, pub, cfg)
		start := time.Now()
		res, err := r.Drain(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took > 2*time.Second || res.Retried == 0 {
			t.Fatalf("drain with a hung broker took %v: %+v; want about the 200ms deadline and retries", took, res)
		}
		if n := countRows(t, db, "published_at IS NULL AND attempts = 0 AND last_error LIKE '%deadline%'"); n != 6 {
			t.Fatalf("%d rows pending with the deadline's error and no attempt, want 6", n)
		}
	})
}

// A Publisher that ignores its deadline cannot hold a PostgreSQL claim's
// row locks for ever: the claim transaction's own timeout (twice
// PublishTimeout) ends it on the server, and the rows are free again.
func TestRelayPostgresClaimTimeout(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		if d.Name != "postgres" {
			t.Skip("the claim is a transaction held open while publishing on PostgreSQL only")
		}
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		writeSeqEvents(t, db, "stuck", 1, 3, 1, 3)
		entered := make(chan struct{}, 1)
		pub := funcPublisher(func(context.Context, []gormoutbox.Message) error {
			entered <- struct{}{}
			time.Sleep(2 * time.Second) // ignores its context
			return nil
		})
		cfg := fastRetry
		cfg.Workers = 1
		cfg.PublishTimeout = 200 * time.Millisecond
		r := newRelay(t, db, pub, cfg)
		done := make(chan error, 1)
		go func() { _, err := r.Drain(context.Background()); done <- err }()
		<-entered
		start := time.Now()
		sqlDB, _ := db.DB()
		for {
			tx, err := sqlDB.Begin()
			if err != nil {
				t.Fatal(err)
			}
			var n int
			err = tx.QueryRow(`SELECT count(*) FROM (SELECT id FROM outbox FOR UPDATE NOWAIT) s`).Scan(&n)
			_ = tx.Rollback()
			if err == nil {
				break
			}
			if time.Since(start) > 1500*time.Millisecond {
				t.Fatalf("the claim still holds its rows %v into a hung Publish: %v", time.Since(start), err)
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("rows free %v into a hung Publish (claim timeout 400ms)", time.Since(start))
		if err := <-done; err == nil {
			t.Errorf("Drain marked a batch whose claim the server ended; want an error")
		}
		if n := countRows(t, db, "published_at IS NULL"); n != 3 {
			t.Errorf("%d rows pending after the claim was ended, want 3 (published again later)", n)
		}
	})
}

// A dead row blocks its key: the later rows stay pending, counted as
// blocked, while other keys flow; Replay of the dead row releases the
// key, in order. With SkipDeadKeys the later rows go past it.
func TestRelayDeadRowBlocksKey(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		for _, skip := range []bool{false, true} {
			ctx := context.Background()
			db, _ := setup(t, d, nil, gormoutbox.Config{})
			brokers, _ := kafkaenv.Kafka(t, 1)
			topic := kafkaenv.TopicName("blocked")
			kafkaenv.CreateTopic(t, brokers, topic, 1)
			kp := newPublisher(t, brokers, kafka.Config{})
			var poison atomic.Bool
			poison.Store(true)
			// The first event of key k is refused (a message error) until
			// poison is cleared.
			pub := funcPublisher(func(ctx context.Context, msgs []gormoutbox.Message) error {
				errs := make(gormoutbox.PublishErrors, len(msgs))
				var send []gormoutbox.Message
				failed := false
				for i, m := range msgs {
					switch {
					case failed && string(m.Key) == "k":
						errs[i] = gormoutbox.ErrHeldBack
					case poison.Load() && string(m.Key) == "k" && strings.Contains(string(m.Value), `"seq":0`):
						errs[i], failed = errors.New("invalid record"), true
					default:
						send = append(send, m)
					}
				}
				if err := kp.Publish(ctx, send); err != nil {
					return err
				}
				if len(send) == len(msgs) {
					return nil
				}
				return errs
			})
			cfg := fastRetry
			cfg.MaxAttempts, cfg.SkipDeadKeys = 2, skip
			r := newRelay(t, db, pub, cfg)
			write := func(key string, seq int) {
				if err := db.Transaction(func(tx *gorm.DB) error {
					return gormoutbox.Publish(tx, gormoutbox.Event{Topic: topic, Key: key, Type: "T",
						Payload: fmt.Sprintf(`{"key":%q,"seq":%d}`, key, seq)})
				}); err != nil {
					t.Fatal(err)
				}
			}
			for i := 0; i < 3; i++ {
				write("k", i)
				write("j", i)
			}
			for end := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
				if _, err := r.Drain(ctx); err != nil {
					t.Fatal(err)
				}
				st, err := r.Stats(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if st.Dead == 1 && (skip && st.Pending == 0 || !skip && st.Pending == 2 && st.Blocked == 2) {
					break
				}
				if time.Now().After(end) {
					t.Fatalf("skip=%v: stats %+v after 10s; want 1 dead and the 2 later rows of k blocked (none with SkipDeadKeys)", skip, st)
				}
			}
			// Longer than the backoff: blocked rows stay blocked.
			for end := time.Now().Add(400 * time.Millisecond); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
				if _, err := r.Drain(ctx); err != nil {
					t.Fatal(err)
				}
			}
			if n := countRows(t, db, "published_at IS NOT NULL"); !skip && n != 3 || skip && n != 5 {
				t.Fatalf("skip=%v: %d rows published", skip, n)
			}
			dead, err := r.DeadLetters(ctx, gormoutbox.DeadLetterQuery{})
			if err != nil || len(dead) != 1 {
				t.Fatalf("DeadLetters: %v, %v", dead, err)
			}
			poison.Store(false)
			if _, err := r.Replay(ctx, dead[0].ID); err != nil {
				t.Fatal(err)
			}
			drainUntilEmpty(t, r, 30*time.Second)
			var ks []int
			for _, rec := range kafkaenv.ReadTopic(t, brokers, topic, 6, 20*time.Second, nil) {
				var e seqEvent
				if err := json.Unmarshal(rec.Value, &e); err != nil {
					t.Fatal(err)
				}
				if e.Key == "k" {
					ks = append(ks, e.Seq)
				}
			}
			want := []int{0, 1, 2}
			if skip {
				want = []int{1, 2, 0} // the replayed row comes last
			}
			if !slices.Equal(ks, want) {
				t.Fatalf("skip=%v: key k arrived as %v, want %v", skip, ks, want)
			}
		}
	})
}

// However long the outage, the relay tries the broker at least every
// OutageMaxBackoff (here 200 ms, with MaxBackoff at its 5 minutes), so it
// finds it back within about that long and drains.
func TestRelayOutageMaxBackoff(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		writeSeqEvents(t, db, "outage-cap", 4, 5, 1, 5)
		var down atomic.Bool
		down.Store(true)
		var published atomic.Int64
		pub := funcPublisher(func(_ context.Context, msgs []gormoutbox.Message) error {
			if down.Load() {
				return fmt.Errorf("%w: the test's broker is down", gormoutbox.ErrBrokerUnavailable)
			}
			published.Add(int64(len(msgs)))
			return nil
		})
		r := newRelay(t, db, pub, gormoutbox.RelayConfig{MinBackoff: 100 * time.Millisecond,
			OutageMaxBackoff: 200 * time.Millisecond, LockWait: -1})
		drain := func() {
			if _, err := r.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			time.Sleep(10 * time.Millisecond)
		}
		// 6 s down: uncapped, the backoff would have grown past 3 s.
		for end := time.Now().Add(6 * time.Second); time.Now().Before(end); {
			drain()
		}
		down.Store(false)
		back := time.Now()
		for published.Load() < 20 {
			if time.Since(back) > 2*time.Second {
				t.Fatalf("%d of 20 events published %v after the broker came back; want all within about OutageMaxBackoff",
					published.Load(), time.Since(back))
			}
			drain()
		}
		t.Logf("%s: drained %v after the broker came back", d.Name, time.Since(back).Round(time.Millisecond))
	})
}
