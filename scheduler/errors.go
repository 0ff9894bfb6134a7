package scheduler

import "errors"

// Errors returned by the [Scheduler]; test for them with [errors.Is].
var (
	// ErrInvalidSpec is returned by [Scheduler.Add] for a cron spec that does
	// not parse or that never fires.
	ErrInvalidSpec = errors.New("scheduler: invalid cron spec")

	// ErrDuplicateJob is returned by [Scheduler.Add] for a name already taken.
	ErrDuplicateJob = errors.New("scheduler: duplicate job name")

	// ErrInvalidJob is returned by [Scheduler.Add] for an empty name or a nil
	// [JobFunc].
	ErrInvalidJob = errors.New("scheduler: invalid job")

	// ErrUnknownJob is returned for a name that no [Scheduler.Add] registered.
	ErrUnknownJob = errors.New("scheduler: unknown job")

	// ErrStopped is returned by [Scheduler.Add] and [Scheduler.RunNow] once
	// [Scheduler.Stop] has been called.
	ErrStopped = errors.New("scheduler: stopped")
)
