package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/hooks"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
)

// recorder is a hook that records its calls and steers by key: "retry"
// is vetoed with a plain error, "dead" with ErrDeadLetter; every other
// message gets an extra header.
type recorder struct {
	gormoutbox.HookBase
	name  string
	mu    *sync.Mutex
	calls *[]string
}

func (r recorder) rec(s string) {
	r.mu.Lock()
	*r.calls = append(*r.calls, r.name+":"+s)
	r.mu.Unlock()
}

func (r recorder) BeforePublish(_ context.Context, m *gormoutbox.Message) error {
	r.rec("before " + string(m.Key))
	switch string(m.Key) {
	case "retry":
		return errors.New("not now")
	case "dead":
		return fmt.Errorf("poison: %w", gormoutbox.ErrDeadLetter)
	}
	m.Headers = append(m.Headers, gormoutbox.Header{Key: "x-" + r.name, Value: []byte("yes")})
	return nil
}

func (r recorder) AfterPublish(_ context.Context, m *gormoutbox.Message, _ time.Duration) {
	r.rec("after " + string(m.Key))
}

func (r recorder) OnError(_ context.Context, m *gormoutbox.Message, err error, attempt int) {
	r.rec(fmt.Sprintf("error %s %d", m.Key, attempt))
}

func (r recorder) OnDeadLetter(_ context.Context, m *gormoutbox.Message, err error, attempts int) {
	r.rec(fmt.Sprintf("dead %s %d", m.Key, attempts))
}

// Hooks fire in order with the right messages; a veto retries or
// dead-letters as documented and holds back later messages of its key;
// headers added by a hook reach Kafka.
func TestRelayHooks(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, _ := kafkaenv.Kafka(t, 1)
		topic := kafkaenv.TopicName("hooks")
		kafkaenv.CreateTopic(t, brokers, topic, 1)
		ev := func(key string) gormoutbox.Event {
			return gormoutbox.Event{Topic: topic, Key: key, Type: "T", Payload: "secret-payload"}
		}
		if err := db.Transaction(func(tx *gorm.DB) error {
			return gormoutbox.Publish(tx, ev("ok"), ev("retry"), ev("retry"), ev("dead"), ev("ok"))
		}); err != nil {
			t.Fatal(err)
		}
		var (
			mu    sync.Mutex
			calls []string
		)
		var logs bytes.Buffer
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{
			Workers: 1, MinBackoff: time.Hour, MaxBackoff: time.Hour,
			Hooks: []gormoutbox.Hook{
				recorder{name: "a", mu: &mu, calls: &calls},
				recorder{name: "b", mu: &mu, calls: &calls},
				hooks.Slog(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))),
			},
		})
		res, err := r.Drain(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if res.Published != 2 || res.Retried != 1 || res.Dead != 1 || res.HeldBack != 1 {
			t.Fatalf("drain %+v, want 2 published, 1 retried, 1 dead, 1 held back", res)
		}
		want := []string{
			"a:before ok", "b:before ok", "a:before retry", "a:before dead", "a:before ok", "b:before ok",
			"a:after ok", "b:after ok", "a:error retry 1", "b:error retry 1", "a:error retry 0", "b:error retry 0",
			"a:dead dead 1", "b:dead dead 1", "a:after ok", "b:after ok",
		}
		if strings.Join(calls, ",") != strings.Join(want, ",") {
			t.Fatalf("hook calls\n got %v\nwant %v", calls, want)
		}
		recs := kafkaenv.ReadTopic(t, brokers, topic, 2, 20*time.Second, nil)
		for _, m := range recs {
			if string(m.Key) != "ok" || m.Headers["x-a"] != "yes" || m.Headers["x-b"] != "yes" {
				t.Errorf("message %s headers %v: want only ok messages with x-a and x-b", m.Key, m.Headers)
			}
		}
		dead, _ := r.DeadLetters(ctx, gormoutbox.DeadLetterQuery{})
		if len(dead) != 1 || string(dead[0].Key) != "dead" || !strings.Contains(dead[0].LastError, "poison") {
			t.Fatalf("dead letters %v", dead)
		}
		out := logs.String()
		for _, s := range []string{"outbox: published", "outbox: publish failed, will retry", "outbox: dead-lettered", "topic=" + topic} {
			if !strings.Contains(out, s) {
				t.Errorf("slog output lacks %q:\n%s", s, out)
			}
		}
		if strings.Contains(out, "secret-payload") || strings.Contains(out, "key=") {
			t.Errorf("slog output shows keys or payloads:\n%s", out)
		}
	})
}

// A broker failure reaches OnError with the attempt number, then
// OnDeadLetter after MaxAttempts.
func TestRelayHooksOnBrokerErrors(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, c := kfakeOnly(t, 1)
		topic := kafkaenv.TopicName("hookerr")
		kafkaenv.CreateTopic(t, brokers, topic, 1)
		c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.InvalidRecord, Count: -1})
		if err := db.Transaction(func(tx *gorm.DB) error {
			return gormoutbox.Publish(tx, gormoutbox.Event{Topic: topic, Key: "k", Type: "T", Payload: "p"})
		}); err != nil {
			t.Fatal(err)
		}
		var (
			mu    sync.Mutex
			calls []string
		)
		cfg := fastRetry
		cfg.MaxAttempts = 3
		cfg.Hooks = []gormoutbox.Hook{recorder{name: "h", mu: &mu, calls: &calls}}
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{MaxAttempts: 1}), cfg)
		drainUntilEmpty(t, r, 30*time.Second)
		got := strings.Join(calls, ",")
		want := "h:before k,h:error k 1,h:before k,h:error k 2,h:before k,h:dead k 3"
		if got != want {
			t.Fatalf("hook calls %s, want %s", got, want)
		}
	})
}
