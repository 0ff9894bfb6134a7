package scheduler_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-outbox/outbox/scheduler"
)

// everySecond fires at every whole second, cron's finest resolution.
const everySecond = "* * * * * *"

// syncBuffer is a bytes.Buffer safe for concurrent use, for captured logs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newScheduler returns a scheduler logging at debug level into the returned
// buffer, stopped at the end of the test.
func newScheduler(t *testing.T) (*scheduler.Scheduler, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	s := scheduler.New(scheduler.Config{
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := s.Stop(ctx); err != nil {
			t.Errorf("cleanup: Stop: %v", err)
		}
	})
	return s, logs
}

func mustAdd(t *testing.T, s *scheduler.Scheduler, name, spec string, fn scheduler.JobFunc) {
	t.Helper()
	if err := s.Add(name, spec, fn); err != nil {
		t.Fatalf("Add(%q, %q): %v", name, spec, err)
	}
}

func mustStats(t *testing.T, s *scheduler.Scheduler, name string) scheduler.JobStats {
	t.Helper()
	st, ok := s.Stats(name)
	if !ok {
		t.Fatalf("Stats(%q): unknown job", name)
	}
	return st
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func recv(t *testing.T, ch <-chan struct{}, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(timeout):
		t.Fatalf("timed out after %v waiting for %s", timeout, what)
	}
}

// TestNoOverlap runs a job every second whose pass lasts longer than that:
// the ticks and RunNow calls during the pass are skipped, never overlapping.
func TestNoOverlap(t *testing.T) {
	t.Parallel()
	s, logs := newScheduler(t)

	var cur, maxCur atomic.Int32
	started := make(chan struct{}, 10)
	mustAdd(t, s, "slow", everySecond, func(ctx context.Context) error {
		n := cur.Add(1)
		defer cur.Add(-1)
		for {
			m := maxCur.Load()
			if n <= m || maxCur.CompareAndSwap(m, n) {
				break
			}
		}
		started <- struct{}{}
		select { // far longer than the 1s period
		case <-ctx.Done():
		case <-time.After(5 * time.Second):
		}
		return nil
	})
	// RunNow before Start, so that no tick can come first.
	if err := s.RunNow("slow"); err != nil {
		t.Fatalf("RunNow: %v", err)
	}
	recv(t, started, 2*time.Second, "first pass")
	s.Start()

	// Deterministic skip: a pass is in flight.
	if err := s.RunNow("slow"); err != nil {
		t.Fatalf("second RunNow: %v", err)
	}
	if st := mustStats(t, s, "slow"); st.Skipped != 1 || !st.Running {
		t.Fatalf("after RunNow during a pass: stats %+v, want Skipped 1, Running", st)
	}
	// The next whole-second tick falls during the pass.
	waitFor(t, 3*time.Second, "a skipped tick", func() bool { return mustStats(t, s, "slow").Skipped >= 2 })

	stopCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := s.Stop(stopCtx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st := mustStats(t, s, "slow")
	if got := maxCur.Load(); got != 1 {
		t.Errorf("max concurrent passes = %d, want 1", got)
	}
	if st.Runs != 1 || st.Skipped < 2 {
		t.Errorf("stats %+v, want Runs 1 and Skipped >= 2 (RunNow + a tick)", st)
	}
	if out := logs.String(); !strings.Contains(out, "level=DEBUG") ||
		!strings.Contains(out, "pass skipped") || !strings.Contains(out, "job=slow trigger=schedule") {
		t.Errorf("no debug log of a skipped tick naming the job; logs:\n%s", out)
	}
}

// TestDifferentJobsRunConcurrently: each pass waits for the other job's pass
// to start, which only works if they run at the same time.
func TestDifferentJobsRunConcurrently(t *testing.T) {
	t.Parallel()
	s, _ := newScheduler(t)
	var wg sync.WaitGroup
	wg.Add(2)
	both := make(chan struct{})
	go func() { wg.Wait(); close(both) }()
	var met atomic.Int32
	job := func(ctx context.Context) error {
		wg.Done()
		select {
		case <-both:
			met.Add(1)
		case <-time.After(2 * time.Second):
		}
		return nil
	}
	mustAdd(t, s, "a", "@hourly", job)
	mustAdd(t, s, "b", "@hourly", job)
	for _, name := range []string{"a", "b"} {
		if err := s.RunNow(name); err != nil {
			t.Fatalf("RunNow(%q): %v", name, err)
		}
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := met.Load(); got != 2 {
		t.Errorf("%d passes saw the other job running, want 2", got)
	}
}

// TestStopWaitsForBatchInFlight: Stop cancels the pass's context and returns
// only after the pass has finished its batch; no pass starts afterwards.
func TestStopWaitsForBatchInFlight(t *testing.T) {
	t.Parallel()
	s, _ := newScheduler(t)

	started := make(chan struct{}, 1)
	var passes, completed atomic.Int32
	var ctxErr atomic.Value
	mustAdd(t, s, "relay", everySecond, func(ctx context.Context) error {
		passes.Add(1)
		started <- struct{}{}
		<-ctx.Done()
		ctxErr.Store(ctx.Err())
		time.Sleep(300 * time.Millisecond) // finish the batch in flight
		completed.Add(1)
		return nil
	})
	if err := s.RunNow("relay"); err != nil {
		t.Fatalf("RunNow: %v", err)
	}
	recv(t, started, 2*time.Second, "pass")
	s.Start()

	stopCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	begin := time.Now()
	if err := s.Stop(stopCtx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := completed.Load(); got != 1 {
		t.Fatalf("Stop returned with %d completed batches, want 1", got)
	}
	if d := time.Since(begin); d < 300*time.Millisecond {
		t.Errorf("Stop returned after %v, before the 300ms batch", d)
	}
	if err, _ := ctxErr.Load().(error); !errors.Is(err, context.Canceled) {
		t.Errorf("pass ctx.Err() = %v, want context.Canceled", err)
	}

	if err := s.RunNow("relay"); !errors.Is(err, scheduler.ErrStopped) {
		t.Errorf("RunNow after Stop = %v, want ErrStopped", err)
	}
	if err := s.Add("late", everySecond, func(context.Context) error { return nil }); !errors.Is(err, scheduler.ErrStopped) {
		t.Errorf("Add after Stop = %v, want ErrStopped", err)
	}
	s.Start()                           // no restart
	time.Sleep(1200 * time.Millisecond) // at least one whole-second tick
	if got := passes.Load(); got != 1 {
		t.Errorf("%d passes started, want 1 (none after Stop)", got)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Errorf("second Stop: %v", err)
	}
}

// TestStopDeadline: a pass that ignores cancellation makes Stop return
// ctx's error, naming the job; a later Stop waits for it again.
func TestStopDeadline(t *testing.T) {
	t.Parallel()
	s, _ := newScheduler(t)

	release := make(chan struct{})
	started := make(chan struct{}, 1)
	mustAdd(t, s, "stubborn", "@hourly", func(context.Context) error {
		started <- struct{}{}
		<-release // ignores ctx
		return nil
	})
	mustAdd(t, s, "idle", "@hourly", func(context.Context) error { return nil })
	s.Start()
	if err := s.RunNow("stubborn"); err != nil {
		t.Fatalf("RunNow: %v", err)
	}
	recv(t, started, 2*time.Second, "pass")

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := s.Stop(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stop = %v, want an error wrapping context.DeadlineExceeded", err)
	}
	if !strings.Contains(err.Error(), `"stubborn"`) || strings.Contains(err.Error(), "idle") {
		t.Errorf("Stop error %q should name the running job only", err)
	}

	// An already-cancelled ctx fails at once with its own error.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	if err := s.Stop(done); !errors.Is(err, context.Canceled) {
		t.Errorf("Stop(cancelled ctx) = %v, want context.Canceled", err)
	}

	close(release)
	if err := s.Stop(context.Background()); err != nil {
		t.Errorf("Stop after the pass returned: %v", err)
	}
	if st := mustStats(t, s, "stubborn"); st.Running || st.Runs != 1 {
		t.Errorf("stats %+v, want Runs 1, not Running", st)
	}
}

func TestStopWithoutStart(t *testing.T) {
	t.Parallel()
	s := scheduler.New(scheduler.Config{})
	for i := range 2 {
		if err := s.Stop(context.Background()); err != nil {
			t.Fatalf("Stop #%d: %v", i+1, err)
		}
	}
}

// TestPanicRecovered: a panicking pass is logged with the job name, the panic
// value and the stack, and the job keeps running on its schedule.
func TestPanicRecovered(t *testing.T) {
	t.Parallel()
	s, logs := newScheduler(t)

	var calls atomic.Int32
	again := make(chan struct{}, 10)
	mustAdd(t, s, "explosive", everySecond, func(context.Context) error {
		if calls.Add(1) == 1 {
			panic("boom-42")
		}
		again <- struct{}{}
		return nil
	})
	s.Start()
	if err := s.RunNow("explosive"); err != nil { // the first pass, panicking
		t.Fatalf("RunNow: %v", err)
	}
	recv(t, again, 3*time.Second, "a scheduled pass after the panic")

	if err := s.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	st := mustStats(t, s, "explosive")
	if st.Panics != 1 || st.Runs < 2 {
		t.Errorf("stats %+v, want Panics 1, Runs >= 2", st)
	}
	out := logs.String()
	var line string
	for l := range strings.Lines(out) {
		if strings.Contains(l, "pass panicked") {
			line = l
		}
	}
	for _, want := range []string{"level=ERROR", "job=explosive", "panic=boom-42", "stack=", "scheduler_test.go"} {
		if !strings.Contains(line, want) {
			t.Errorf("panic log line lacks %q; logs:\n%s", want, out)
		}
	}
}

// TestFailureLogged: a pass returning an error is logged at error level and
// the job still runs.
func TestFailureLogged(t *testing.T) {
	t.Parallel()
	s, logs := newScheduler(t)

	done := make(chan struct{}, 2)
	var calls atomic.Int32
	mustAdd(t, s, "flaky", "@hourly", func(context.Context) error {
		defer func() { done <- struct{}{} }()
		if calls.Add(1) == 1 {
			return errors.New("broker unreachable")
		}
		return nil
	})
	for i := range 2 {
		waitFor(t, 2*time.Second, "idle job", func() bool { return !mustStats(t, s, "flaky").Running })
		if err := s.RunNow("flaky"); err != nil {
			t.Fatalf("RunNow #%d: %v", i+1, err)
		}
		recv(t, done, 2*time.Second, "pass")
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if st := mustStats(t, s, "flaky"); st.Runs != 2 || st.Failures != 1 || st.Panics != 0 {
		t.Errorf("stats %+v, want Runs 2, Failures 1", st)
	}
	out := logs.String()
	if !strings.Contains(out, `level=ERROR msg="scheduler: pass failed" job=flaky`) ||
		!strings.Contains(out, `error="broker unreachable"`) {
		t.Errorf("no error log naming the job and the error; logs:\n%s", out)
	}
}

// TestAddAfterStart: a job added while running gets scheduled.
func TestAddAfterStart(t *testing.T) {
	t.Parallel()
	s, _ := newScheduler(t)
	s.Start()
	ran := make(chan struct{}, 10)
	mustAdd(t, s, "late", everySecond, func(context.Context) error {
		ran <- struct{}{}
		return nil
	})
	recv(t, ran, 2500*time.Millisecond, "a scheduled pass")
	if st := mustStats(t, s, "late"); st.Next.IsZero() {
		t.Errorf("stats %+v: Next is zero while started", st)
	}
}

func TestAddErrors(t *testing.T) {
	t.Parallel()
	s := scheduler.New(scheduler.Config{})
	noop := func(context.Context) error { return nil }
	mustAdd(t, s, "relay", "*/5 * * * * *", noop)

	for _, tc := range []struct {
		name, spec string
		fn         scheduler.JobFunc
		want       error
	}{
		{"cleanup", "61 * * * *", noop, scheduler.ErrInvalidSpec},
		{"cleanup", "not a spec", noop, scheduler.ErrInvalidSpec},
		{"cleanup", "* * * *", noop, scheduler.ErrInvalidSpec},
		{"cleanup", "* * * * * * *", noop, scheduler.ErrInvalidSpec},
		{"cleanup", "@fortnightly", noop, scheduler.ErrInvalidSpec},
		{"cleanup", "", noop, scheduler.ErrInvalidSpec},
		{"cleanup", "TZ=UTC", noop, scheduler.ErrInvalidSpec},       // panics inside cron's parser
		{"cleanup", "0 0 0 30 2 *", noop, scheduler.ErrInvalidSpec}, // 30 February: never fires
		{"relay", "@hourly", noop, scheduler.ErrDuplicateJob},
		{"", "@hourly", noop, scheduler.ErrInvalidJob},
		{"cleanup", "@hourly", nil, scheduler.ErrInvalidJob},
	} {
		err := s.Add(tc.name, tc.spec, tc.fn)
		if !errors.Is(err, tc.want) {
			t.Errorf("Add(%q, %q) = %v, want %v", tc.name, tc.spec, err, tc.want)
			continue
		}
		if msg := err.Error(); (tc.name != "" && !strings.Contains(msg, fmt.Sprintf("%q", tc.name))) ||
			(tc.fn != nil && !strings.Contains(msg, fmt.Sprintf("%q", tc.spec))) {
			t.Errorf("Add(%q, %q) error %q should name the job and the spec", tc.name, tc.spec, msg)
		}
	}
	if _, ok := s.Stats("cleanup"); ok {
		t.Errorf("a failed Add registered the job")
	}
	if err := s.RunNow("nope"); !errors.Is(err, scheduler.ErrUnknownJob) {
		t.Errorf("RunNow(unknown) = %v, want ErrUnknownJob", err)
	}
}

func TestAcceptedSpecs(t *testing.T) {
	t.Parallel()
	s := scheduler.New(scheduler.Config{})
	noop := func(context.Context) error { return nil }
	for i, spec := range []string{
		"*/5 * * * *",     // 5 fields, minute first
		"30 */5 * * * *",  // 6 fields, seconds first
		"0 3 * * MON-FRI", // names
		"@every 2s",
		"@every 500ms", // rounds up to 1s
		"@hourly",
		"@daily",
		"CRON_TZ=UTC 0 3 * * *",
	} {
		if err := s.Add(fmt.Sprint("job", i), spec, noop); err != nil {
			t.Errorf("Add(%q): %v", spec, err)
		}
	}
}

// TestLocation: specs are read in Config.Location.
func TestLocation(t *testing.T) {
	t.Parallel()
	loc := time.FixedZone("UTC+5", 5*60*60)
	s := scheduler.New(scheduler.Config{Location: loc, Logger: slog.New(slog.DiscardHandler)})
	mustAdd(t, s, "noon", "0 0 12 * * *", func(context.Context) error { return nil })
	s.Start()
	defer func() {
		if err := s.Stop(context.Background()); err != nil {
			t.Errorf("Stop: %v", err)
		}
	}()
	next := mustStats(t, s, "noon").Next
	if h := next.In(loc).Hour(); h != 12 || next.UTC().Hour() != 7 {
		t.Errorf("Next = %v, want 12:00 UTC+5 (07:00 UTC)", next)
	}
}

// Wake during a pass runs exactly one more pass after it, however many
// times it is called; Wake when idle runs one at once.
func TestWakeCoalesces(t *testing.T) {
	s := scheduler.New(scheduler.Config{Logger: slog.New(slog.DiscardHandler)})
	var runs atomic.Int32
	release := make(chan struct{})
	started := make(chan struct{}, 10)
	if err := s.Add("w", "@every 1h", func(ctx context.Context) error {
		n := runs.Add(1)
		started <- struct{}{}
		if n == 1 {
			<-release
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.Wake("w"); err != nil {
		t.Fatal(err)
	}
	<-started
	for i := 0; i < 5; i++ {
		if err := s.Wake("w"); err != nil {
			t.Fatal(err)
		}
	}
	close(release)
	select {
	case <-started:
	case <-time.After(5 * time.Second):
		t.Fatal("no pass after the wake-ups during the first one")
	}
	time.Sleep(200 * time.Millisecond)
	if n := runs.Load(); n != 2 {
		t.Fatalf("%d passes, want 2 (one, then one more for the 5 wake-ups)", n)
	}
	if err := s.Wake("nope"); !errors.Is(err, scheduler.ErrUnknownJob) {
		t.Fatalf("Wake(unknown) = %v", err)
	}
	if err := s.Stop(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := s.Wake("w"); !errors.Is(err, scheduler.ErrStopped) {
		t.Fatalf("Wake after Stop = %v", err)
	}
}
