package integration

import (
	"context"
	"encoding/json"

	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
	"github.com/go-outbox/outbox/scheduler"
)

// LatencyItem is the entity the latency benchmark writes.
type LatencyItem struct {
	gormoutbox.Source `outbox:"topic:latency"`
	ID                uint `gorm:"primaryKey" json:"id"`
	N                 int  `json:"n"`
}

// BenchmarkCommitToKafkaLatency offers 1,000 events/s for 20 s (16 writers,
// each creating one entity per GORM transaction) with the library's
// defaults — RelayConfig{}, kafka.Config{}, the relay on a cron tick every
// second — and measures, per event, from the return of the writer's
// commit to a consumer's receipt of the message. "wake" wires the
// documented wake-ups (gormoutbox.Config.Wake, and Relay.Listen on
// PostgreSQL); "listen" (PostgreSQL) only Relay.Listen, as a relay in
// another process is woken; "cron-only" neither. The pool keeps as many
// idle connections as the README recommends (one per writer), except in
// "wake-default-pool", which leaves database/sql's default (2 idle).
func BenchmarkCommitToKafkaLatency(b *testing.B) {
	const (
		rate     = 1000
		duration = 20 * time.Second
		writers  = 16
	)
	for _, d := range testenv.Dialects() {
		for _, mode := range []string{"wake", "wake-default-pool", "listen", "cron-only"} {
			if mode == "listen" && d.Name != "postgres" {
				continue
			}
			b.Run(d.Name+"/"+mode, func(b *testing.B) {
				for i := 0; i < b.N; i++ {
					idle := writers
					if mode == "wake-default-pool" {
						idle = 0
					}
					wake := mode == "wake" || mode == "wake-default-pool"
					st := latencyRun(b, d, wake, mode != "cron-only", idle, rate, duration, writers)
					lat := st.total
					q := func(lat []time.Duration, p float64) float64 {
						slices.Sort(lat)
						return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))]) / float64(time.Millisecond)
					}
					b.ReportMetric(0, "ns/op")
					b.ReportMetric(q(lat, 0.50), "p50-ms")
					b.ReportMetric(q(lat, 0.99), "p99-ms")
					b.ReportMetric(float64(lat[len(lat)-1])/float64(time.Millisecond), "max-ms")
					b.ReportMetric(float64(len(lat)), "events")
					// Where the time went (p99 of each stage, each event's own):
					// commit → its batch claimed (in the hooks' BeforePublish),
					// claimed → published (AfterPublish), published → received.
					b.ReportMetric(q(st.claim, 0.99), "claim-p99-ms")
					b.ReportMetric(q(st.publish, 0.99), "publish-p99-ms")
					b.ReportMetric(q(st.consume, 0.99), "consume-p99-ms")
				}
			})
		}
	}
}

// latencyStages are one run's latencies, per event: in total (commit to
// receipt) and by stage (see BenchmarkCommitToKafkaLatency).
type latencyStages struct{ total, claim, publish, consume []time.Duration }

// stageHook records, per entity, when the relay claimed its message
// (BeforePublish) and when the broker took it (AfterPublish).
type stageHook struct {
	gormoutbox.HookBase
	mu                sync.Mutex
	claimed, accepted map[uint]time.Time
}

func (h *stageHook) mark(m *gormoutbox.Message, at map[uint]time.Time) {
	var it LatencyItem
	if json.Unmarshal(m.Value, &it) != nil {
		return
	}
	now := time.Now()
	h.mu.Lock()
	if _, ok := at[it.ID]; !ok {
		at[it.ID] = now
	}
	h.mu.Unlock()
}

func (h *stageHook) BeforePublish(_ context.Context, m *gormoutbox.Message) error {
	h.mark(m, h.claimed)
	return nil
}

func (h *stageHook) AfterPublish(_ context.Context, m *gormoutbox.Message, _ time.Duration) {
	h.mark(m, h.accepted)
}

// latencyRun runs one measurement: wake wires Config.Wake, listen
// Relay.ListenWith (PostgreSQL); idle, when positive, is the pool's
// SetMaxIdleConns (0 leaves database/sql's default).
func latencyRun(b *testing.B, d testenv.Dialect, wake, listen bool, idle, rate int, duration time.Duration, writers int) latencyStages {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var sched atomic.Pointer[scheduler.Scheduler]
	cfg := gormoutbox.Config{}
	if wake {
		cfg.Wake = func() {
			if s := sched.Load(); s != nil {
				_ = s.Wake("relay")
			}
		}
	}
	db := d.Open(b, nil)
	// database/sql keeps 2 idle connections by default: 16 writers would
	// keep opening new ones (a process fork each on PostgreSQL). The relay
	// holds its own (RelayConfig.HeldConns).
	if sqlDB, err := db.DB(); err == nil && idle > 0 {
		sqlDB.SetMaxIdleConns(idle)
	}
	p := gormoutbox.New(cfg)
	if err := db.Use(p); err != nil {
		b.Fatal(err)
	}
	if err := p.Migrate(ctx); err != nil {
		b.Fatal(err)
	}
	if err := db.AutoMigrate(&LatencyItem{}); err != nil {
		b.Fatal(err)
	}
	brokers, _ := kafkaenv.Kafka(b, 8)
	kafkaenv.CreateTopic(b, brokers, "latency", 8)
	pub, err := kafka.NewPublisher(kafka.Config{Brokers: brokers})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.Close()
	stages := &stageHook{claimed: map[uint]time.Time{}, accepted: map[uint]time.Time{}}
	relay, err := gormoutbox.NewRelay(db, pub, gormoutbox.RelayConfig{Hooks: []gormoutbox.Hook{stages}})
	if err != nil {
		b.Fatal(err)
	}
	s := scheduler.New(scheduler.Config{})
	if err := s.Add("relay", "* * * * * *", scheduler.RelayJob(relay)); err != nil {
		b.Fatal(err)
	}
	s.Start()
	sched.Store(s)
	defer func() { _ = s.Stop(context.Background()) }()
	if listen && d.Name == "postgres" {
		go func() { _ = relay.ListenWith(ctx, func() { _ = s.Wake("relay") }, pgListen("")) }()
		time.Sleep(200 * time.Millisecond)
	}

	// The consumer records when each entity's message arrives.
	var (
		mu       sync.Mutex
		received = map[uint]time.Time{}
	)
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("latency"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxWait(100*time.Millisecond))
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	go func() {
		for ctx.Err() == nil {
			fs := cl.PollFetches(ctx)
			now := time.Now()
			fs.EachRecord(func(r *kgo.Record) {
				var it LatencyItem
				if json.Unmarshal(r.Value, &it) == nil {
					mu.Lock()
					if _, dup := received[it.ID]; !dup {
						received[it.ID] = now
					}
					mu.Unlock()
				}
			})
		}
	}()

	var (
		cmu       sync.Mutex
		committed = map[uint]time.Time{}
		wg        sync.WaitGroup
	)
	interval := time.Duration(writers) * time.Second / time.Duration(rate)
	stop := time.Now().Add(duration)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			t := time.NewTicker(interval)
			defer t.Stop()
			for n := 0; time.Now().Before(stop); n++ {
				<-t.C
				it := LatencyItem{N: n}
				if err := db.Create(&it).Error; err != nil {
					b.Errorf("create: %v", err)
					return
				}
				at := time.Now()
				cmu.Lock()
				committed[it.ID] = at
				cmu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	deadline := time.Now().Add(30 * time.Second)
	for {
		mu.Lock()
		n := len(received)
		mu.Unlock()
		if n >= len(committed) || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	stages.mu.Lock()
	defer stages.mu.Unlock()
	var st latencyStages
	missing := 0
	for id, c := range committed {
		r, ok := received[id]
		if !ok {
			missing++
			continue
		}
		st.total = append(st.total, r.Sub(c))
		cl, ok1 := stages.claimed[id]
		ac, ok2 := stages.accepted[id]
		if ok1 && ok2 {
			st.claim = append(st.claim, cl.Sub(c))
			st.publish = append(st.publish, ac.Sub(cl))
			st.consume = append(st.consume, r.Sub(ac))
		}
	}
	if missing > 0 || len(st.total) == 0 || len(st.claim) == 0 {
		b.Fatalf("%d of %d events never arrived (%d with stages)", missing, len(committed), len(st.claim))
	}
	b.Logf("%s wake=%v listen=%v: %d events committed in %v (%.0f/s offered)", d.Name, wake, listen, len(committed), duration,
		float64(len(committed))/duration.Seconds())
	return st
}
