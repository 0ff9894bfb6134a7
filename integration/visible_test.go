package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/twmb/franz-go/pkg/kfake"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/ack"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/hooks"
	"github.com/go-outbox/outbox/inbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
	"github.com/go-outbox/outbox/scheduler"
)

// A relay wired as in the README's step 3 — no Logger, no hooks — whose
// every publication fails says so through slog.Default() at warn, once per
// WarnInterval, naming the topic and the error, and counting what it held
// back; dead letters are warned of too; a topic that publishes again is
// said so at info. Neither payloads nor keys appear in any line.
//
// Not parallel with other top-level tests: it replaces slog.Default()
// (restored at the end). Lines are told apart by the test's topics.
func TestRelayVisibleByDefault(t *testing.T) {
	logs := captureDefaultLog(t)
	t.Run("unreachable broker", func(t *testing.T) {
		forEachDialect(t, func(t *testing.T, d testenv.Dialect) { testUnreachableBroker(t, d, logs) })
	})
	t.Run("missing topic", func(t *testing.T) {
		forEachDialect(t, func(t *testing.T, d testenv.Dialect) { testMissingTopic(t, d, logs) })
	})
}

// No exported config of the project prints a secret it holds, however it
// is printed or logged: kafka.Config (SASL), inbox.Config (a Dialer from
// kafka.Config.Dialer or built by hand with kafka-go's plain.Mechanism),
// and the configs that hold none of their own (gormoutbox.Config and
// RelayConfig, scheduler.Config, ack.Config), filled as a service would.
func TestConfigsPrintNoSecret(t *testing.T) {
	const pw = "s3cret"
	kcfg := kafka.Config{Brokers: []string{"kafka-1:9093"}, ClientID: "svc",
		SASL: kafka.SASL{Mechanism: kafka.SASLScramSHA512, Username: "outbox", Password: pw}}
	dialer, err := kcfg.Dialer()
	if err != nil {
		t.Fatal(err)
	}
	plainCfg := kcfg
	plainCfg.SASL.Mechanism = kafka.SASLPlain
	plainDialer, err := plainCfg.Dialer()
	if err != nil {
		t.Fatal(err)
	}
	handmade := &kafkago.Dialer{ClientID: "svc", SASLMechanism: plain.Mechanism{Username: "outbox", Password: pw}}
	logger := slog.New(slog.DiscardHandler)
	configs := map[string]any{
		"kafka.Config":               kcfg,
		"inbox.Config (Dialer)":      inbox.Config{Brokers: kcfg.Brokers, GroupID: "g", Topics: []string{"t"}, Dialer: dialer, Logger: logger},
		"inbox.Config (PLAIN)":       inbox.Config{Brokers: kcfg.Brokers, GroupID: "g", Topics: []string{"t"}, Dialer: plainDialer},
		"inbox.Config (handmade)":    inbox.Config{Brokers: kcfg.Brokers, GroupID: "g", Topics: []string{"t"}, Dialer: handmade},
		"gormoutbox.Config":          gormoutbox.Config{Logger: logger, Wake: func() {}},
		"gormoutbox.RelayConfig":     gormoutbox.RelayConfig{Hooks: []gormoutbox.Hook{hooks.Slog(logger)}, Logger: logger},
		"scheduler.Config":           scheduler.Config{Logger: logger, Location: time.UTC},
		"ack.Config":                 ack.Config{Hooks: []gormoutbox.AckHook{hooks.Slog(logger)}, Logger: logger},
		"kafka.Dialer (from Config)": dialer,
		"kafka.Dialer (PLAIN)":       plainDialer,
	}
	for name, c := range configs {
		ptr := reflect.New(reflect.TypeOf(c)) // &cfg, of the config's own type
		ptr.Elem().Set(reflect.ValueOf(c))
		for _, v := range []any{c, ptr.Interface()} {
			var buf bytes.Buffer
			slog.New(slog.NewTextHandler(&buf, nil)).Info("m", "cfg", v)
			slog.New(slog.NewJSONHandler(&buf, nil)).Info("m", "cfg", v)
			for _, s := range []string{fmt.Sprintf("%v", v), fmt.Sprintf("%+v", v), fmt.Sprintf("%#v", v),
				fmt.Sprint(v), fmt.Sprintf("%s", v), buf.String()} {
				if strings.Contains(s, pw) {
					t.Errorf("%s prints the password: %s", name, s)
				}
			}
		}
	}
}

// visibleSecret is in every payload and key of these tests, and must be
// in no log line.
const visibleSecret = "PAYLOAD-9f3c"

// fakeClock is time.Now moved forward by the test (RelayConfig.Now: the
// relay's backoff and its log rate limit both read it).
type fakeClock struct{ off atomic.Int64 }

func (c *fakeClock) Now() time.Time          { return time.Now().Add(time.Duration(c.off.Load())) }
func (c *fakeClock) Advance(d time.Duration) { c.off.Add(int64(d)) }

func writeVisibleEvents(t *testing.T, db *gorm.DB, topic string, n int) {
	t.Helper()
	var evs []gormoutbox.Event
	for i := 0; i < n; i++ {
		p, _ := json.Marshal(map[string]string{"secret": visibleSecret, "i": strconv.Itoa(i)})
		evs = append(evs, gormoutbox.Event{Topic: topic, Key: visibleSecret + "-" + strconv.Itoa(i), Type: "Visible",
			Payload: json.RawMessage(p)})
	}
	if err := db.Transaction(func(tx *gorm.DB) error { return gormoutbox.Publish(tx, evs...) }); err != nil {
		t.Fatal(err)
	}
}

// deadAddress returns a loopback address where nothing listens.
func deadAddress(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	return addr
}

func testUnreachableBroker(t *testing.T, d testenv.Dialect, logs *logRecorder) {
	ctx := context.Background()
	db, _ := setup(t, d, nil, gormoutbox.Config{})
	topic := kafkaenv.TopicName("visible-down")
	writeVisibleEvents(t, db, topic, 8)
	clock := &fakeClock{}
	pub := newPublisher(t, []string{deadAddress(t)}, kafka.Config{MaxAttempts: 1, WriteTimeout: 2 * time.Second})
	r := newRelay(t, db, pub, gormoutbox.RelayConfig{MinBackoff: time.Second, MaxBackoff: time.Second,
		MaxAttempts: 7, LockWait: -1, Now: clock.Now})
	mine := func(level slog.Level, msg string) []logLine { return logs.find(level, msg, topic) }

	// Five failing passes within one WarnInterval: one warning.
	var calls []int // failed Publish calls per pass
	for i := 0; i < 5; i++ {
		res, err := r.Drain(ctx)
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
		if res.Published != 0 || res.Retried == 0 {
			t.Fatalf("pass %d: %+v, want every row retried", i, res)
		}
		calls = append(calls, res.Batches)
		clock.Advance(time.Second)
	}
	warns := mine(slog.LevelWarn, "outbox relay: publish failed")
	if len(warns) != 1 {
		t.Fatalf("%d warnings from 5 failing passes within %v, want 1: %v", len(warns), gormoutbox.WarnInterval, warns)
	}
	w := warns[0]
	t.Logf("first warning: %s", w.line)
	if !strings.Contains(w.attrs["error"], "connection refused") || !strings.Contains(w.attrs["error"], topic) ||
		w.attrs["calls"] != strconv.Itoa(calls[0]) || w.attrs["suppressed"] != "0" {
		t.Errorf("first warning %s: want the topic, the error (connection refused), calls=%d, suppressed=0", w.line, calls[0])
	}
	if n := len(mine(slog.LevelDebug, "outbox relay: publish failed")); n != 4 {
		t.Errorf("%d debug lines for the held-back passes, want 4", n)
	}

	// Past the interval: the next failure is warned of, with what was held back.
	clock.Advance(gormoutbox.WarnInterval)
	if _, err := r.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	warns = mine(slog.LevelWarn, "outbox relay: publish failed")
	if len(warns) != 2 {
		t.Fatalf("%d warnings after the interval, want 2", len(warns))
	}
	t.Logf("second warning: %s", warns[1].line)
	held := calls[1] + calls[2] + calls[3] + calls[4]
	if got, want := warns[1].attrs["suppressed"], strconv.Itoa(held); got != want || warns[1].attrs["suppressed_messages"] != strconv.Itoa(4*8) {
		t.Errorf("second warning %s: suppressed=%s, want %s failed calls (of 32 messages) held back", warns[1].line, got, want)
	}

	// An unreachable broker burns no attempt: the 7th pass dead-letters
	// nothing.
	clock.Advance(time.Second)
	res, err := r.Drain(ctx)
	if err != nil || res.Dead != 0 || countRows(t, db, "attempts > 0") != 0 {
		t.Fatalf("7th pass with the broker unreachable: %+v, %v; want no dead row and no attempt counted", res, err)
	}
	// A publisher that does not say the error is the broker's (no
	// ErrBrokerUnavailable): each failure is the message's; with
	// MaxAttempts 1 every row is dead-lettered: a warning too.
	plain := funcPublisher(func(ctx context.Context, msgs []gormoutbox.Message) error {
		if err := pub.Publish(ctx, msgs); err != nil {
			return errors.New(err.Error())
		}
		return nil
	})
	r = newRelay(t, db, plain, gormoutbox.RelayConfig{MinBackoff: time.Second, MaxBackoff: time.Second,
		MaxAttempts: 1, LockWait: -1, Now: clock.Now})
	clock.Advance(time.Second)
	res, err = r.Drain(ctx)
	if err != nil || res.Dead != 8 {
		t.Fatalf("last pass: %+v, %v; want the 8 rows dead", res, err)
	}
	dead := mine(slog.LevelWarn, "outbox relay: dead-lettered")
	if len(dead) != 1 || dead[0].attrs["count"] != "8" || !strings.Contains(dead[0].attrs["error"], "connection refused") {
		t.Fatalf("dead-letter warnings %v, want one for 8 rows with the error", dead)
	}
	t.Logf("dead letters: %s", dead[0].line)
	if n := len(mine(slog.LevelDebug, "outbox relay: dead-lettered")); n != 8 {
		t.Errorf("%d debug lines for dead rows, want 8 (one per row, with its id)", n)
	}
	logs.noSecret(t, visibleSecret)
}

func testMissingTopic(t *testing.T, d testenv.Dialect, logs *logRecorder) {
	ctx := context.Background()
	db, _ := setup(t, d, nil, gormoutbox.Config{})
	// A broker of our own, which creates no topic by itself.
	c, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	brokers := c.ListenAddrs()
	topic := kafkaenv.TopicName("visible-missing")
	writeVisibleEvents(t, db, topic, 4)
	clock := &fakeClock{}
	pub := newPublisher(t, brokers, kafka.Config{MaxAttempts: 1, WriteTimeout: 2 * time.Second})
	r := newRelay(t, db, pub, gormoutbox.RelayConfig{MinBackoff: time.Second, MaxBackoff: time.Second,
		MaxAttempts: 1000, LockWait: -1, Now: clock.Now})
	for i := 0; i < 3; i++ {
		res, err := r.Drain(ctx)
		if err != nil || res.Published != 0 {
			t.Fatalf("pass %d: %+v, %v; want nothing published", i, res, err)
		}
		clock.Advance(time.Second)
	}
	warns := logs.find(slog.LevelWarn, "outbox relay: publish failed", topic)
	if len(warns) != 1 || !strings.Contains(warns[0].attrs["error"], "Unknown Topic Or Partition") {
		t.Fatalf("warnings %v, want one saying the topic is unknown", warns)
	}
	t.Logf("warning: %s", warns[0].line)

	kafkaenv.CreateTopic(t, brokers, topic, 1)
	// kafka-go keeps the metadata it fetched for up to 6s (MetadataTTL).
	deadline := time.Now().Add(30 * time.Second)
	for published := 0; published < 4; {
		if time.Now().After(deadline) {
			t.Fatalf("published %d of 4 after the topic was created", published)
		}
		clock.Advance(time.Second)
		res, err := r.Drain(ctx)
		if err != nil {
			t.Fatal(err)
		}
		published += res.Published
		if res.Published == 0 {
			time.Sleep(500 * time.Millisecond)
		}
	}
	again := logs.find(slog.LevelInfo, "outbox relay: publishing again", topic)
	if len(again) != 1 {
		t.Fatalf("recovery lines %v, want one", again)
	}
	t.Logf("recovery: %s", again[0].line)
	logs.noSecret(t, visibleSecret)
}

// logRecorder is a slog.Handler that keeps every record (all levels), each
// as its text line and its attributes (values resolved, as strings).
type logRecorder struct {
	mu    *sync.Mutex
	lines *[]logLine
	attrs []slog.Attr
}

type logLine struct {
	level slog.Level
	msg   string
	attrs map[string]string
	line  string
}

func (l logLine) String() string { return l.line }

// captureDefaultLog makes a logRecorder slog.Default() until the test
// ends, then restores slog.Default() and the log package's output.
func captureDefaultLog(t *testing.T) *logRecorder {
	rec := &logRecorder{mu: new(sync.Mutex), lines: new([]logLine)}
	old, oldW, oldFlags := slog.Default(), log.Writer(), log.Flags()
	slog.SetDefault(slog.New(rec))
	t.Cleanup(func() {
		slog.SetDefault(old) // does not give the log package its output back
		log.SetOutput(oldW)
		log.SetFlags(oldFlags)
	})
	return rec
}

func (h *logRecorder) Enabled(context.Context, slog.Level) bool { return true }

func (h *logRecorder) Handle(ctx context.Context, r slog.Record) error {
	var buf bytes.Buffer
	th := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}).WithAttrs(h.attrs)
	if err := th.Handle(ctx, r); err != nil {
		return err
	}
	ll := logLine{level: r.Level, msg: r.Message, attrs: map[string]string{}, line: strings.TrimSpace(buf.String())}
	add := func(a slog.Attr) bool {
		ll.attrs[a.Key] = a.Value.Resolve().String()
		return true
	}
	for _, a := range h.attrs {
		add(a)
	}
	r.Attrs(add)
	h.mu.Lock()
	*h.lines = append(*h.lines, ll)
	h.mu.Unlock()
	return nil
}

func (h *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{mu: h.mu, lines: h.lines, attrs: append(append([]slog.Attr(nil), h.attrs...), as...)}
}

func (h *logRecorder) WithGroup(string) slog.Handler { return h }

// find returns the records of level and message whose topics name topic.
func (h *logRecorder) find(level slog.Level, msg, topic string) []logLine {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []logLine
	for _, l := range *h.lines {
		if l.level == level && l.msg == msg && (strings.Contains(l.attrs["topics"], topic) || l.attrs["topic"] == topic) {
			out = append(out, l)
		}
	}
	return out
}

// noSecret fails the test if any record holds s.
func (h *logRecorder) noSecret(t *testing.T, s string) {
	t.Helper()
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, l := range *h.lines {
		if strings.Contains(l.line, s) {
			t.Errorf("a log line holds a payload or key: %s", l.line)
		}
	}
}
