package hooks

import (
	"context"
	"log/slog"
	"time"

	"github.com/go-outbox/outbox/gormoutbox"
)

// Slog returns a hook that logs the relay's work with l: each message
// published at debug level, each failed attempt at warn, each dead letter
// at error. As a gormoutbox.AckHook (ack.Config.Hooks) it logs answers:
// processed at debug, re-sent at warn, and an event whose last process
// attempt failed at error, as the notification for the team ("outbox:
// event could not be processed; notify the team"). It logs ids, topic, event type and attempts — never keys,
// payloads or header values, which may hold personal data.
func Slog(l *slog.Logger) SlogHook {
	if l == nil {
		l = slog.Default()
	}
	return SlogHook{l: l}
}

// SlogHook is the hook Slog returns: a gormoutbox.Hook of the relay
// (RelayConfig.Hooks) and a gormoutbox.AckHook of the tracker
// (ack.Config.Hooks).
type SlogHook struct {
	gormoutbox.HookBase
	l *slog.Logger
}

var (
	_ gormoutbox.Hook    = SlogHook{}
	_ gormoutbox.AckHook = SlogHook{}
	_ gormoutbox.Hook    = (*OTel)(nil)
	_ gormoutbox.AckHook = (*OTel)(nil)
)

func attrs(m *gormoutbox.Message) []any {
	typ := ""
	for _, h := range m.Headers {
		if h.Key == gormoutbox.HeaderEventType {
			typ = string(h.Value)
			break
		}
	}
	return []any{"outbox_id", m.ID, "event_id", m.EventID, "topic", m.Topic, "event_type", typ}
}

func (h SlogHook) AfterPublish(ctx context.Context, m *gormoutbox.Message, took time.Duration) {
	if h.l.Enabled(ctx, slog.LevelDebug) {
		h.l.DebugContext(ctx, "outbox: published", append(attrs(m), "publish_took", took,
			"lag", time.Since(m.CreatedAt))...)
	}
}

func (h SlogHook) OnError(ctx context.Context, m *gormoutbox.Message, err error, attempt int) {
	h.l.WarnContext(ctx, "outbox: publish failed, will retry", append(attrs(m), "attempt", attempt, "error", err)...)
}

func (h SlogHook) OnDeadLetter(ctx context.Context, m *gormoutbox.Message, err error, attempts int) {
	h.l.ErrorContext(ctx, "outbox: dead-lettered", append(attrs(m), "attempts", attempts, "error", err)...)
}

// OnAck implements gormoutbox.AckHook.
func (h SlogHook) OnAck(ctx context.Context, r gormoutbox.AckResult) {
	a := []any{"outbox_id", r.ID, "event_id", r.Ack.EventID, "topic", r.Topic, "event_type", r.EventType,
		"aggregate_type", r.AggregateType, "aggregate_id", r.AggregateID, "consumer", r.Ack.Consumer,
		"process_attempt", r.Ack.Attempt}
	switch r.Outcome {
	case gormoutbox.AckGaveUp:
		h.l.ErrorContext(ctx, "outbox: event could not be processed; notify the team",
			append(a, "reason", r.Ack.Reason)...)
	case gormoutbox.AckResent:
		h.l.WarnContext(ctx, "outbox: consumer failed to process event, sending it again",
			append(a, "next_attempt", r.Attempts, "reason", r.Ack.Reason)...)
	case gormoutbox.AckProcessed:
		h.l.DebugContext(ctx, "outbox: event processed", a...)
	default:
		h.l.DebugContext(ctx, "outbox: acknowledgement ignored", append(a, "why", r.Why)...)
	}
}
