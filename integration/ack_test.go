package integration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/ack"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/inbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
	"github.com/go-outbox/outbox/scheduler"
)

// Stock asks its consumers to acknowledge every event. The topics are
// renamed per test (db.Table is not needed: each test has its own
// database, and the ack tests use their own broker).
type Stock struct {
	gormoutbox.Source `outbox:"topic:stock;ack:stock-acks"`
	ID                uint `gorm:"primaryKey"`
	SKU               string
	Quantity          int
}

// ackRecorder is an AckHook that keeps every result.
type ackRecorder struct {
	gormoutbox.HookBase
	mu  sync.Mutex
	got []gormoutbox.AckResult
}

func (h *ackRecorder) OnAck(_ context.Context, r gormoutbox.AckResult) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.got = append(h.got, r)
}

func (h *ackRecorder) count(o gormoutbox.AckOutcome) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for _, r := range h.got {
		if r.Outcome == o {
			n++
		}
	}
	return n
}

// ackFlow wires one database as both services: Stock rows captured, a
// relay loop, the consuming service's inbox (handler h, answering through
// the same outbox) and the producing service's tracker.
type ackFlow struct {
	db      *gorm.DB
	relay   *gormoutbox.Relay
	hook    *ackRecorder
	orders  *inbox.Consumer
	tracker *inbox.Consumer
}

func newAckFlow(t *testing.T, d testenv.Dialect, maxAttempts int, h inbox.Handler) *ackFlow {
	t.Helper()
	db, _ := setup(t, d, nil, gormoutbox.Config{}, &Stock{})
	brokers, _ := kafkaenv.Kafka(t, 2)
	for _, topic := range []string{"stock", "stock-acks"} {
		kafkaenv.CreateTopic(t, brokers, topic, 2)
	}
	f := &ackFlow{db: db, hook: &ackRecorder{}}
	f.relay = newRelay(t, db, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{})
	quiet := slog.New(slog.DiscardHandler)
	cfg := func(group, topic string) inbox.Config {
		return inbox.Config{Brokers: brokers, GroupID: group + "-" + kafkaenv.TopicName("g"), Topics: []string{topic},
			MaxWait: 50 * time.Millisecond, MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: quiet}
	}
	// On a shared cluster the parallel subtests share the model's topics:
	// the consuming side answers only the events of its own database.
	inner := h
	h = func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
		var n int64
		if err := tx.Table("outbox").Where("event_id = ?", m.Header(gormoutbox.HeaderEventID)).Count(&n).Error; err != nil || n == 0 {
			return err
		}
		return inner(ctx, tx, m)
	}
	var err error
	ocfg, pcfg := cfg("orders", "stock"), cfg("products", "stock-acks")
	// The topics' names are the model's: on a shared cluster they may hold
	// earlier runs' messages, which these groups skip.
	kafkaenv.SeekGroupToEnd(t, brokers, ocfg.GroupID, "stock")
	kafkaenv.SeekGroupToEnd(t, brokers, pcfg.GroupID, "stock-acks")
	if f.orders, err = inbox.New(db, h, ocfg); err != nil {
		t.Fatal(err)
	}
	tr := ack.NewTracker(ack.Config{MaxAttempts: maxAttempts, Hooks: []gormoutbox.AckHook{f.hook}, Logger: quiet})
	if f.tracker, err = inbox.New(db, tr.Handle, pcfg); err != nil {
		t.Fatal(err)
	}
	if err := f.orders.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			if _, err := f.relay.Drain(ctx); err != nil && ctx.Err() == nil {
				t.Errorf("Drain: %v", err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	}()
	start(t, f.orders)
	start(t, f.tracker)
	return f
}

func (f *ackFlow) states(t *testing.T) gormoutbox.Stats {
	t.Helper()
	st, err := f.relay.CountStates(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return st["stock"]
}

// SUCCESS answers move every row to processed; the answers themselves
// (which ask for none) are published rows waiting for nothing.
func TestAckSuccessMarksProcessed(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		f := newAckFlow(t, d, 3, func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			return ack.Reply(tx, m, gormoutbox.AckSuccess, "")
		})
		for i := 0; i < 40; i++ {
			if err := f.db.Create(&Stock{SKU: fmt.Sprint("s", i%8), Quantity: i}).Error; err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 60*time.Second, "40 processed rows", func() bool { return f.states(t).Processed == 40 })
		st := f.states(t)
		if st.Pending != 0 || st.Awaiting != 0 || st.Failed != 0 || st.Dead != 0 || st.Published != 0 {
			t.Errorf("stock rows %+v, want all 40 processed", st)
		}
		all, _ := f.relay.CountStates(context.Background())
		if a := all["stock-acks"]; a.Published != 40 || a.Awaiting != 0 {
			t.Errorf("answers %+v: want 40 published rows waiting for nothing", a)
		}
		// The hooks run after the answers' transaction commits: the rows
		// can show processed a moment before the last batch's hooks ran.
		waitFor(t, 10*time.Second, "OnAck for the 40 answers", func() bool { return f.hook.count(gormoutbox.AckProcessed) >= 40 })
		time.Sleep(100 * time.Millisecond) // a hook firing twice would show now
		if n := f.hook.count(gormoutbox.AckProcessed); n != 40 {
			t.Errorf("OnAck processed %d times, want 40", n)
		}
		// Processed rows are cleaned up; published ones waiting for an
		// answer are not (checked below with a row answered by nobody).
		if n, err := f.relay.Cleanup(context.Background(), -time.Hour); err != nil || n != 80 {
			t.Errorf("Cleanup: %d, %v; want 80 (40 processed events, 40 answers)", n, err)
		}
	})
}

// FAILED answers re-send the event with the next process attempt until the
// limit, then mark it failed and fire the hook once.
func TestAckFailedResentUntilLimit(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		var mu sync.Mutex
		seen := map[string][]string{} // event id -> process-attempt headers seen
		f := newAckFlow(t, d, 3, func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			mu.Lock()
			id := m.Header(gormoutbox.HeaderEventID)
			seen[id] = append(seen[id], m.Header(gormoutbox.HeaderProcessAttempt))
			mu.Unlock()
			return ack.Reply(tx, m, gormoutbox.AckFailed, "no such warehouse")
		})
		for i := 0; i < 5; i++ {
			if err := f.db.Create(&Stock{SKU: fmt.Sprint("f", i), Quantity: i}).Error; err != nil {
				t.Fatal(err)
			}
		}
		waitFor(t, 60*time.Second, "5 failed rows", func() bool { return f.states(t).Failed == 5 })
		time.Sleep(300 * time.Millisecond) // a hook firing twice would show now
		if st := f.states(t); st.Pending != 0 || st.Awaiting != 0 || st.Processed != 0 {
			t.Errorf("stock rows %+v, want all 5 failed", st)
		}
		mu.Lock()
		for id, attempts := range seen {
			if fmt.Sprint(attempts) != "[1 2 3]" {
				t.Errorf("event %s seen with process attempts %v, want [1 2 3]", id, attempts)
			}
		}
		mu.Unlock()
		if len(seen) != 5 {
			t.Errorf("%d events seen, want 5", len(seen))
		}
		if g, r := f.hook.count(gormoutbox.AckGaveUp), f.hook.count(gormoutbox.AckResent); g != 5 || r != 10 {
			t.Errorf("OnAck: %d gave up, %d resent; want 5 and 10", g, r)
		}
		var rows []struct {
			ProcessAttempts int
			LastError       string
			Attempts        int
		}
		if err := f.db.Table("outbox").Where("topic = ?", "stock").Find(&rows).Error; err != nil {
			t.Fatal(err)
		}
		for _, r := range rows {
			if r.ProcessAttempts != 3 || r.LastError != "no such warehouse" || r.Attempts != 0 {
				t.Errorf("failed row %+v: want 3 process attempts, the reason, no delivery failures", r)
			}
		}
		for _, h := range f.hook.got {
			if h.Outcome == gormoutbox.AckGaveUp && (h.Ack.Reason != "no such warehouse" || h.EventType != "StockCreated" || h.Topic != "stock" || h.Ack.Consumer == "") {
				t.Errorf("gave-up result %+v: want the reason, type, topic and consumer", h)
			}
		}
	})
}

// Acknowledge on its own: stale, duplicate and unknown answers are
// ignored or refused; rows waiting for an answer survive cleanup and
// DeleteOnPublish.
func TestAcknowledgeRules(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Stock{})
		brokers, _ := kafkaenv.Kafka(t, 1)
		kafkaenv.CreateTopic(t, brokers, "stock", 1)
		kafkaenv.CreateTopic(t, brokers, "plain", 1)
		if err := db.Create(&Stock{SKU: "a", Quantity: 1}).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Transaction(func(tx *gorm.DB) error {
			return gormoutbox.Publish(tx, gormoutbox.Event{Topic: "plain", Type: "Plain", Payload: 1})
		}); err != nil {
			t.Fatal(err)
		}
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{DeleteOnPublish: true})
		drainUntilEmpty(t, r, 30*time.Second)
		// The stock row waits for its answer: kept; the plain one deleted.
		var ids []string
		db.Table("outbox").Order("id").Pluck("event_id", &ids)
		if len(ids) != 1 {
			t.Fatalf("after DeleteOnPublish %d rows left, want the 1 waiting for an answer", len(ids))
		}
		if n, err := r.Cleanup(context.Background(), -time.Hour); err != nil || n != 0 {
			t.Errorf("Cleanup of a row waiting for an answer: %d, %v; want 0", n, err)
		}
		id := ids[0]
		apply := func(a gormoutbox.Ack) (gormoutbox.AckResult, error) {
			var res gormoutbox.AckResult
			err := db.Transaction(func(tx *gorm.DB) error {
				var err error
				res, err = gormoutbox.Acknowledge(tx, a, 2)
				return err
			})
			return res, err
		}
		if res, err := apply(gormoutbox.Ack{EventID: id, Status: gormoutbox.AckSuccess, Attempt: 2}); err != nil || res.Outcome != gormoutbox.AckIgnored {
			t.Errorf("answer to a later attempt: %+v, %v; want ignored", res, err)
		}
		if res, err := apply(gormoutbox.Ack{EventID: id, Status: gormoutbox.AckFailed, Attempt: 1}); err != nil || res.Outcome != gormoutbox.AckResent || res.Attempts != 2 {
			t.Errorf("FAILED to attempt 1 of 2: %+v, %v; want resent as attempt 2", res, err)
		}
		if res, err := apply(gormoutbox.Ack{EventID: id, Status: gormoutbox.AckFailed, Attempt: 1}); err != nil || res.Outcome != gormoutbox.AckIgnored {
			t.Errorf("a second FAILED to attempt 1: %+v, %v; want ignored", res, err)
		}
		drainUntilEmpty(t, r, 30*time.Second)
		// Both sends of the event (on a shared cluster, "stock" may hold
		// other runs' messages: keep this event's).
		got := kafkaenv.ReadTopic(t, brokers, "stock", 2, 30*time.Second, func(rec kafkaenv.Record) bool {
			return rec.Headers[gormoutbox.HeaderEventID] == id
		})
		if got[1].Headers[gormoutbox.HeaderProcessAttempt] != "2" || got[1].Headers[gormoutbox.HeaderEventID] != id ||
			got[0].Headers[gormoutbox.HeaderProcessAttempt] != "1" || got[1].Headers[gormoutbox.HeaderAckTopic] != "stock-acks" {
			t.Errorf("re-sent message headers %v (first %v): want the same event id with process-attempt 2", got[1].Headers, got[0].Headers)
		}
		if res, err := apply(gormoutbox.Ack{EventID: id, Status: gormoutbox.AckSuccess, Attempt: 2}); err != nil || res.Outcome != gormoutbox.AckProcessed {
			t.Errorf("SUCCESS to attempt 2: %+v, %v; want processed", res, err)
		}
		if res, err := apply(gormoutbox.Ack{EventID: id, Status: gormoutbox.AckFailed, Attempt: 2}); err != nil || res.Outcome != gormoutbox.AckIgnored {
			t.Errorf("FAILED after processed: %+v, %v; want ignored", res, err)
		}
		if _, err := apply(gormoutbox.Ack{EventID: "0190d8d8-0000-7000-8000-000000000000", Status: gormoutbox.AckSuccess, Attempt: 1}); !errors.Is(err, gormoutbox.ErrUnknownEvent) {
			t.Errorf("unknown event: %v, want ErrUnknownEvent", err)
		}
		for _, bad := range []gormoutbox.Ack{{EventID: "x", Status: gormoutbox.AckSuccess, Attempt: 1},
			{EventID: id, Status: "MAYBE", Attempt: 1}, {EventID: id, Status: gormoutbox.AckSuccess}} {
			if _, err := apply(bad); !errors.Is(err, gormoutbox.ErrInvalidAck) {
				t.Errorf("Acknowledge(%+v): %v, want ErrInvalidAck", bad, err)
			}
		}
		if _, err := gormoutbox.Acknowledge(db, gormoutbox.Ack{EventID: id, Status: gormoutbox.AckSuccess, Attempt: 2}, 2); !errors.Is(err, gormoutbox.ErrNoTransaction) {
			t.Errorf("Acknowledge outside a transaction: %v, want ErrNoTransaction", err)
		}
		if n, err := r.Cleanup(context.Background(), -time.Hour); err != nil || n != 1 {
			t.Errorf("Cleanup of the processed row: %d, %v; want 1", n, err)
		}
	})
}

// answeringPublisher publishes, then applies a FAILED answer to the first
// message before returning: the answer comes back between the write to
// Kafka and the relay's mark.
type answeringPublisher struct {
	gormoutbox.Publisher
	db   *gorm.DB
	done chan error
	once sync.Once
}

func (p *answeringPublisher) Publish(ctx context.Context, msgs []gormoutbox.Message) error {
	if err := p.Publisher.Publish(ctx, msgs); err != nil {
		return err
	}
	p.once.Do(func() {
		answered := make(chan error, 1)
		go func() { // on PostgreSQL it waits for the claim's row lock: not before the mark
			answered <- p.db.Transaction(func(tx *gorm.DB) error {
				res, err := gormoutbox.Acknowledge(tx, gormoutbox.Ack{EventID: msgs[0].EventID, Status: gormoutbox.AckFailed, Attempt: 1, Reason: "fast"}, 3)
				if err == nil && res.Outcome != gormoutbox.AckResent {
					err = fmt.Errorf("outcome %v (%s), want resent", res.Outcome, res.Why)
				}
				return err
			})
		}()
		select {
		case err := <-answered: // MySQL: applied before the mark
			p.done <- err
		case <-time.After(500 * time.Millisecond): // PostgreSQL: blocked until the claim ends
			go func() { p.done <- <-answered }()
		}
	})
	return nil
}

// A FAILED answer that arrives before the relay has marked the batch
// published still re-sends the event: the mark does not overwrite it.
func TestAckFailedBeforeMark(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, _ := kafkaenv.Kafka(t, 1)
		topic := kafkaenv.TopicName("fast-answer")
		kafkaenv.CreateTopic(t, brokers, topic, 1)
		id := testEventID()
		if err := db.Transaction(func(tx *gorm.DB) error {
			return gormoutbox.Publish(tx, gormoutbox.Event{ID: id, Topic: topic, Key: "k", Type: "T", Payload: 1, AckTopic: topic + "-acks"})
		}); err != nil {
			t.Fatal(err)
		}
		pub := &answeringPublisher{Publisher: newPublisher(t, brokers, kafka.Config{}), db: db, done: make(chan error, 1)}
		r := newRelay(t, db, pub, gormoutbox.RelayConfig{})
		if _, err := r.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		if err := <-pub.done; err != nil {
			t.Fatalf("Acknowledge: %v", err)
		}
		// The re-send goes out (in this Drain on MySQL, where the answer
		// was applied before the mark; in the next on PostgreSQL).
		drainUntilEmpty(t, r, 30*time.Second)
		var row struct {
			ProcessAttempts int
			PublishedAt     *time.Time
		}
		if err := db.Table("outbox").Where("event_id = ?", id).Take(&row).Error; err != nil {
			t.Fatal(err)
		}
		if row.ProcessAttempts != 2 || row.PublishedAt == nil {
			t.Errorf("row: process attempt %d, published %v; want attempt 2, published", row.ProcessAttempts, row.PublishedAt)
		}
		got := kafkaenv.ReadTopic(t, brokers, topic, 2, 30*time.Second, nil)
		if got[1].Headers[gormoutbox.HeaderProcessAttempt] != "2" {
			t.Errorf("second send has process-attempt %q, want 2", got[1].Headers[gormoutbox.HeaderProcessAttempt])
		}
	})
}

// Events nobody answers are sent again after the timeout, and failed (the
// hooks notified once) after the last attempt.
func TestAckTimeout(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, _ := kafkaenv.Kafka(t, 1)
		topic := kafkaenv.TopicName("unanswered")
		kafkaenv.CreateTopic(t, brokers, topic, 1)
		ids := map[string]bool{}
		if err := db.Transaction(func(tx *gorm.DB) error {
			for i := 0; i < 3; i++ {
				id := testEventID()
				ids[id] = true
				if err := gormoutbox.Publish(tx, gormoutbox.Event{ID: id, Topic: topic, Key: fmt.Sprint(i), Type: "T", Payload: i, AckTopic: topic + "-acks"}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		hook := &ackRecorder{}
		var clock atomic.Int64 // offset from the wall clock
		tr := ack.NewTracker(ack.Config{MaxAttempts: 2, Timeout: time.Minute, Hooks: []gormoutbox.AckHook{hook},
			Logger: slog.New(slog.DiscardHandler), Now: func() time.Time { return time.Now().Add(time.Duration(clock.Load())) }})
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{})
		drainUntilEmpty(t, r, 30*time.Second)
		if n, err := tr.Expire(ctx, db); err != nil || n != 0 {
			t.Fatalf("Expire before the timeout: %d, %v; want nothing", n, err)
		}
		clock.Store(int64(2 * time.Minute))
		if n, err := tr.Expire(ctx, db); err != nil || n != 3 {
			t.Fatalf("Expire after the timeout: %d, %v; want 3 re-sent", n, err)
		}
		drainUntilEmpty(t, r, 30*time.Second)
		clock.Store(0)
		if n, err := tr.Expire(ctx, db); err != nil || n != 0 {
			t.Fatalf("Expire right after the re-send: %d, %v; want nothing", n, err)
		}
		clock.Store(int64(2 * time.Minute))
		if n, err := tr.Expire(ctx, db); err != nil || n != 3 {
			t.Fatalf("Expire of the last attempts: %d, %v; want 3 failed", n, err)
		}
		if n, err := tr.Expire(ctx, db); err != nil || n != 0 {
			t.Fatalf("Expire with nothing left: %d, %v", n, err)
		}
		if err := scheduler.AckTimeoutJob(tr, db)(ctx); err != nil {
			t.Fatalf("AckTimeoutJob: %v", err)
		}
		st, err := r.TopicStats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if s := st[topic]; s.Failed != 3 || s.Awaiting != 0 || s.Pending != 0 {
			t.Errorf("stats %+v: want 3 failed", s)
		}
		if g, rs := hook.count(gormoutbox.AckGaveUp), hook.count(gormoutbox.AckResent); g != 3 || rs != 3 {
			t.Errorf("hooks: %d gave up, %d resent; want 3 and 3", g, rs)
		}
		recs := kafkaenv.ReadTopic(t, brokers, topic, 6, 30*time.Second, nil)
		sends := map[string]int{}
		for _, rec := range recs {
			sends[rec.Headers[gormoutbox.HeaderEventID]+"/"+rec.Headers[gormoutbox.HeaderProcessAttempt]]++
		}
		for id := range ids {
			if sends[id+"/1"] != 1 || sends[id+"/2"] != 1 {
				t.Errorf("event %s sent %v", id, sends)
			}
		}
		for _, h := range hook.got {
			if h.Outcome == gormoutbox.AckGaveUp && h.Ack.Reason != "no answer within 1m0s" {
				t.Errorf("gave up with reason %q", h.Ack.Reason)
			}
		}
	})
}
