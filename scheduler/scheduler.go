package scheduler

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/robfig/cron/v3"
)

// JobFunc is one pass of a job.
//
// ctx is cancelled when the scheduler stops; a job should then finish the
// batch it has in flight and return. A returned error is logged at error
// level (context.Canceled returned after Stop only at info level) and the job
// stays scheduled.
type JobFunc func(ctx context.Context) error

// Config configures a [Scheduler]. The zero value is ready to use.
type Config struct {
	// Logger receives the scheduler's logs: failed and panicking passes at
	// error level, skipped ticks and finished passes at debug level.
	// Default slog.Default().
	Logger *slog.Logger

	// Location is the time zone cron specs are read in, unless a spec starts
	// with "CRON_TZ=<zone> ". Default time.UTC.
	Location *time.Location
}

// JobStats are counters of one job since [New].
type JobStats struct {
	// Runs counts the passes started, by the schedule or by RunNow.
	Runs int64
	// Skipped counts the ticks and RunNow calls dropped because a pass of
	// the job was still running.
	Skipped int64
	// Failures counts the passes that returned an error.
	Failures int64
	// Panics counts the passes that panicked.
	Panics int64
	// Running reports whether a pass is in flight.
	Running bool
	// Next is the time of the next scheduled pass; zero before Start, after
	// Stop, or if the schedule never fires again.
	Next time.Time
}

// Scheduler runs named jobs on cron schedules; see the package documentation.
// Create it with [New]. Its methods are safe for concurrent use.
type Scheduler struct {
	log    *slog.Logger
	loc    *time.Location
	parser cron.Parser
	cron   *cron.Cron

	ctx    context.Context // parent of every pass's context; Stop cancels it
	cancel context.CancelFunc

	mu      sync.Mutex
	jobs    map[string]*entry
	started bool
	stopped bool
	passes  sync.WaitGroup // passes in flight; Add only under mu while !stopped

	stopOnce sync.Once
	drained  chan struct{} // closed once Stop has been called and passes is zero
}

// entry is a registered job. Its mutable fields are guarded by Scheduler.mu.
type entry struct {
	name  string
	spec  string
	fn    JobFunc
	id    cron.EntryID
	stats JobStats // Running and Next unused
	busy  bool     // a pass is in flight
	again bool     // Wake was called during the pass: run once more after it
}

// trigger says what started a pass, for the logs.
type trigger string

const (
	bySchedule trigger = "schedule"
	byRunNow   trigger = "run_now"
	byWake     trigger = "wake"
)

// New returns a scheduler configured by cfg. It runs nothing until
// [Scheduler.Start] (or [Scheduler.RunNow]).
func New(cfg Config) *Scheduler {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Location == nil {
		cfg.Location = time.UTC
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Scheduler{
		log: cfg.Logger,
		loc: cfg.Location,
		parser: cron.NewParser(cron.SecondOptional | cron.Minute | cron.Hour |
			cron.Dom | cron.Month | cron.Dow | cron.Descriptor),
		ctx:     ctx,
		cancel:  cancel,
		jobs:    make(map[string]*entry),
		drained: make(chan struct{}),
	}
	// No cron.WithChain: overlap, panics and logging are handled in run,
	// where they also cover RunNow.
	s.cron = cron.New(
		cron.WithLocation(cfg.Location),
		cron.WithParser(s.parser),
		cron.WithLogger(cronLogger{s.log}),
	)
	return s
}

// Add registers job under a unique, non-empty name with a cron spec: 5 fields
// (minute first), 6 fields with a leading seconds field, or a descriptor such
// as "@hourly" or "@every 2s". A spec that does not parse, or that never
// fires, is an error wrapping [ErrInvalidSpec]; a name already registered is
// an error wrapping [ErrDuplicateJob]. Jobs may be added before or after
// [Scheduler.Start], but not after [Scheduler.Stop] ([ErrStopped]).
func (s *Scheduler) Add(name, spec string, job JobFunc) error {
	if name == "" {
		return fmt.Errorf("%w: empty name (spec %q)", ErrInvalidJob, spec)
	}
	if job == nil {
		return fmt.Errorf("%w: job %q: nil JobFunc", ErrInvalidJob, name)
	}
	sched, err := s.parse(spec)
	if err != nil {
		return fmt.Errorf("%w: job %q, spec %q: %v", ErrInvalidSpec, name, spec, err)
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return fmt.Errorf("%w: cannot add job %q", ErrStopped, name)
	}
	if prev, ok := s.jobs[name]; ok {
		return fmt.Errorf("%w: job %q (spec %q) is already added with spec %q",
			ErrDuplicateJob, name, spec, prev.spec)
	}
	j := &entry{name: name, spec: spec, fn: job}
	// Schedule hands the entry to cron's loop when it is running; that loop
	// never takes s.mu, so holding it here cannot deadlock.
	j.id = s.cron.Schedule(sched, cron.FuncJob(func() {
		if s.begin(j, bySchedule) {
			s.run(j, bySchedule)
		}
	}))
	s.jobs[name] = j
	return nil
}

// parse parses spec and checks that it fires at least once in the next five
// years (cron's search limit).
func (s *Scheduler) parse(spec string) (sched cron.Schedule, err error) {
	// cron v3.0.1's parser panics on a "TZ=<zone>" prefix without a space
	// after it (slice bounds out of range).
	defer func() {
		if r := recover(); r != nil {
			sched, err = nil, fmt.Errorf("cron parser: %v", r)
		}
	}()
	sched, err = s.parser.Parse(spec)
	if err != nil {
		return nil, err
	}
	if sched.Next(time.Now().In(s.loc)).IsZero() {
		return nil, errors.New("schedule never fires")
	}
	return sched, nil
}

// Start starts running jobs on their schedules. It returns at once; it does
// nothing if the scheduler is already started or stopped.
func (s *Scheduler) Start() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return
	}
	s.started = true
	s.cron.Start()
}

// Stop stops the schedule, cancels the context of the passes in flight and
// waits for them to return. If ctx is done first, Stop returns an error
// wrapping ctx.Err() that names the jobs still running; they keep running in
// the background, and a later Stop call waits for them again.
//
// Stop is idempotent and safe to call without Start. After Stop no pass
// starts and the scheduler cannot be restarted.
func (s *Scheduler) Stop(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.stopped = true // from here on begin refuses, so passes only drains
		started := s.started
		s.mu.Unlock()
		if started {
			// cron's Stop returns a context that is done when the cron
			// goroutines finish; those are our passes, which passes tracks
			// together with RunNow's, so it is not needed.
			s.cron.Stop()
		}
		s.cancel()
		go func() {
			s.passes.Wait()
			close(s.drained)
		}()
	})

	select {
	case <-s.drained:
		return nil
	default:
	}
	select {
	case <-s.drained:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		var names []string
		for _, j := range s.jobs {
			if j.busy {
				names = append(names, strconv.Quote(j.name))
			}
		}
		s.mu.Unlock()
		if len(names) == 0 { // passes returned but are still logging
			return fmt.Errorf("scheduler: stop: passes still finishing: %w", ctx.Err())
		}
		slices.Sort(names)
		return fmt.Errorf("scheduler: stop: jobs still running: %s: %w",
			strings.Join(names, ", "), ctx.Err())
	}
}

// RunNow starts one pass of the named job now, in its own goroutine, unless
// a pass of that job is already running: then the call is skipped (counted
// and logged like a skipped tick) so passes never overlap. It works before
// [Scheduler.Start] too. It returns an error wrapping [ErrUnknownJob] for a
// name never added and [ErrStopped] after [Scheduler.Stop].
func (s *Scheduler) RunNow(name string) error {
	s.mu.Lock()
	j, ok := s.jobs[name]
	s.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownJob, name)
	}
	if !s.begin(j, byRunNow) {
		if s.isStopped() {
			return fmt.Errorf("%w: cannot run job %q", ErrStopped, name)
		}
		return nil // skipped: a pass is running
	}
	go s.run(j, byRunNow)
	return nil
}

// Wake asks for a pass of the named job soon, for work that has just
// arrived (an outbox commit, say): it starts one now, or, when a pass is
// running, one more right after it — that pass may have looked before the
// work arrived. Any number of Wake calls during a pass cost one more pass,
// never overlapping. It returns an error wrapping [ErrUnknownJob] for a
// name never added and [ErrStopped] after [Scheduler.Stop].
func (s *Scheduler) Wake(name string) error {
	s.mu.Lock()
	j, ok := s.jobs[name]
	if !ok {
		s.mu.Unlock()
		return fmt.Errorf("%w: %q", ErrUnknownJob, name)
	}
	if s.stopped {
		s.mu.Unlock()
		return fmt.Errorf("%w: cannot wake job %q", ErrStopped, name)
	}
	if j.busy {
		j.again = true
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	if s.begin(j, byWake) {
		go s.run(j, byWake)
	}
	return nil
}

// Stats returns the counters of the named job, and false if no job has that
// name.
func (s *Scheduler) Stats(name string) (JobStats, bool) {
	s.mu.Lock()
	j, ok := s.jobs[name]
	if !ok {
		s.mu.Unlock()
		return JobStats{}, false
	}
	st := j.stats
	st.Running = j.busy
	running := s.started && !s.stopped
	s.mu.Unlock()

	if running {
		// Entry asks cron's loop for a snapshot; not under s.mu.
		st.Next = s.cron.Entry(j.id).Next
	}
	return st, true
}

func (s *Scheduler) isStopped() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopped
}

// begin reserves a pass of j. It reports false, starting nothing, if the
// scheduler is stopped or a pass of j is in flight (a skip, counted and
// logged). When it reports true the caller must call run.
func (s *Scheduler) begin(j *entry, by trigger) bool {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return false
	}
	if j.busy {
		j.stats.Skipped++
		s.mu.Unlock()
		s.log.Debug("scheduler: pass skipped, previous pass still running",
			"job", j.name, "trigger", string(by))
		return false
	}
	j.busy = true
	j.stats.Runs++
	s.passes.Add(1)
	s.mu.Unlock()
	return true
}

// run runs the pass of j reserved by begin, recovering a panic, and releases
// it.
func (s *Scheduler) run(j *entry, by trigger) {
	start := time.Now()
	ctx, cancel := context.WithCancel(s.ctx)
	var err error
	defer func() {
		r := recover()
		cancel()
		elapsed := time.Since(start)
		s.mu.Lock()
		switch {
		case r != nil:
			j.stats.Panics++
		case err != nil:
			j.stats.Failures++
		}
		s.mu.Unlock()

		// Log before the pass counts as done, so that the logs of every pass
		// are written when Stop returns.
		switch {
		case r != nil:
			s.log.Error("scheduler: pass panicked", "job", j.name, "trigger", string(by),
				"panic", r, "duration", elapsed, "stack", string(debug.Stack()))
		case err != nil && errors.Is(err, context.Canceled) && s.ctx.Err() != nil:
			s.log.Info("scheduler: pass cancelled by stop", "job", j.name,
				"trigger", string(by), "duration", elapsed, "error", err)
		case err != nil:
			s.log.Error("scheduler: pass failed", "job", j.name, "trigger", string(by),
				"duration", elapsed, "error", err)
		default:
			s.log.Debug("scheduler: pass done", "job", j.name, "trigger", string(by),
				"duration", elapsed)
		}

		s.mu.Lock()
		j.busy = false
		again := j.again && !s.stopped
		j.again = false
		s.mu.Unlock()
		if again && s.begin(j, byWake) {
			go s.run(j, byWake) // reserved before this pass counts as done
		}
		s.passes.Done()
	}()
	err = j.fn(ctx)
}

// cronLogger adapts cron.Logger to slog. cron's info messages (every wake-up
// and entry run, by entry id) are dropped; errors are kept, though without a
// cron.Recover wrapper cron reports none.
type cronLogger struct{ log *slog.Logger }

func (cronLogger) Info(string, ...any) {}

func (l cronLogger) Error(err error, msg string, keysAndValues ...any) {
	l.log.Error("scheduler: cron: "+msg, append([]any{"error", err}, keysAndValues...)...)
}
