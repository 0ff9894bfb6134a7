// Package scheduler runs jobs, such as the outbox relay and its cleanup, on
// cron schedules (github.com/robfig/cron/v3).
//
// A [Scheduler] holds named jobs, each a [JobFunc] with a cron spec:
//
//	s := scheduler.New(scheduler.Config{Logger: logger})
//	if err := s.Add("relay", "*/2 * * * * *", relay.RunOnce); err != nil {
//		return err
//	}
//	if err := s.Add("cleanup", "@hourly", cleanup.RunOnce); err != nil {
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
//     logged at debug level. Different jobs run concurrently.
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
// The package does not depend on the rest of the module: any
// func(context.Context) error can be scheduled.
package scheduler
