// Package scheduler runs the outbox relay and its cleanup on cron schedules
// (github.com/robfig/cron/v3): passes never overlap, each tick drains the
// backlog within a time budget, and Stop waits for the batch in flight.
//
// It arrives with the relay (step 2 of the roadmap in docs/architecture.md);
// this package holds no code yet.
package scheduler
