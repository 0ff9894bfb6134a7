package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/hooks"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
)

// sums reads the Int64 sums and gauges of rm by metric name and topic.
func sums(rm metricdata.ResourceMetrics) map[string]map[string]int64 {
	out := map[string]map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			add := func(attrs attribute.Set, v int64) {
				topic, _ := attrs.Value("messaging.destination.name")
				if out[m.Name] == nil {
					out[m.Name] = map[string]int64{}
				}
				out[m.Name][topic.AsString()] += v
			}
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					add(p.Attributes, p.Value)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					add(p.Attributes, p.Value)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					add(p.Attributes, int64(p.Count))
				}
			}
		}
	}
	return out
}

// Metrics read back through an in-memory reader match the rows; the
// publish span is linked to the span that wrote the event, whose trace
// context reaches Kafka in the traceparent header.
func TestOTelHook(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, c := kfakeOnly(t, 1)
		good, bad := kafkaenv.TopicName("otel-good"), kafkaenv.TopicName("otel-bad")
		kafkaenv.CreateTopic(t, brokers, good, 1)
		kafkaenv.CreateTopic(t, brokers, bad, 1)
		c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: bad, Err: kerr.InvalidRecord, Count: -1})

		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		spans := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
		h, err := hooks.NewOTel(hooks.OTelConfig{MeterProvider: mp, TracerProvider: tp})
		if err != nil {
			t.Fatal(err)
		}

		writeCtx, writeSpan := tp.Tracer("test").Start(ctx, "write order")
		if err := db.WithContext(writeCtx).Transaction(func(tx *gorm.DB) error {
			return gormoutbox.Publish(tx, gormoutbox.Event{Topic: good, Key: "k1", Type: "T", Payload: "1"})
		}); err != nil {
			t.Fatal(err)
		}
		writeSpan.End()
		if err := db.Transaction(func(tx *gorm.DB) error {
			return gormoutbox.Publish(tx,
				gormoutbox.Event{Topic: good, Key: "k2", Type: "T", Payload: "2"},
				gormoutbox.Event{Topic: good, Key: "k3", Type: "T", Payload: "3"},
				gormoutbox.Event{Topic: bad, Key: "b", Type: "T", Payload: "x"})
		}); err != nil {
			t.Fatal(err)
		}
		cfg := fastRetry
		cfg.MaxAttempts = 2
		cfg.Hooks = []gormoutbox.Hook{h}
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{MaxAttempts: 1}), cfg)
		if err := h.Observe(r); err != nil {
			t.Fatal(err)
		}
		defer h.Close()

		// Before the relay runs: 3 pending on good, 1 on bad.
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		if got := sums(rm)["outbox.pending"]; got[good] != 3 || got[bad] != 1 {
			t.Fatalf("outbox.pending before the relay: %v", got)
		}
		drainUntilEmpty(t, r, 30*time.Second)
		rm = metricdata.ResourceMetrics{}
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		s := sums(rm)
		check := func(name, topic string, want int64) {
			t.Helper()
			if s[name][topic] != want {
				t.Errorf("%s{%s} = %d, want %d (all: %v)", name, topic, s[name][topic], want, s[name])
			}
		}
		check("outbox.published", good, 3)
		check("outbox.retried", bad, 1)
		check("outbox.dead_lettered", bad, 1)
		check("outbox.publish.duration", good, 3)
		check("outbox.lag", good, 3)
		check("outbox.pending", good, 0)
		check("outbox.dead", bad, 1)

		var publish []sdktrace.ReadOnlySpan
		for _, sp := range spans.Ended() {
			if sp.Name() == "publish "+good {
				publish = append(publish, sp)
			}
		}
		if len(publish) != 3 {
			t.Fatalf("%d publish spans for %s, want 3", len(publish), good)
		}
		linked := 0
		for _, sp := range publish {
			for _, l := range sp.Links() {
				if l.SpanContext.TraceID() == writeSpan.SpanContext().TraceID() {
					linked++
				}
			}
		}
		if linked != 1 {
			t.Errorf("%d publish spans linked to the writer's trace, want 1", linked)
		}
		recs := kafkaenv.ReadTopic(t, brokers, good, 3, 20*time.Second, nil)
		found := false
		for _, m := range recs {
			if tp := m.Headers["traceparent"]; tp != "" && len(tp) > 35 && tp[3:35] == writeSpan.SpanContext().TraceID().String() {
				found = true
			}
		}
		if !found {
			t.Errorf("no message carries the writer's traceparent")
		}
	})
}

// The acknowledgement metrics: outbox.awaiting_ack and outbox.failed read
// from the table, outbox.acks counted by the hook.
func TestOTelAckMetrics(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, _ := kfakeOnly(t, 1)
		topic := kafkaenv.TopicName("otel-ack")
		kafkaenv.CreateTopic(t, brokers, topic, 1)
		var ids []string
		if err := db.Transaction(func(tx *gorm.DB) error {
			for i := 0; i < 3; i++ {
				id := testEventID()
				ids = append(ids, id)
				if err := gormoutbox.Publish(tx, gormoutbox.Event{ID: id, Topic: topic, Key: fmt.Sprint(i), Type: "T", Payload: i, AckTopic: topic + "-acks"}); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		reader := sdkmetric.NewManualReader()
		h, err := hooks.NewOTel(hooks.OTelConfig{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
		if err != nil {
			t.Fatal(err)
		}
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{})
		if err := h.Observe(r); err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		drainUntilEmpty(t, r, 30*time.Second)
		for i, st := range []gormoutbox.AckStatus{gormoutbox.AckSuccess, gormoutbox.AckFailed} {
			if err := db.Transaction(func(tx *gorm.DB) error {
				res, err := gormoutbox.Acknowledge(tx, gormoutbox.Ack{EventID: ids[i], Status: st, Attempt: 1}, 1)
				if err == nil {
					h.OnAck(ctx, res)
				}
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(ctx, &rm); err != nil {
			t.Fatal(err)
		}
		s := sums(rm)
		for name, want := range map[string]int64{"outbox.awaiting_ack": 1, "outbox.failed": 1, "outbox.acks": 2, "outbox.pending": 0} {
			if s[name][topic] != want {
				t.Errorf("%s{%s} = %d, want %d", name, topic, s[name][topic], want)
			}
		}
	})
}

// ObserveInbox reports an inbox consumer's counters.
func TestOTelInboxMetrics(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 1)
		want := produceInbox(t, e.brokers, e.topic, 20, 4)
		writeKafka(t, e.brokers, inMsg(e.topic, want[0])) // one redelivery
		c := e.consumer(t, applyHandler, nil)
		reader := sdkmetric.NewManualReader()
		h, err := hooks.NewOTel(hooks.OTelConfig{MeterProvider: sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))})
		if err != nil {
			t.Fatal(err)
		}
		if err := h.ObserveInbox(c); err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		stop := start(t, c)
		waitFor(t, 30*time.Second, "all messages", func() bool { s := c.Stats(); return s.Handled+s.Duplicates >= 21 })
		stop()
		var rm metricdata.ResourceMetrics
		if err := reader.Collect(context.Background(), &rm); err != nil {
			t.Fatal(err)
		}
		got := map[string]int64{}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if sum, ok := m.Data.(metricdata.Sum[int64]); ok {
					for _, p := range sum.DataPoints {
						if g, _ := p.Attributes.Value("messaging.consumer.group.name"); g.AsString() == e.group {
							got[m.Name] += p.Value
						}
					}
				}
			}
		}
		if got["inbox.handled"] != 20 || got["inbox.duplicates"] != 1 || got["inbox.parked"] != 0 {
			t.Errorf("inbox metrics %v: want 20 handled, 1 duplicate, none parked", got)
		}
	})
}
