// Package hooks holds ready-made lifecycle hooks for the outbox relay
// (gormoutbox.Hook): structured logging with log/slog. The hook interface
// lives in gormoutbox, where it is consumed; OpenTelemetry metrics and
// tracing arrive with step 4 of the roadmap (docs/architecture.md).
//
//	relay, err := gormoutbox.NewRelay(db, pub, gormoutbox.RelayConfig{
//		Hooks: []gormoutbox.Hook{hooks.Slog(logger)},
//	})
package hooks
