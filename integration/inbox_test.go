package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	mysqldriver "gorm.io/driver/mysql"
	pgdriver "gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/inbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/eventid"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
	"github.com/go-outbox/outbox/scheduler"
)

// applied is what the test handlers write: one row per handler run that
// committed, in commit order (ID).
type applied struct {
	ID      uint `gorm:"primaryKey"`
	EventID string
	K       string `gorm:"size:32"`
	Seq     int
}

// inboxMsg is a produced test message.
type inboxMsg struct {
	EventID string
	Key     string
	Seq     int
	// Source is the x-sequence-source sent with Seq (withSeq), "a1" when
	// empty.
	Source string
}

// produceInbox writes n messages over keys keys (seq counts per key) with
// event-id headers, and returns them in the order written.
func produceInbox(t *testing.T, brokers []string, topic string, n, keys int) []inboxMsg {
	t.Helper()
	var ids eventid.Generator
	seq := map[string]int{}
	var out []inboxMsg
	var kms []kafkago.Message
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("k%03d", i%keys)
		seq[k]++
		m := inboxMsg{EventID: ids.New(), Key: k, Seq: seq[k]}
		out = append(out, m)
		kms = append(kms, inMsg(topic, m))
	}
	writeKafka(t, brokers, kms...)
	return out
}

func inMsg(topic string, m inboxMsg) kafkago.Message {
	v, _ := json.Marshal(m)
	return kafkago.Message{Topic: topic, Key: []byte(m.Key), Value: v,
		Headers: []kafkago.Header{{Key: "event-id", Value: []byte(m.EventID)}}}
}

func writeKafka(t *testing.T, brokers []string, ms ...kafkago.Message) {
	t.Helper()
	w := &kafkago.Writer{Addr: kafkago.TCP(brokers...), Balancer: &kafkago.Murmur2Balancer{},
		RequiredAcks: kafkago.RequireAll, BatchTimeout: time.Millisecond, BatchSize: 1000}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := w.WriteMessages(ctx, ms...); err != nil {
		t.Fatalf("write %d messages: %v", len(ms), err)
	}
}

// applyHandler records each message in applied.
func applyHandler(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
	var im inboxMsg
	if err := json.Unmarshal(m.Value, &im); err != nil {
		return err
	}
	return tx.Create(&applied{EventID: im.EventID, K: im.Key, Seq: im.Seq}).Error
}

type inboxEnv struct {
	db      *gorm.DB
	brokers []string
	topic   string
	group   string
}

func newInboxEnv(t *testing.T, d testenv.Dialect, partitions int) *inboxEnv {
	return newInboxEnvWith(t, d, nil, partitions)
}

func newInboxEnvWith(t *testing.T, d testenv.Dialect, gcfg *gorm.Config, partitions int) *inboxEnv {
	t.Helper()
	db, _ := setup(t, d, gcfg, gormoutbox.Config{}, &applied{})
	brokers, _ := kafkaenv.Kafka(t, partitions)
	topic := kafkaenv.TopicName("inbox")
	kafkaenv.CreateTopic(t, brokers, topic, partitions)
	return &inboxEnv{db: db, brokers: brokers, topic: topic, group: kafkaenv.TopicName("group")}
}

func (e *inboxEnv) consumer(t *testing.T, h inbox.Handler, mod func(*inbox.Config)) *inbox.Consumer {
	t.Helper()
	cfg := inbox.Config{Brokers: e.brokers, GroupID: e.group, Topics: []string{e.topic},
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, MaxWait: 50 * time.Millisecond,
		Logger: slog.New(slog.DiscardHandler)}
	if mod != nil {
		mod(&cfg)
	}
	c, err := inbox.New(e.db, h, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Migrate(context.Background()); err != nil {
		t.Fatal(err)
	}
	return c
}

// start runs c until the test ends or stop is called.
func start(t *testing.T, c *inbox.Consumer) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Run did not return within 30s of its context's end")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func appliedRows(t *testing.T, db *gorm.DB) []applied {
	t.Helper()
	var rs []applied
	if err := db.Order("id").Find(&rs).Error; err != nil {
		t.Fatal(err)
	}
	return rs
}

// checkApplied asserts that every message of want was applied exactly once
// and that each key's messages were applied in their order.
func checkApplied(t *testing.T, db *gorm.DB, want []inboxMsg) {
	t.Helper()
	rs := appliedRows(t, db)
	seen := map[string]int{}
	last := map[string]int{}
	for _, r := range rs {
		seen[r.EventID]++
		if r.Seq <= last[r.K] {
			t.Errorf("key %s: seq %d applied after %d", r.K, r.Seq, last[r.K])
		}
		last[r.K] = r.Seq
	}
	for _, m := range want {
		if seen[m.EventID] != 1 {
			t.Errorf("event %s (key %s seq %d) applied %d times, want 1", m.EventID, m.Key, m.Seq, seen[m.EventID])
		}
	}
	if len(rs) != len(want) {
		t.Errorf("%d rows applied, want %d", len(rs), len(want))
	}
}

func inboxCount(t *testing.T, db *gorm.DB, status string) int64 {
	t.Helper()
	var n int64
	if err := db.Table("inbox").Where("status = ?", status).Count(&n).Error; err != nil {
		t.Fatal(err)
	}
	return n
}

// Messages delivered twice (a producer's retry, then the whole topic again
// from a replayed offset) run the handler once each, in per-key order.
func TestInboxOncePerEventInOrder(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 4)
		want := produceInbox(t, e.brokers, e.topic, 600, 30)
		// Producer-side duplicates: some messages written again.
		var again []kafkago.Message
		for i := 0; i < len(want); i += 7 {
			again = append(again, inMsg(e.topic, want[i]))
		}
		writeKafka(t, e.brokers, again...)
		c := e.consumer(t, applyHandler, func(c *inbox.Config) { c.BatchSize = 50 })
		stop := start(t, c)
		total := int64(len(want) + len(again))
		waitFor(t, 30*time.Second, "all messages", func() bool {
			s := c.Stats()
			return s.Handled+s.Duplicates >= total
		})
		stop()
		checkApplied(t, e.db, want)
		if s := c.Stats(); s.Handled != int64(len(want)) || s.Duplicates != int64(len(again)) {
			t.Errorf("stats %+v: want handled %d, duplicates %d", s, len(want), len(again))
		}
		if n := inboxCount(t, e.db, "done"); n != int64(len(want)) {
			t.Errorf("inbox has %d done rows, want %d", n, len(want))
		}

		// Replay the group's offsets from the start: everything comes
		// again and is skipped.
		resetOffsets(t, e.brokers, e.group, e.topic, 4)
		c2 := e.consumer(t, applyHandler, nil)
		stop2 := start(t, c2)
		waitFor(t, 30*time.Second, "the replayed messages", func() bool {
			return c2.Stats().Duplicates >= total
		})
		stop2()
		if s := c2.Stats(); s.Handled != 0 {
			t.Errorf("after the replay the handler ran %d times, want 0", s.Handled)
		}
		checkApplied(t, e.db, want)
	})
}

// resetOffsets commits offset 0 for every partition of topic in group (no
// member is running).
func resetOffsets(t *testing.T, brokers []string, group, topic string, partitions int) {
	t.Helper()
	cl := &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 10 * time.Second}
	var ps []kafkago.OffsetCommit
	for p := 0; p < partitions; p++ {
		ps = append(ps, kafkago.OffsetCommit{Partition: p, Offset: 0})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for {
		res, err := cl.OffsetCommit(ctx, &kafkago.OffsetCommitRequest{GroupID: group, GenerationID: -1,
			Topics: map[string][]kafkago.OffsetCommit{topic: ps}})
		if err == nil {
			err = errors.Join(func() (errs []error) {
				for _, p := range res.Topics[topic] {
					errs = append(errs, p.Error)
				}
				return
			}()...)
		}
		if err == nil {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("reset offsets of %s: %v", group, err)
		}
		time.Sleep(200 * time.Millisecond) // the group may still be emptying
	}
}

// A failing handler's writes are undone with its inbox record, the message
// is retried (and its key's later messages wait), and the other messages
// of the batch are not undone.
func TestInboxHandlerErrorRetried(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 2)
		want := produceInbox(t, e.brokers, e.topic, 200, 10)
		bad := want[55].EventID
		var fails atomic.Int32
		h := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			if err := applyHandler(ctx, tx, m); err != nil {
				return err
			}
			if m.EventID == bad && fails.Load() < 2 {
				fails.Add(1)
				if m.Attempt != int(fails.Load()) {
					return fmt.Errorf("attempt %d, want %d", m.Attempt, fails.Load())
				}
				return errors.New("not yet")
			}
			return nil
		}
		c := e.consumer(t, h, nil)
		stop := start(t, c)
		waitFor(t, 30*time.Second, "all messages", func() bool { return c.Stats().Handled >= int64(len(want)) })
		stop()
		checkApplied(t, e.db, want)
		if s := c.Stats(); s.Retries != 2 || s.Parked != 0 {
			t.Errorf("stats %+v: want 2 retries, none parked", s)
		}
		if n := inboxCount(t, e.db, "done"); n != int64(len(want)) {
			t.Errorf("inbox has %d done rows, want %d", n, len(want))
		}
	})
}

// A message whose handler keeps failing is parked after MaxAttempts with
// its content and last error; its partition moves on; Replay runs it again.
func TestInboxParksAndReplays(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 1)
		want := produceInbox(t, e.brokers, e.topic, 50, 5)
		bad := want[20]
		var broken atomic.Bool
		broken.Store(true)
		h := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			if err := applyHandler(ctx, tx, m); err != nil {
				return err
			}
			if m.EventID == bad.EventID && broken.Load() {
				return fmt.Errorf("cannot apply seq %d", bad.Seq)
			}
			return nil
		}
		c := e.consumer(t, h, func(c *inbox.Config) { c.MaxAttempts = 3 })
		stop := start(t, c)
		waitFor(t, 30*time.Second, "all messages", func() bool {
			s := c.Stats()
			return s.Handled+s.Parked >= int64(len(want))
		})
		stop()
		if s := c.Stats(); s.Parked != 1 || s.Retries != 3 || s.Handled != int64(len(want)-1) {
			t.Errorf("stats %+v: want 1 parked after 3 failures, %d handled", s, len(want)-1)
		}
		rest := append(append([]inboxMsg{}, want[:20]...), want[21:]...)
		checkApplied(t, e.db, rest)
		dead, err := c.DeadLetters(context.Background(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 1 || dead[0].EventID != bad.EventID || dead[0].Attempts != 3 ||
			dead[0].LastError != fmt.Sprintf("cannot apply seq %d", bad.Seq) || string(dead[0].Key) != bad.Key ||
			dead[0].Headers["event-id"] != bad.EventID {
			t.Fatalf("dead letters %+v, want %s after 3 attempts", dead, bad.EventID)
		}
		var im inboxMsg
		if err := json.Unmarshal(dead[0].Value, &im); err != nil || im != bad {
			t.Errorf("dead letter value %s, want %+v", dead[0].Value, bad)
		}

		// Cleanup deletes the records of handled messages, in batches,
		// and keeps the parked one.
		if n, err := c.Cleanup(context.Background(), time.Now().Add(time.Hour), 7); err != nil || n != int64(len(want)-1) {
			t.Errorf("Cleanup: %d, %v; want %d records deleted", n, err, len(want)-1)
		}
		if n := inboxCount(t, e.db, "done"); n != 0 {
			t.Errorf("%d done records after Cleanup, want 0", n)
		}
		if err := scheduler.InboxCleanupJob(c, time.Hour)(context.Background()); err != nil {
			t.Errorf("InboxCleanupJob: %v", err)
		}

		// Still broken: Replay fails and keeps it.
		if _, err := c.Replay(context.Background(), bad.EventID); err == nil {
			t.Error("Replay of a message whose handler fails: no error")
		}
		if n := inboxCount(t, e.db, "dead"); n != 1 {
			t.Errorf("%d dead rows after a failed replay, want 1", n)
		}
		broken.Store(false)
		n, err := c.Replay(context.Background(), bad.EventID, "no-such-id")
		if err != nil || n != 1 {
			t.Fatalf("Replay = %d, %v; want 1", n, err)
		}
		if n := inboxCount(t, e.db, "dead"); n != 0 {
			t.Errorf("%d dead rows after replay, want 0", n)
		}
		var got int64
		e.db.Model(&applied{}).Where("event_id = ?", bad.EventID).Count(&got)
		if got != 1 {
			t.Errorf("replayed message applied %d times, want 1", got)
		}
	})
}

// Two consumers of one group share the partitions; one joins and the
// other leaves while messages flow: every message is applied exactly once,
// in per-key order.
func TestInboxRebalance(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 4)
		slow := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			time.Sleep(200 * time.Microsecond)
			return applyHandler(ctx, tx, m)
		}
		want := produceInbox(t, e.brokers, e.topic, 1500, 40)
		c1 := e.consumer(t, slow, func(c *inbox.Config) { c.BatchSize = 20 })
		stop1 := start(t, c1)
		waitFor(t, 30*time.Second, "the first consumer to start", func() bool { return c1.Stats().Handled > 100 })
		c2 := e.consumer(t, slow, func(c *inbox.Config) { c.BatchSize = 20; c.Workers = 3 })
		start(t, c2)
		// Keep messages flowing until the group has rebalanced and the
		// second consumer works too; then the first leaves mid-flow.
		batches := [][]inboxMsg{want}
		deadline := time.Now().Add(60 * time.Second)
		for c2.Stats().Handled < 50 {
			if time.Now().After(deadline) {
				t.Fatalf("the second consumer handled nothing within 60s: c1 %+v, c2 %+v", c1.Stats(), c2.Stats())
			}
			batches = append(batches, produceInbox(t, e.brokers, e.topic, 100, 40))
			time.Sleep(100 * time.Millisecond)
		}
		batches = append(batches, produceInbox(t, e.brokers, e.topic, 300, 40))
		stop1()
		batches = append(batches, produceInbox(t, e.brokers, e.topic, 300, 40))
		var all []inboxMsg
		for _, b := range batches {
			all = append(all, b...)
		}
		waitFor(t, 60*time.Second, "all messages", func() bool {
			var n int64
			e.db.Model(&applied{}).Count(&n)
			return n >= int64(len(all))
		})
		time.Sleep(300 * time.Millisecond) // anything applied twice would show now
		checkAppliedOnce(t, e.db, batches...)
		t.Logf("c1 %+v, c2 %+v", c1.Stats(), c2.Stats())
	})
}

// checkAppliedOnce asserts that every message of batches was applied
// exactly once and, over the batches (seq restarts at 1 in each), in
// per-key order: a key's earlier batch first.
func checkAppliedOnce(t *testing.T, db *gorm.DB, batches ...[]inboxMsg) {
	t.Helper()
	rs := appliedRows(t, db)
	seen := map[string]int{}
	for _, r := range rs {
		seen[r.EventID]++
	}
	for _, b := range batches {
		for _, m := range b {
			if seen[m.EventID] != 1 {
				t.Errorf("event %s applied %d times", m.EventID, seen[m.EventID])
			}
		}
	}
	checkKeyOrder(t, rs, batches...)
}

func checkKeyOrder(t *testing.T, rs []applied, batches ...[]inboxMsg) {
	t.Helper()
	pos := map[string]int{} // event id → global rank within its key
	for bi, b := range batches {
		for _, m := range b {
			pos[m.EventID] = bi*1_000_000 + m.Seq
		}
	}
	last := map[string]int{}
	for _, r := range rs {
		p := pos[r.EventID]
		if p <= last[r.K] {
			t.Errorf("key %s: event of rank %d applied after rank %d", r.K, p, last[r.K])
		}
		last[r.K] = p
	}
}

// A consumer that dies between its transaction's commit and its offset
// commit (the child process exits there) redelivers the batch to the next
// consumer, which skips it: no change applied twice.
func TestInboxCrashBetweenCommitAndOffset(t *testing.T) {
	if os.Getenv("INBOX_CRASH_CHILD") != "" {
		inboxCrashChild(t)
		return
	}
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 2)
		c := e.consumer(t, applyHandler, nil) // migrates the inbox
		want := produceInbox(t, e.brokers, e.topic, 400, 20)
		cmd := exec.Command(os.Args[0], "-test.run=^TestInboxCrashBetweenCommitAndOffset$", "-test.count=1")
		cmd.Env = append(os.Environ(), "INBOX_CRASH_CHILD=1", "INBOX_CRASH_DIALECT="+d.Name,
			"INBOX_CRASH_DSN="+dsnOf(t, e.db), "INBOX_CRASH_BROKERS="+e.brokers[0],
			"INBOX_CRASH_TOPIC="+e.topic, "INBOX_CRASH_GROUP="+e.group)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 42 {
			t.Fatalf("child: %v, want exit status 42\n%s", err, out)
		}
		// The child committed some batches (the last one without its
		// offsets) and then died.
		before := appliedRows(t, e.db)
		if len(before) == 0 || len(before) >= len(want) {
			t.Fatalf("the child applied %d of %d messages; want some", len(before), len(want))
		}
		stop := start(t, c)
		waitFor(t, 30*time.Second, "the rest", func() bool {
			var n int64
			e.db.Model(&applied{}).Count(&n)
			return n >= int64(len(want)) && c.Stats().Handled+c.Stats().Duplicates > 0
		})
		time.Sleep(200 * time.Millisecond)
		stop()
		checkApplied(t, e.db, want)
		if s := c.Stats(); s.Duplicates == 0 {
			t.Errorf("stats %+v: the redelivered batch should have been skipped as duplicates", s)
		}
	})
}

// inboxCrashChild consumes until its third batch has committed, then exits
// before the offsets are committed.
func inboxCrashChild(t *testing.T) {
	var db *gorm.DB
	var err error
	switch os.Getenv("INBOX_CRASH_DIALECT") {
	case "postgres":
		db, err = gorm.Open(pgdriver.Open(os.Getenv("INBOX_CRASH_DSN")), &gorm.Config{})
	default:
		db, err = gorm.Open(mysqldriver.New(mysqldriver.Config{DSN: os.Getenv("INBOX_CRASH_DSN"), DisableWithReturning: true}), &gorm.Config{})
	}
	if err != nil {
		t.Fatal(err)
	}
	batches := 0
	c, err := inbox.New(db, applyHandler, inbox.Config{
		Brokers: []string{os.Getenv("INBOX_CRASH_BROKERS")}, GroupID: os.Getenv("INBOX_CRASH_GROUP"),
		Topics: []string{os.Getenv("INBOX_CRASH_TOPIC")}, BatchSize: 30, MaxWait: 50 * time.Millisecond,
		SessionTimeout: 6 * time.Second, // the next consumer gets the partitions soon after the crash
		AfterCommit: func(ctx context.Context, batch []*inbox.Message) {
			batches++
			if batches == 3 {
				os.Exit(42)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = c.Run(context.Background())
	t.Fatal("Run returned")
}

func dsnOf(t *testing.T, db *gorm.DB) string {
	switch d := db.Dialector.(type) {
	case *pgdriver.Dialector:
		return d.Config.DSN
	case *mysqldriver.Dialector:
		return d.Config.DSN
	}
	t.Fatalf("dialector %T", db.Dialector)
	return ""
}

// A handler publishes through the outbox in the inbox's transaction: one
// outbox row per message handled, none for a failed attempt.
func TestInboxHandlerPublishes(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 2)
		want := produceInbox(t, e.brokers, e.topic, 100, 10)
		var failed atomic.Bool
		h := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			if err := gormoutbox.Publish(tx, gormoutbox.Event{Topic: "answers", Type: "Answered", Key: string(m.Key),
				Payload: map[string]string{"answer_to": m.EventID}}); err != nil {
				return err
			}
			if m.EventID == want[10].EventID && failed.CompareAndSwap(false, true) {
				return errors.New("once")
			}
			return applyHandler(ctx, tx, m)
		}
		c := e.consumer(t, h, nil)
		stop := start(t, c)
		waitFor(t, 30*time.Second, "all messages", func() bool { return c.Stats().Handled >= int64(len(want)) })
		stop()
		checkApplied(t, e.db, want)
		rows := readOutbox(t, e.db, "outbox")
		if len(rows) != len(want) {
			t.Fatalf("%d outbox rows, want %d", len(rows), len(want))
		}
		answered := map[string]int{}
		for _, r := range rows {
			answered[r.Payload["answer_to"].(string)]++
		}
		for _, m := range want {
			if answered[m.EventID] != 1 {
				t.Errorf("event %s answered %d times", m.EventID, answered[m.EventID])
			}
		}
	})
}

func TestInboxConfigErrors(t *testing.T) {
	db := testenv.OpenPostgres(t, nil)
	h := func(context.Context, *gorm.DB, *inbox.Message) error { return nil }
	ok := inbox.Config{Brokers: []string{"localhost:1"}, GroupID: "g", Topics: []string{"t"}}
	for name, tc := range map[string]struct {
		mod  func(*inbox.Config)
		want string
	}{
		"no brokers":     {func(c *inbox.Config) { c.Brokers = nil }, "Brokers is empty"},
		"no group":       {func(c *inbox.Config) { c.GroupID = "" }, "GroupID is empty"},
		"no topics":      {func(c *inbox.Config) { c.Topics = nil }, "Topics is empty"},
		"bad table":      {func(c *inbox.Config) { c.Table = "in box" }, "Table"},
		"batch":          {func(c *inbox.Config) { c.BatchSize = 5000 }, "BatchSize 5000"},
		"backoff":        {func(c *inbox.Config) { c.MinBackoff, c.MaxBackoff = time.Second, time.Millisecond }, "MaxBackoff"},
		"start offset":   {func(c *inbox.Config) { c.StartOffset = 7 }, "StartOffset 7"},
		"negative tries": {func(c *inbox.Config) { c.MaxAttempts = -1 }, "MaxAttempts is -1"},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := ok
			tc.mod(&cfg)
			_, err := inbox.New(db, h, cfg)
			if !errors.Is(err, inbox.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want ErrInvalidConfig naming %q", err, tc.want)
			}
		})
	}
	if _, err := inbox.New(db, nil, ok); !errors.Is(err, inbox.ErrNoHandler) {
		t.Errorf("nil handler: %v", err)
	}
}

// Stopping a consumer while a batch is in flight finishes that batch (its
// transaction and offsets): the next consumer of the group skips nothing
// as a duplicate and handles the rest.
func TestInboxGracefulStop(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 2)
		want := produceInbox(t, e.brokers, e.topic, 300, 10)
		inFlight := make(chan struct{})
		var once sync.Once
		slow := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			once.Do(func() { close(inFlight) })
			time.Sleep(2 * time.Millisecond)
			return applyHandler(ctx, tx, m)
		}
		c1 := e.consumer(t, slow, func(c *inbox.Config) { c.BatchSize = 50 })
		stop1 := start(t, c1)
		<-inFlight
		stop1() // fails the test if Run returns an error or hangs
		s1 := c1.Stats()
		if s1.Handled == 0 || s1.Handled >= int64(len(want)) {
			t.Fatalf("first consumer handled %d of %d; want it stopped part way", s1.Handled, len(want))
		}
		if n := len(appliedRows(t, e.db)); int64(n) != s1.Handled {
			t.Errorf("%d rows applied, the consumer reports %d handled", n, s1.Handled)
		}
		c2 := e.consumer(t, applyHandler, nil)
		stop2 := start(t, c2)
		waitFor(t, 30*time.Second, "the rest", func() bool { return c2.Stats().Handled >= int64(len(want))-s1.Handled })
		stop2()
		if s2 := c2.Stats(); s2.Duplicates != 0 || s1.Handled+s2.Handled != int64(len(want)) {
			t.Errorf("second consumer %+v after the first handled %d: want the rest, no duplicates", s2, s1.Handled)
		}
		checkApplied(t, e.db, want)
	})
}

// With GORM's PrepareStmt the handlers' statements are prepared; the
// inbox's own (savepoints, records) are not, and failures are still undone
// alone.
func TestInboxPrepareStmt(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnvWith(t, d, &gorm.Config{PrepareStmt: true}, 2)
		want := produceInbox(t, e.brokers, e.topic, 120, 6)
		var failed atomic.Bool
		h := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			if err := applyHandler(ctx, tx, m); err != nil {
				return err
			}
			if m.EventID == want[30].EventID && failed.CompareAndSwap(false, true) {
				return errors.New("once")
			}
			return nil
		}
		c := e.consumer(t, h, nil)
		stop := start(t, c)
		waitFor(t, 30*time.Second, "all messages", func() bool { return c.Stats().Handled >= int64(len(want)) })
		stop()
		checkApplied(t, e.db, want)
		if s := c.Stats(); s.Retries != 1 {
			t.Errorf("stats %+v: want 1 retry", s)
		}
	})
}

// The database connections are cut again and again while messages are
// handled: batches fail and are tried again; every message is applied
// exactly once, in per-key order.
func TestInboxConnectionsCut(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 4)
		want := produceInbox(t, e.brokers, e.topic, 1500, 30)
		slow := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			time.Sleep(200 * time.Microsecond)
			return applyHandler(ctx, tx, m)
		}
		c := e.consumer(t, slow, func(c *inbox.Config) { c.BatchSize = 50 })
		driver := "pgx"
		if d.Name == "mysql" {
			driver = "mysql"
		}
		killer, err := sql.Open(driver, dsnOf(t, e.db))
		if err != nil {
			t.Fatal(err)
		}
		defer killer.Close()
		killer.SetMaxOpenConns(1)
		stop := start(t, c)
		killed := 0
		for i := 0; i < 200 && c.Stats().TxFailures < 3 && c.Stats().Handled < int64(len(want)); i++ {
			time.Sleep(time.Duration(10+i%20) * time.Millisecond)
			killed += cutSessions(t, d.Name, killer)
		}
		waitFor(t, 60*time.Second, "all messages", func() bool { return c.Stats().Handled >= int64(len(want)) })
		stop()
		if s := c.Stats(); killed == 0 || s.TxFailures == 0 {
			t.Fatalf("%d sessions cut, %d batch transactions failed: the test cut nothing in flight (%+v)", killed, s.TxFailures, s)
		}
		checkApplied(t, e.db, want)
		t.Logf("%d sessions cut; %+v", killed, c.Stats())
	})
}

// cutSessions ends every other session of this test's database (MySQL) or
// schema (PostgreSQL: its sessions carry the schema as application_name)
// and returns how many.
func cutSessions(t *testing.T, dialect string, db *sql.DB) int {
	t.Helper()
	if dialect == "postgres" {
		var n int
		if err := db.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
  AND application_name = current_setting('application_name')`).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	rows, err := db.Query(`SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()`)
	if err != nil {
		t.Fatal(err)
	}
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	rows.Close()
	n := 0
	for _, id := range ids {
		if _, err := db.Exec(`KILL ` + strconv.FormatInt(id, 10)); err == nil {
			n++
		}
	}
	return n
}

// On a SASL cluster the inbox reads with the publisher's settings
// (kafka.Config.Dialer): the relay publishes, the inbox consumes, both
// authenticated.
func TestInboxSASL(t *testing.T) {
	if os.Getenv(kafkaenv.KafkaEnv) != "" {
		t.Skip("needs an in-process kfake cluster with SASL")
	}
	creds := kafka.SASL{Mechanism: kafka.SASLScramSHA512, Username: "outbox", Password: "inbox-secret"}
	c, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.EnableSASL(),
		kfake.Superuser(creds.Mechanism, creds.Username, creds.Password), kfake.SeedTopics(2, "secured-postgres", "secured-mysql"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	kcfg := kafka.Config{Brokers: brokers, SASL: creds}
	dialer, err := kcfg.Dialer()
	if err != nil {
		t.Fatal(err)
	}
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &applied{})
		topic := "secured-" + d.Name
		var want []inboxMsg
		if err := db.Transaction(func(tx *gorm.DB) error {
			for i := 0; i < 20; i++ {
				m := inboxMsg{EventID: testEventID(), Key: fmt.Sprint("k", i%3), Seq: i/3 + 1}
				want = append(want, m)
				if err := gormoutbox.Publish(tx, gormoutbox.Event{ID: m.EventID, Topic: topic, Key: m.Key, Type: "T", Payload: m}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		drainUntilEmpty(t, newRelay(t, db, newPublisher(t, brokers, kcfg), gormoutbox.RelayConfig{}), 30*time.Second)
		in, err := inbox.New(db, applyHandler, inbox.Config{Brokers: brokers, GroupID: kafkaenv.TopicName("secured"),
			Topics: []string{topic}, Dialer: dialer, MaxWait: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
		if err != nil {
			t.Fatal(err)
		}
		if err := in.Migrate(context.Background()); err != nil {
			t.Fatal(err)
		}
		stop := start(t, in)
		waitFor(t, 30*time.Second, "the secured messages", func() bool { return in.Stats().Handled >= 20 })
		stop()
		checkApplied(t, db, want)
	})
}

// With several workers, partitions are handled concurrently, each in
// order: every message once, per-key order kept, a failing message retried
// without holding up the other workers.
func TestInboxWorkers(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 8)
		want := produceInbox(t, e.brokers, e.topic, 1200, 40)
		writeKafka(t, e.brokers, inMsg(e.topic, want[3]), inMsg(e.topic, want[700])) // redeliveries
		bad := want[100].EventID
		var running, most atomic.Int32
		var failed atomic.Bool
		h := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			n := running.Add(1)
			defer running.Add(-1)
			for {
				if old := most.Load(); n <= old || most.CompareAndSwap(old, n) {
					break
				}
			}
			time.Sleep(300 * time.Microsecond)
			if err := applyHandler(ctx, tx, m); err != nil {
				return err
			}
			if m.EventID == bad && failed.CompareAndSwap(false, true) {
				return errors.New("once")
			}
			return nil
		}
		c := e.consumer(t, h, func(c *inbox.Config) { c.Workers = 4; c.BatchSize = 25 })
		stop := start(t, c)
		waitFor(t, 60*time.Second, "all messages", func() bool {
			s := c.Stats()
			return s.Handled >= int64(len(want)) && s.Duplicates >= 2
		})
		stop()
		checkApplied(t, e.db, want)
		if s := c.Stats(); s.Retries != 1 || s.Duplicates != 2 {
			t.Errorf("stats %+v: want 1 retry, 2 duplicates", s)
		}
		if most.Load() < 2 {
			t.Errorf("at most %d handlers ran at once; want the workers to overlap", most.Load())
		}
	})
}

// Partitions added to a topic while the consumer runs are read too.
func TestInboxNewPartitions(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 1)
		first := produceInbox(t, e.brokers, e.topic, 20, 4)
		c := e.consumer(t, applyHandler, func(c *inbox.Config) {
			c.Reader = func(rc *kafkago.ReaderConfig) { rc.PartitionWatchInterval = 300 * time.Millisecond }
		})
		stop := start(t, c)
		waitFor(t, 30*time.Second, "the first messages", func() bool { return c.Stats().Handled >= 20 })
		cl := &kafkago.Client{Addr: kafkago.TCP(e.brokers...), Timeout: 10 * time.Second}
		res, err := cl.CreatePartitions(context.Background(), &kafkago.CreatePartitionsRequest{
			Topics: []kafkago.TopicPartitionsConfig{{Name: e.topic, Count: 4}}})
		if err != nil || res.Errors[e.topic] != nil {
			t.Fatalf("add partitions: %v %v", err, res)
		}
		waitFor(t, 10*time.Second, "4 partitions in the metadata", func() bool {
			md, err := cl.Metadata(context.Background(), &kafkago.MetadataRequest{Topics: []string{e.topic}})
			return err == nil && len(md.Topics) == 1 && len(md.Topics[0].Partitions) == 4
		})
		more := produceInbox(t, e.brokers, e.topic, 200, 40)
		waitFor(t, 60*time.Second, "the messages of the new partitions", func() bool { return c.Stats().Handled >= 220 })
		stop()
		checkAppliedOnce(t, e.db, first, more)
		var parts []int
		e.db.Table("inbox").Distinct("kafka_partition").Order("kafka_partition").Pluck("kafka_partition", &parts)
		if len(parts) < 2 {
			t.Errorf("messages read from partitions %v only: the new partitions were not read", parts)
		}
	})
}

// The broker goes down while the inbox consumes and comes back on the same
// address with its data: the consumer resumes by itself; every message is
// applied exactly once, in per-key order.
func TestInboxBrokerDownAndUp(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		topic := kafkaenv.TopicName("inbox-downup")
		k := newRestartableKafka(t, topic, 4)
		brokers := k.Brokers()
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &applied{})
		e := &inboxEnv{db: db, brokers: brokers, topic: topic, group: kafkaenv.TopicName("group")}
		first := produceInbox(t, brokers, topic, 300, 20)
		slow := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			time.Sleep(time.Millisecond)
			return applyHandler(ctx, tx, m)
		}
		c := e.consumer(t, slow, func(c *inbox.Config) { c.BatchSize = 20 })
		stop := start(t, c)
		waitFor(t, 30*time.Second, "some messages", func() bool { return c.Stats().Handled >= 40 })
		k.Stop() // down
		time.Sleep(2 * time.Second)
		k.Start() // up again
		more := produceInbox(t, brokers, topic, 300, 20)
		waitFor(t, 90*time.Second, "every message", func() bool {
			var n int64
			e.db.Model(&applied{}).Count(&n)
			return n >= 600
		})
		time.Sleep(300 * time.Millisecond)
		stop()
		checkAppliedOnce(t, e.db, first, more)
		t.Logf("%+v", c.Stats())
	})
}

// A consumer started while the broker is down waits for it (reading fails,
// is logged and tried again) instead of giving up.
func TestInboxStartsBeforeBroker(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		topic := kafkaenv.TopicName("inbox-late")
		k := newRestartableKafka(t, topic, 2)
		brokers := k.Brokers()
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &applied{})
		e := &inboxEnv{db: db, brokers: brokers, topic: topic, group: kafkaenv.TopicName("group")}
		want := produceInbox(t, brokers, topic, 100, 10)
		k.Stop() // down before the consumer starts
		c := e.consumer(t, applyHandler, nil)
		stop := start(t, c)
		waitFor(t, 60*time.Second, "a failed read", func() bool { return c.Stats().FetchErrors > 0 })
		k.Start()
		waitFor(t, 60*time.Second, "every message", func() bool { return c.Stats().Handled >= int64(len(want)) })
		stop()
		checkApplied(t, e.db, want)
	})
}

// A handler that panics is treated as a failed one: its writes are undone,
// the consumer keeps running and the message is retried.
func TestInboxHandlerPanics(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 1)
		want := produceInbox(t, e.brokers, e.topic, 30, 3)
		var panicked atomic.Bool
		h := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			if err := applyHandler(ctx, tx, m); err != nil {
				return err
			}
			if m.EventID == want[7].EventID && panicked.CompareAndSwap(false, true) {
				panic("boom")
			}
			return nil
		}
		c := e.consumer(t, h, nil)
		stop := start(t, c)
		waitFor(t, 30*time.Second, "all messages", func() bool { return c.Stats().Handled >= int64(len(want)) })
		stop()
		checkApplied(t, e.db, want)
		if s := c.Stats(); s.Retries != 1 {
			t.Errorf("stats %+v: want the panic counted as 1 retry", s)
		}
	})
}
