package backoff

import (
	"testing"
	"time"
)

func TestExponential(t *testing.T) {
	low := func(time.Duration) time.Duration { return 0 }
	high := func(n time.Duration) time.Duration { return n - 1 }
	for _, tc := range []struct {
		lo, hi  time.Duration
		attempt int
		base    time.Duration // the capped wait before jitter
	}{
		{time.Second, 30 * time.Second, 0, time.Second},
		{time.Second, 30 * time.Second, 1, time.Second},
		{time.Second, 30 * time.Second, 2, 2 * time.Second},
		{time.Second, 30 * time.Second, 5, 16 * time.Second},
		{time.Second, 30 * time.Second, 6, 30 * time.Second},
		{time.Second, 30 * time.Second, 1000, 30 * time.Second},
		{100 * time.Millisecond, 10 * time.Second, 3, 400 * time.Millisecond},
		{3, 100, 2, 6},
	} {
		if got := Exponential(tc.lo, tc.hi, tc.attempt, low); got != tc.base/2 {
			t.Errorf("Exponential(%v, %v, %d) with the lowest jitter = %v, want %v", tc.lo, tc.hi, tc.attempt, got, tc.base/2)
		}
		if got := Exponential(tc.lo, tc.hi, tc.attempt, high); got != tc.base/2+tc.base/2-1 {
			t.Errorf("Exponential(%v, %v, %d) with the highest jitter = %v, want %v", tc.lo, tc.hi, tc.attempt, got, tc.base/2+tc.base/2-1)
		}
		for range 100 {
			if got := Exponential(tc.lo, tc.hi, tc.attempt, nil); got < tc.base/2 || got >= tc.base {
				t.Fatalf("Exponential(%v, %v, %d) = %v, want in [%v, %v)", tc.lo, tc.hi, tc.attempt, got, tc.base/2, tc.base)
			}
		}
	}
	// No jitter to draw from a wait of 0 or 1ns.
	for _, d := range []time.Duration{0, 1} {
		if got := Exponential(d, d, 3, nil); got != d {
			t.Errorf("Exponential(%v, %v, 3) = %v, want %v", d, d, got, d)
		}
	}
}
