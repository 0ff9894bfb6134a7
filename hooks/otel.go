package hooks

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/inbox"
)

// ScopeName is the instrumentation scope of the OpenTelemetry hook's meter
// and tracer.
const ScopeName = "github.com/go-outbox/outbox/hooks"

// OTelConfig configures the OpenTelemetry hook. The zero value uses the
// global providers.
type OTelConfig struct {
	// MeterProvider and TracerProvider default to otel's global ones (set
	// them with otel.SetMeterProvider / SetTracerProvider, or pass yours:
	// any exporter, Prometheus included).
	MeterProvider  metric.MeterProvider
	TracerProvider trace.TracerProvider
	// Propagator reads the trace context captured with the event (the
	// "traceparent" header). Default propagation.TraceContext{}.
	Propagator propagation.TextMapPropagator
}

// OTel is a relay hook that records metrics and traces with OpenTelemetry:
//
//   - outbox.published, outbox.retried, outbox.dead_lettered (counters of
//     messages);
//   - outbox.publish.duration (seconds the Publish call took, per message)
//     and outbox.lag (seconds from capture to the broker's acknowledgement);
//   - with Observe, outbox.pending, outbox.awaiting_ack (published, waiting
//     for a consumer's answer), outbox.failed (answered FAILED on the last
//     process attempt), outbox.dead and outbox.blocked (pending rows held
//     back behind a dead row of their key: alert on any) (rows), and
//     outbox.oldest_pending_age (seconds), read from the table at each
//     collection;
//   - as a gormoutbox.AckHook (ack.Config.Hooks), outbox.acks: answers
//     applied, with attribute "outcome" (processed, resent, gave_up,
//     ignored);
//   - with ObserveInbox, an inbox consumer's counters (inbox.handled,
//     inbox.duplicates, inbox.retries, inbox.parked) by consumer group;
//
// all with the topic as attribute "messaging.destination.name". Each
// message gets a producer span "publish <topic>", linked to the span that
// was current when the event was captured (its traceparent header, which
// travels to Kafka unchanged).
type OTel struct {
	gormoutbox.HookBase
	cfg                      OTelConfig
	tracer                   trace.Tracer
	meter                    metric.Meter
	published, retried, dead metric.Int64Counter
	acks                     metric.Int64Counter
	publishDuration, lag     metric.Float64Histogram
	spans                    sync.Map // outbox row id -> trace.Span
	registrations            []metric.Registration
	registrationsMu          sync.Mutex
}

const attrTopic = "messaging.destination.name"

// NewOTel returns the OpenTelemetry hook.
func NewOTel(cfg OTelConfig) (*OTel, error) {
	if cfg.MeterProvider == nil {
		cfg.MeterProvider = otel.GetMeterProvider()
	}
	if cfg.TracerProvider == nil {
		cfg.TracerProvider = otel.GetTracerProvider()
	}
	if cfg.Propagator == nil {
		cfg.Propagator = propagation.TraceContext{}
	}
	h := &OTel{cfg: cfg, meter: cfg.MeterProvider.Meter(ScopeName), tracer: cfg.TracerProvider.Tracer(ScopeName)}
	var errs []error
	add := func(err error) { errs = append(errs, err) }
	var err error
	h.published, err = h.meter.Int64Counter("outbox.published", metric.WithDescription("Messages the broker took."), metric.WithUnit("{message}"))
	add(err)
	h.retried, err = h.meter.Int64Counter("outbox.retried", metric.WithDescription("Failed publications that will be retried."), metric.WithUnit("{message}"))
	add(err)
	h.dead, err = h.meter.Int64Counter("outbox.dead_lettered", metric.WithDescription("Messages dead-lettered."), metric.WithUnit("{message}"))
	add(err)
	h.acks, err = h.meter.Int64Counter("outbox.acks", metric.WithDescription("Consumers' answers applied to outbox rows."), metric.WithUnit("{answer}"))
	add(err)
	h.publishDuration, err = h.meter.Float64Histogram("outbox.publish.duration", metric.WithDescription("Duration of the Publish call that sent the message."), metric.WithUnit("s"))
	add(err)
	h.lag, err = h.meter.Float64Histogram("outbox.lag", metric.WithDescription("Time from the event's capture to the broker's acknowledgement."), metric.WithUnit("s"))
	add(err)
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("hooks: OpenTelemetry instruments: %w", err)
	}
	return h, nil
}

// Observe reports outbox.pending, outbox.awaiting_ack, outbox.failed,
// outbox.dead, outbox.blocked and outbox.oldest_pending_age of relay's
// table at each metric collection (five GROUP BY queries, each through the
// index of its state:
// published rows that wait for nothing are not read). Call it once per table.
func (h *OTel) Observe(relay *gormoutbox.Relay) error {
	gauges := []struct {
		name, desc string
		value      func(gormoutbox.Stats) int64
	}{
		{"outbox.pending", "Rows neither published nor dead.", func(s gormoutbox.Stats) int64 { return s.Pending }},
		{"outbox.dead", "Dead-lettered rows.", func(s gormoutbox.Stats) int64 { return s.Dead }},
		{"outbox.blocked", "Pending rows held back behind a dead row of their key.", func(s gormoutbox.Stats) int64 { return s.Blocked }},
		{"outbox.awaiting_ack", "Published rows waiting for a consumer's answer.", func(s gormoutbox.Stats) int64 { return s.Awaiting }},
		{"outbox.failed", "Rows whose last process attempt failed.", func(s gormoutbox.Stats) int64 { return s.Failed }},
	}
	insts := make([]metric.Int64ObservableGauge, len(gauges))
	obs := make([]metric.Observable, 0, len(gauges)+1)
	for i, g := range gauges {
		gauge, err := h.meter.Int64ObservableGauge(g.name, metric.WithDescription(g.desc), metric.WithUnit("{row}"))
		if err != nil {
			return err
		}
		insts[i] = gauge
		obs = append(obs, gauge)
	}
	oldest, err := h.meter.Float64ObservableGauge("outbox.oldest_pending_age", metric.WithDescription("Age of the oldest pending row."), metric.WithUnit("s"))
	if err != nil {
		return err
	}
	obs = append(obs, oldest)
	reg, err := h.meter.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		stats, err := relay.TopicStats(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		for topic, s := range stats {
			attrs := metric.WithAttributes(attribute.String(attrTopic, topic))
			for i, g := range gauges {
				o.ObserveInt64(insts[i], g.value(s), attrs)
			}
			age := 0.0
			if !s.OldestPending.IsZero() {
				age = now.Sub(s.OldestPending).Seconds()
			}
			o.ObserveFloat64(oldest, age, attrs)
		}
		return nil
	}, obs...)
	if err != nil {
		return err
	}
	h.keep(reg)
	return nil
}

// ObserveInbox reports the counters of an inbox consumer at each metric
// collection, with the attribute "messaging.consumer.group.name":
// inbox.handled (messages whose handler committed), inbox.duplicates
// (redeliveries skipped), inbox.retries (handler failures tried again),
// inbox.parked (messages parked as dead letters: alert on any). Call it
// once per consumer.
func (h *OTel) ObserveInbox(c *inbox.Consumer) error {
	names := []struct{ name, desc string }{
		{"inbox.handled", "Messages whose handler's transaction committed."},
		{"inbox.duplicates", "Redelivered messages skipped."},
		{"inbox.retries", "Handler failures that were tried again."},
		{"inbox.parked", "Messages parked as dead letters after repeated handler failures."},
	}
	insts := make([]metric.Int64ObservableCounter, len(names))
	obs := make([]metric.Observable, len(names))
	for i, n := range names {
		ctr, err := h.meter.Int64ObservableCounter(n.name, metric.WithDescription(n.desc), metric.WithUnit("{message}"))
		if err != nil {
			return err
		}
		insts[i], obs[i] = ctr, ctr
	}
	attrs := metric.WithAttributes(attribute.String("messaging.consumer.group.name", c.GroupID()))
	reg, err := h.meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := c.Stats()
		for i, v := range []int64{s.Handled, s.Duplicates, s.Retries, s.Parked} {
			o.ObserveInt64(insts[i], v, attrs)
		}
		return nil
	}, obs...)
	if err != nil {
		return err
	}
	h.keep(reg)
	return nil
}

// headerCarrier reads a message's headers as a propagation carrier.
type headerCarrier []gormoutbox.Header

func (c headerCarrier) Get(key string) string {
	for _, h := range c {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
func (c headerCarrier) Set(string, string) {}
func (c headerCarrier) Keys() []string {
	out := make([]string, len(c))
	for i, h := range c {
		out[i] = h.Key
	}
	return out
}

// BeforePublish implements gormoutbox.Hook: it starts the message's span.
func (h *OTel) BeforePublish(ctx context.Context, m *gormoutbox.Message) error {
	opts := []trace.SpanStartOption{
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithAttributes(
			attribute.String("messaging.system", "kafka"),
			attribute.String(attrTopic, m.Topic),
			attribute.String("messaging.message.id", m.EventID),
			attribute.Int64("outbox.id", m.ID),
			attribute.Int("outbox.attempts", m.Attempts),
		),
	}
	if sc := trace.SpanContextFromContext(h.cfg.Propagator.Extract(context.Background(), headerCarrier(m.Headers))); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	_, span := h.tracer.Start(ctx, "publish "+m.Topic, opts...)
	h.spans.Store(m.ID, span)
	return nil
}

func (h *OTel) end(m *gormoutbox.Message, err error) {
	v, ok := h.spans.LoadAndDelete(m.ID)
	if !ok {
		return
	}
	span := v.(trace.Span)
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// AfterPublish implements gormoutbox.Hook.
func (h *OTel) AfterPublish(ctx context.Context, m *gormoutbox.Message, took time.Duration) {
	attrs := metric.WithAttributes(attribute.String(attrTopic, m.Topic))
	h.published.Add(ctx, 1, attrs)
	h.publishDuration.Record(ctx, took.Seconds(), attrs)
	if !m.CreatedAt.IsZero() {
		h.lag.Record(ctx, time.Since(m.CreatedAt).Seconds(), attrs)
	}
	h.end(m, nil)
}

// OnError implements gormoutbox.Hook.
func (h *OTel) OnError(ctx context.Context, m *gormoutbox.Message, err error, _ int) {
	if !errors.Is(err, gormoutbox.ErrHeldBack) {
		h.retried.Add(ctx, 1, metric.WithAttributes(attribute.String(attrTopic, m.Topic)))
	}
	h.end(m, err)
}

// OnDeadLetter implements gormoutbox.Hook.
func (h *OTel) OnDeadLetter(ctx context.Context, m *gormoutbox.Message, err error, _ int) {
	h.dead.Add(ctx, 1, metric.WithAttributes(attribute.String(attrTopic, m.Topic)))
	h.end(m, err)
}

// Close unregisters the callbacks Observe registered.
func (h *OTel) Close() error {
	h.registrationsMu.Lock()
	defer h.registrationsMu.Unlock()
	var errs []error
	for _, r := range h.registrations {
		errs = append(errs, r.Unregister())
	}
	h.registrations = nil
	return errors.Join(errs...)
}

// OnAck implements gormoutbox.AckHook.
func (h *OTel) OnAck(ctx context.Context, r gormoutbox.AckResult) {
	h.acks.Add(ctx, 1, metric.WithAttributes(attribute.String(attrTopic, r.Topic), attribute.String("outcome", r.Outcome.String())))
}

// keep remembers reg for Close.
func (h *OTel) keep(reg metric.Registration) {
	h.registrationsMu.Lock()
	h.registrations = append(h.registrations, reg)
	h.registrationsMu.Unlock()
}
