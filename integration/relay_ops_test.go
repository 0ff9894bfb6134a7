package integration

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
	"github.com/go-outbox/outbox/scheduler"
)

func countRows(t *testing.T, db *gorm.DB, where string) int64 {
	t.Helper()
	sqlDB, _ := db.DB()
	var n int64
	if err := sqlDB.QueryRow(`SELECT COUNT(*) FROM outbox WHERE ` + where).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// The relay scheduled on cron publishes the backlog; Stop in the middle
// of it finishes the batch in flight: every message on the topic is marked
// published, none twice.
func TestRelaySchedulerGracefulStop(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, _ := kafkaenv.Kafka(t, 4)
		topic := kafkaenv.TopicName("sched")
		kafkaenv.CreateTopic(t, brokers, topic, 4)
		ids := writeSeqEvents(t, db, topic, 20, 200, 4, 100)

		// Small batches, each slowed down, so that Stop lands mid-backlog.
		pub := &slowPublisher{Publisher: newPublisher(t, brokers, kafka.Config{}), delay: 30 * time.Millisecond}
		r := newRelay(t, db, pub, gormoutbox.RelayConfig{BatchSize: 100, Budget: time.Minute})
		s := scheduler.New(scheduler.Config{})
		if err := s.Add("relay", "* * * * * *", scheduler.RelayJob(r)); err != nil {
			t.Fatal(err)
		}
		s.Start()
		if err := s.RunNow("relay"); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(30 * time.Second)
		for countRows(t, db, "published_at IS NOT NULL") < 500 {
			if time.Now().After(deadline) {
				t.Fatal("the scheduled relay published fewer than 500 rows in 30s")
			}
			time.Sleep(10 * time.Millisecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Fatalf("Stop: %v", err)
		}
		published := countRows(t, db, "published_at IS NOT NULL")
		if published == 4000 {
			t.Fatal("the relay finished the whole backlog before Stop; the test proves nothing")
		}
		if st, _ := s.Stats("relay"); st.Failures != 0 || st.Panics != 0 {
			t.Errorf("job stats %+v: want no failure", st)
		}
		// The topic holds the events of the rows marked published (each at
		// least once), and no other — except events whose publication the
		// relay recorded as failed (last_error set, still pending): under
		// load a produce can time out after the broker appended it, which
		// at-least-once allows (the row is sent again).
		var marked, failed []string
		if err := db.Table("outbox").Where("published_at IS NOT NULL").Pluck("event_id", &marked).Error; err != nil {
			t.Fatal(err)
		}
		// (Not failed by Stop itself: the batch in flight must be finished
		// whatever the context.)
		if err := db.Table("outbox").Where("published_at IS NULL AND last_error IS NOT NULL AND last_error NOT LIKE ?",
			"%context canceled%").Pluck("event_id", &failed).Error; err != nil {
			t.Fatal(err)
		}
		want, retried := map[string]bool{}, map[string]bool{}
		for _, id := range marked {
			want[strings.ToLower(id)] = true
		}
		for _, id := range failed {
			retried[strings.ToLower(id)] = true
		}
		kafkaenv.ReadTopic(t, brokers, topic, int(published), 30*time.Second, runIDs(ids))
		time.Sleep(200 * time.Millisecond)
		recs := kafkaenv.ReadTopic(t, brokers, topic, int(published), 30*time.Second, runIDs(ids))
		got, early := map[string]bool{}, 0
		for _, r := range recs {
			id := strings.ToLower(r.Headers[gormoutbox.HeaderEventID])
			if got[id] {
				continue
			}
			got[id] = true
			switch {
			case want[id]:
			case retried[id]:
				early++
			default:
				t.Errorf("event %s is on the topic but its row is neither marked published nor recorded as failed", id)
			}
		}
		for id := range want {
			if !got[id] {
				t.Errorf("row of event %s is marked published but the event is not on the topic", id)
			}
		}
		t.Logf("%s: stopped after %d of 4000 rows; topic and table agree (%d messages, %d of rows recorded as failed)",
			d.Name, published, len(recs), early)
	})
}

type slowPublisher struct {
	gormoutbox.Publisher
	delay time.Duration
}

func (p *slowPublisher) Publish(ctx context.Context, msgs []gormoutbox.Message) error {
	time.Sleep(p.delay)
	return p.Publisher.Publish(ctx, msgs)
}

// Cleanup deletes rows published before the retention period, in batches,
// and nothing else: pending, dead and recently published rows stay.
func TestRelayCleanup(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, _ := kafkaenv.Kafka(t, 1)
		topic := kafkaenv.TopicName("cleanup")
		kafkaenv.CreateTopic(t, brokers, topic, 1)
		writeSeqEvents(t, db, topic, 5, 5, 1, 25)
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{CleanupBatch: 7})
		drainUntilEmpty(t, r, 30*time.Second)
		sqlDB, _ := db.DB()
		old := time.Now().Add(-48 * time.Hour).UTC()
		if _, err := sqlDB.Exec(`UPDATE outbox SET published_at = `+placeholder(d.Name, 1)+`, created_at = `+placeholder(d.Name, 2)+
			` WHERE id <= (SELECT m FROM (SELECT MIN(id) + 19 AS m FROM outbox) x)`, old, old); err != nil {
			t.Fatal(err)
		}
		// An old pending row and an old dead row must survive.
		writeSeqEvents(t, db, topic+"-x", 2, 1, 1, 2)
		if _, err := sqlDB.Exec(`UPDATE outbox SET created_at = `+placeholder(d.Name, 1)+` WHERE published_at IS NULL`, old); err != nil {
			t.Fatal(err)
		}
		if _, err := sqlDB.Exec(`UPDATE outbox SET dead_at = created_at WHERE id = (SELECT m FROM (SELECT MAX(id) AS m FROM outbox) x)`); err != nil {
			t.Fatal(err)
		}
		n, err := r.Cleanup(ctx, 24*time.Hour)
		if err != nil || n != 20 {
			t.Fatalf("Cleanup: %d, %v; want 20 rows deleted", n, err)
		}
		if got := countRows(t, db, "1 = 1"); got != 7 {
			t.Errorf("%d rows left, want 7 (5 recent, 1 pending, 1 dead)", got)
		}
		if got := countRows(t, db, "published_at IS NULL"); got != 2 {
			t.Errorf("%d unpublished rows left, want 2", got)
		}
		if n, err := r.Cleanup(ctx, 24*time.Hour); err != nil || n != 0 {
			t.Errorf("second Cleanup: %d, %v; want nothing", n, err)
		}
	})
}

func placeholder(dialect string, n int) string {
	if dialect == "postgres" {
		return "$" + string(rune('0'+n))
	}
	return "?"
}

// DeleteOnPublish removes rows as they are published.
func TestRelayDeleteOnPublish(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, _ := kafkaenv.Kafka(t, 2)
		topic := kafkaenv.TopicName("delete")
		kafkaenv.CreateTopic(t, brokers, topic, 2)
		ids := writeSeqEvents(t, db, topic, 10, 10, 2, 20)
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{DeleteOnPublish: true, BatchSize: 30})
		res := drainUntilEmpty(t, r, 30*time.Second)
		if res.Published != 100 {
			t.Fatalf("drain: %+v, want 100 published", res)
		}
		if n := countRows(t, db, "1 = 1"); n != 0 {
			t.Errorf("%d rows left in the outbox, want 0", n)
		}
		checkSeqOrder(t, kafkaenv.ReadTopic(t, brokers, topic, 100, 30*time.Second, runIDs(ids)), 10, 10)
	})
}

// A key that keeps failing, with more pending rows than a batch, does not
// hold up the other keys: they are published while it waits.
func TestRelayFailingKeyDoesNotHoldOthers(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, c := kfakeOnly(t, 2)
		bad, good := kafkaenv.TopicName("stuck"), kafkaenv.TopicName("flowing")
		kafkaenv.CreateTopic(t, brokers, bad, 2)
		kafkaenv.CreateTopic(t, brokers, good, 2)
		writeSeqEvents(t, db, bad, 1, 300, 1, 100) // one key, 300 rows, first in line
		// A failure of the messages (a broker error, such as
		// NOT_LEADER, is an outage: the relay backs off as a whole).
		c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: bad, Err: kerr.InvalidRecord, Count: -1})
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{MaxAttempts: 1}), gormoutbox.RelayConfig{
			BatchSize: 50, MinBackoff: time.Hour, MaxBackoff: time.Hour, LockWait: -1,
		})
		ctx := context.Background()
		if _, err := r.Drain(ctx); err != nil {
			t.Fatal(err)
		}
		// More rows of the bad key arrive while it waits, more than a
		// batch and ahead of rows of other keys.
		writeSeqEvents(t, db, bad, 1, 120, 1, 60)
		goodIDs := writeSeqEvents(t, db, good, 10, 10, 1, 50)
		for i := 0; i < 10 && countRows(t, db, "published_at IS NOT NULL") < 100; i++ {
			if _, err := r.Drain(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if n := countRows(t, db, "published_at IS NOT NULL"); n != 100 {
			t.Fatalf("%d rows published, want the 100 of the other keys", n)
		}
		checkSeqOrder(t, kafkaenv.ReadTopic(t, brokers, good, 100, 30*time.Second, runIDs(goodIDs)), 10, 10)
		if n := countRows(t, db, "attempts > 1"); n != 0 {
			t.Errorf("%d rows tried more than once within the hour of backoff", n)
		}
	})
}

// Bad relay settings are refused with errors naming the field.
func TestRelayConfigErrors(t *testing.T) {
	d := testenv.Dialects()[0]
	db := d.Open(t, nil)
	pub := &slowPublisher{}
	cases := []struct {
		cfg  gormoutbox.RelayConfig
		want string
	}{
		{gormoutbox.RelayConfig{Table: "bad name"}, "RelayConfig.Table"},
		{gormoutbox.RelayConfig{BatchSize: -1}, "RelayConfig.BatchSize"},
		{gormoutbox.RelayConfig{MaxAttempts: -2}, "RelayConfig.MaxAttempts"},
		{gormoutbox.RelayConfig{MinBackoff: time.Minute, MaxBackoff: time.Second}, "RelayConfig.MinBackoff"},
		{gormoutbox.RelayConfig{Shards: 4, MaxShards: 5}, "RelayConfig.MaxShards"},
		{gormoutbox.RelayConfig{Shards: -3}, "RelayConfig.Shards"},
		{gormoutbox.RelayConfig{Shards: 4, Workers: 5}, "RelayConfig.Workers"},
		{gormoutbox.RelayConfig{BlockedRecheck: -time.Second}, "RelayConfig.BlockedRecheck"},
		{gormoutbox.RelayConfig{PublishTimeout: -time.Second}, "RelayConfig.PublishTimeout"},
		{gormoutbox.RelayConfig{MinBackoff: 2 * time.Second, OutageMaxBackoff: time.Second}, "RelayConfig.OutageMaxBackoff"},
	}
	for _, c := range cases {
		_, err := gormoutbox.NewRelay(db, pub, c.cfg)
		if !errors.Is(err, gormoutbox.ErrInvalidConfig) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("NewRelay(%+v): %v; want ErrInvalidConfig naming %s", c.cfg, err, c.want)
		}
	}
	if _, err := gormoutbox.NewRelay(db, nil, gormoutbox.RelayConfig{}); !errors.Is(err, gormoutbox.ErrInvalidConfig) {
		t.Errorf("nil publisher: %v", err)
	}
	if _, err := kafka.NewPublisher(kafka.Config{}); !errors.Is(err, kafka.ErrInvalidConfig) || !strings.Contains(err.Error(), "Brokers") {
		t.Errorf("publisher without brokers: %v", err)
	}
}
