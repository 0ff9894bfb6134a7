// Package hooks holds ready-made lifecycle hooks for the outbox relay:
// structured logging with log/slog, and OpenTelemetry metrics and tracing.
// The hook interfaces live in gormoutbox, where they are consumed.
//
// It arrives with step 4 of the roadmap in docs/architecture.md; this
// package holds no code yet.
package hooks
