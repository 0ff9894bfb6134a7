// Package backoff is the wait before a failed operation is tried again,
// shared by the relay (failed publications) and the inbox (failed
// handlers, database and broker outages).
package backoff

import (
	"math/rand/v2"
	"time"
)

// Jitter returns a random duration in [0, n), n > 0. Nil means
// math/rand/v2's rand.N; tests pass a fixed one.
type Jitter func(n time.Duration) time.Duration

// Exponential returns the wait after attempt failed tries (attempt ≥ 1):
// lo × 2^(attempt−1), capped at hi, with "equal jitter": a random point in
// its upper half, [d/2, d) for the capped value d (d itself when d ≤ 1ns).
// lo and hi must not be negative.
func Exponential(lo, hi time.Duration, attempt int, jitter Jitter) time.Duration {
	d := lo
	for i := 1; i < attempt && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	if d <= 1 {
		return d
	}
	if jitter == nil {
		jitter = rand.N[time.Duration]
	}
	return d/2 + jitter(d/2)
}
