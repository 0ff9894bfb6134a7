// Package ack closes the loop between a producing and a consuming service:
// the consumer answers SUCCESS or FAILED for each event it processes, and
// the producer's outbox row moves from published to processed, or is sent
// again after a failure until its process attempts run out, when hooks
// hear of it (hooks.Slog logs the notification for the team).
//
// The producer asks for answers per model (the "ack" tag setting) or per
// event (gormoutbox.Event.AckTopic); those events carry the
// "ack-topic" and "process-attempt" headers.
//
// Consuming side, inside an inbox handler:
//
//	func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
//		if err := apply(tx, m); err != nil {
//			return ack.Reply(tx, m, gormoutbox.AckFailed, err.Error())
//		}
//		return ack.Reply(tx, m, gormoutbox.AckSuccess, "")
//	}
//
// The answer is an event written through the consumer's own outbox in the
// handler's transaction, so it is sent if and only if the handler's writes
// commit. Producing side, an inbox consumer of the answers:
//
//	t := ack.NewTracker(ack.Config{MaxAttempts: 3, Hooks: []gormoutbox.AckHook{hooks.Slog(logger)}})
//	c, err := inbox.New(db, t.Handle, inbox.Config{GroupID: "products-acks", Topics: []string{"inventory-acks"}, ...})
package ack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/inbox"
)

// HeaderAckFor carries, on an acknowledgement, the id of the event
// answered.
const HeaderAckFor = "ack-for"

// Reply answers m: it writes an acknowledgement event (type
// gormoutbox.AckEventType, key the message's key, JSON gormoutbox.Ack) to
// the topic m's "ack-topic" header names, through the outbox of tx's
// database, in tx. The consumer's name is its group; reason says why
// processing failed. Undo the failed processing's own writes before
// answering FAILED (run it in a nested tx.Transaction), or they commit
// with the answer.
//
// A message that asks for no answer is ErrNoAckTopic; use Requested to
// answer only when asked.
func Reply(tx *gorm.DB, m *inbox.Message, status gormoutbox.AckStatus, reason string) error {
	topic := m.Header(gormoutbox.HeaderAckTopic)
	if topic == "" {
		return fmt.Errorf("%w: %s", ErrNoAckTopic, m.EventID)
	}
	id := m.Header(gormoutbox.HeaderEventID)
	attempt := 1
	if v := m.Header(gormoutbox.HeaderProcessAttempt); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return fmt.Errorf("ack: message %s has process-attempt %q, not a positive integer", id, v)
		}
		attempt = n
	}
	return gormoutbox.Publish(tx, gormoutbox.Event{
		Topic:   topic,
		Key:     string(m.Key),
		Type:    gormoutbox.AckEventType,
		Payload: gormoutbox.Ack{EventID: id, Status: status, Attempt: attempt, Consumer: m.Consumer, Reason: reason},
		Headers: map[string]string{HeaderAckFor: id},
	})
}

// Requested reports whether m asks for an answer.
func Requested(m *inbox.Message) bool { return m.Header(gormoutbox.HeaderAckTopic) != "" }

// Config configures a Tracker.
type Config struct {
	// MaxAttempts bounds the process attempts of an event: a FAILED answer
	// to attempt MaxAttempts marks it failed (and notifies the hooks);
	// earlier ones send it again. Default 3.
	MaxAttempts int
	// Hooks hear of every answer applied (hooks.Slog, hooks.OTel): each
	// gets OnAck after the answer's transaction commits.
	Hooks []gormoutbox.AckHook
	// Logger receives answers that are ignored (unknown events, stale
	// attempts). Default slog.Default().
	Logger *slog.Logger
	// Timeout, when set, is how long Expire lets a published event wait
	// for its answer before counting the attempt as failed: the event is
	// sent again, or marked failed (and the hooks notified) after the
	// last attempt. Zero: Expire does nothing; an event that is never
	// answered waits for ever (visible as awaiting ack).
	Timeout time.Duration
	// Now is Expire's clock (tests). Default time.Now.
	Now func() time.Time
}

// Tracker applies answers to the outbox of the producing service.
type Tracker struct {
	cfg   Config
	hooks []gormoutbox.AckHook
}

// NewTracker returns a Tracker; use its Handle as an inbox.Handler of the
// acknowledgement topics, on the database whose outbox sent the events.
func NewTracker(cfg Config) *Tracker {
	if cfg.MaxAttempts <= 0 {
		cfg.MaxAttempts = 3
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &Tracker{cfg: cfg}
	for _, h := range cfg.Hooks {
		if h != nil {
			t.hooks = append(t.hooks, h)
		}
	}
	return t
}

// Handle is an inbox.Handler: it applies the answer m carries with
// gormoutbox.Acknowledge. A message that is not an answer, or cannot be
// parsed, is an error (retried, then parked by the inbox: never dropped).
func (t *Tracker) Handle(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
	var a gormoutbox.Ack
	if err := json.Unmarshal(m.Value, &a); err != nil {
		return fmt.Errorf("ack: message %s at %s/%d/%d is not an acknowledgement: %w",
			m.EventID, m.Topic, m.Partition, m.Offset, err)
	}
	r, err := gormoutbox.Acknowledge(tx, a, t.cfg.MaxAttempts)
	if errors.Is(err, gormoutbox.ErrUnknownEvent) {
		t.cfg.Logger.Warn("ack: answer to an event this outbox does not have (cleaned up, or another service's)",
			"event_id", a.EventID, "status", a.Status, "consumer", a.Consumer)
		r.Why = "unknown event"
		err = nil
	}
	if err != nil {
		return err
	}
	if r.Outcome == gormoutbox.AckIgnored && r.Why != "unknown event" {
		t.cfg.Logger.Debug("ack: answer ignored", "event_id", a.EventID, "status", a.Status, "why", r.Why)
	}
	if len(t.hooks) == 0 {
		return nil
	}
	return inbox.OnCommit(tx, func() {
		for _, h := range t.hooks {
			h.OnAck(ctx, r)
		}
	})
}

// Expire treats the events of db's outbox that have waited longer than
// Config.Timeout for an answer as FAILED ("no answer within …"), each in a
// transaction of its own: sent again with the next process attempt, or
// failed after the last one, with the hooks notified after the commit. An
// answer that arrives meanwhile wins or is ignored as stale, whichever
// commits first. It returns how many events it expired. Schedule it, e.g.
// every Timeout/2:
//
//	s.Add("ack-timeout", "@every 1m", func(ctx context.Context) error { _, err := t.Expire(ctx, db); return err })
func (t *Tracker) Expire(ctx context.Context, db *gorm.DB) (int, error) {
	if t.cfg.Timeout <= 0 {
		return 0, nil
	}
	reason := "no answer within " + t.cfg.Timeout.String()
	n := 0
	for ctx.Err() == nil {
		list, err := gormoutbox.ListUnanswered(ctx, db, t.cfg.Now().Add(-t.cfg.Timeout), 100)
		if err != nil {
			return n, err
		}
		for _, u := range list {
			var r gormoutbox.AckResult
			err := db.WithContext(ctx).Transaction(func(tx *gorm.DB) error {
				var err error
				r, err = gormoutbox.Acknowledge(tx, gormoutbox.Ack{EventID: u.EventID, Status: gormoutbox.AckFailed,
					Attempt: u.Attempt, Reason: reason}, t.cfg.MaxAttempts)
				return err
			})
			if errors.Is(err, gormoutbox.ErrUnknownEvent) {
				continue // cleaned up meanwhile
			}
			if err != nil {
				return n, fmt.Errorf("ack: expire %s: %w", u.EventID, err)
			}
			if r.Outcome == gormoutbox.AckIgnored {
				continue // answered meanwhile
			}
			n++
			for _, h := range t.hooks {
				h.OnAck(ctx, r)
			}
		}
		if len(list) < 100 {
			break
		}
	}
	return n, ctx.Err()
}
