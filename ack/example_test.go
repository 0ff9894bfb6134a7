package ack_test

import (
	"context"
	"log/slog"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/ack"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/hooks"
	"github.com/go-outbox/outbox/inbox"
)

// The consuming service answers every event that asks for it, from its
// inbox handler: the answer is written through its own outbox in the
// handler's transaction.
func ExampleReply() {
	var apply func(tx *gorm.DB, m *inbox.Message) error // your processing

	handler := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
		if !ack.Requested(m) {
			return apply(tx, m)
		}
		if err := tx.Transaction(func(tx *gorm.DB) error { return apply(tx, m) }); err != nil {
			return ack.Reply(tx, m, gormoutbox.AckFailed, err.Error())
		}
		return ack.Reply(tx, m, gormoutbox.AckSuccess, "")
	}
	_ = handler
}

// The producing service applies the answers to its outbox with a Tracker
// run by an inbox of its own.
func ExampleNewTracker() {
	var db *gorm.DB // the producing service's database, with the gormoutbox plugin
	if db == nil {
		return
	}
	t := ack.NewTracker(ack.Config{
		MaxAttempts: 3,
		Hooks:       []gormoutbox.AckHook{hooks.Slog(slog.Default())},
	})
	c, err := inbox.New(db, t.Handle, inbox.Config{
		Brokers: []string{"kafka:9092"}, GroupID: "products-acks", Topics: []string{"inventory-acks"},
	})
	if err != nil {
		return
	}
	_ = c.Run(context.Background())
}
