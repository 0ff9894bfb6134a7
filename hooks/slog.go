package hooks

import (
	"context"
	"log/slog"
	"time"

	"github.com/go-outbox/outbox/gormoutbox"
)

// Slog returns a hook that logs the relay's work with l: each message
// published at debug level, each failed attempt at warn, each dead letter
// at error. It logs ids, topic, event type and attempts — never keys,
// payloads or header values, which may hold personal data.
func Slog(l *slog.Logger) gormoutbox.Hook {
	if l == nil {
		l = slog.Default()
	}
	return slogHook{l: l}
}

type slogHook struct {
	gormoutbox.HookBase
	l *slog.Logger
}

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

func (h slogHook) AfterPublish(ctx context.Context, m *gormoutbox.Message, took time.Duration) {
	if h.l.Enabled(ctx, slog.LevelDebug) {
		h.l.DebugContext(ctx, "outbox: published", append(attrs(m), "publish_took", took,
			"lag", time.Since(m.CreatedAt))...)
	}
}

func (h slogHook) OnError(ctx context.Context, m *gormoutbox.Message, err error, attempt int) {
	h.l.WarnContext(ctx, "outbox: publish failed, will retry", append(attrs(m), "attempt", attempt, "error", err)...)
}

func (h slogHook) OnDeadLetter(ctx context.Context, m *gormoutbox.Message, err error, attempts int) {
	h.l.ErrorContext(ctx, "outbox: dead-lettered", append(attrs(m), "attempts", attempts, "error", err)...)
}
