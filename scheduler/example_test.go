package scheduler_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/go-outbox/outbox/scheduler"
)

func Example() {
	s := scheduler.New(scheduler.Config{Logger: slog.New(slog.DiscardHandler)})

	done := make(chan struct{})
	relay := func(ctx context.Context) error {
		fmt.Println("relay: publishing a batch")
		close(done)
		return nil
	}
	if err := s.Add("relay", "@every 1m", relay); err != nil {
		fmt.Println(err)
		return
	}
	s.Start()

	// Wake the relay up now instead of waiting for the next tick.
	if err := s.RunNow("relay"); err != nil {
		fmt.Println(err)
		return
	}
	<-done

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Stop(ctx); err != nil { // waits for passes in flight
		fmt.Println(err)
		return
	}
	st, _ := s.Stats("relay")
	fmt.Println("runs:", st.Runs, "failures:", st.Failures)
	// Output:
	// relay: publishing a batch
	// runs: 1 failures: 0
}

func ExampleScheduler_Add() {
	s := scheduler.New(scheduler.Config{})
	noop := func(context.Context) error { return nil }

	fmt.Println(s.Add("cleanup", "0 3 * * *", noop)) // 03:00 UTC every day
	err := s.Add("cleanup", "@hourly", noop)
	fmt.Println(errors.Is(err, scheduler.ErrDuplicateJob))
	err = s.Add("retry", "every minute", noop)
	fmt.Println(errors.Is(err, scheduler.ErrInvalidSpec))
	// Output:
	// <nil>
	// true
	// true
}
