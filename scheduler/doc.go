// Package scheduler runs jobs, such as the outbox relay and its cleanup, on
// cron schedules (github.com/robfig/cron/v3).
//
// A [Scheduler] holds named jobs, each a [JobFunc] with a cron spec:
//
//	s := scheduler.New(scheduler.Config{Logger: logger})
//	if err := s.Add("relay", "*/1 * * * * *", scheduler.RelayJob(relay)); err != nil {
//		return err
//	}
//	if err := s.Add("cleanup", "@hourly", scheduler.CleanupJob(relay, 24*time.Hour)); err != nil {
//		return err
//	}
//	s.Start()
//	<-ctx.Done() // e.g. from signal.NotifyContext
//	stopCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
//	defer cancel()
//	return s.Stop(stopCtx) // cancels the passes' context, waits for them
//
// Guarantees:
//
//   - Passes of one job never overlap: a tick (or a [Scheduler.RunNow] call)
//     that comes while a pass of the same job is running is skipped, and
//     logged at debug level. [Scheduler.Wake] instead runs one more pass
//     after the running one (wake-ups for new work coalesce). Different
//     jobs run concurrently.
//   - A pass that panics is recovered and logged at error level with its stack;
//     a pass that returns an error is logged at error level. Either way the
//     job stays scheduled.
//   - Each pass gets a context that [Scheduler.Stop] cancels; Stop then waits
//     for the passes in flight to return, so a job should finish the batch it
//     has in hand and return promptly once its context is done.
//
// Specs have 5 fields (minute, hour, day of month, month, day of week), or 6
// with a leading seconds field, or are descriptors such as "@hourly",
// "@daily" or "@every 30s" (durations under a second round up to one second).
// They are read in [Config.Location] (UTC by default) unless they start with
// "CRON_TZ=<zone> " or "TZ=<zone> ". Cron fires at most once a second and
// never catches up on ticks missed while the process was down or busy.
//
// Any func(context.Context) error can be scheduled; [RelayJob] and
// [CleanupJob] adapt a *gormoutbox.Relay.
package scheduler
