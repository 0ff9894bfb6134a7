// Package hooks holds ready-made lifecycle hooks for the outbox relay
// (gormoutbox.Hook): structured logging with log/slog (Slog), and
// OpenTelemetry metrics and tracing (NewOTel). The hook interface lives in
// gormoutbox, where it is consumed.
//
//	otelHook, err := hooks.NewOTel(hooks.OTelConfig{}) // global providers
//	relay, err := gormoutbox.NewRelay(db, pub, gormoutbox.RelayConfig{
//		Hooks: []gormoutbox.Hook{hooks.Slog(logger), otelHook},
//	})
//	err = otelHook.Observe(relay) // pending rows and oldest age per topic
package hooks
