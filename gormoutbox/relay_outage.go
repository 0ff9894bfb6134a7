package gormoutbox

import (
	"errors"
	"sync"
	"time"

	"github.com/go-outbox/outbox/internal/backoff"
)

// outage is the relay's backoff as a whole while the broker is down: each
// batch that fails with an error of the broker (ErrBrokerUnavailable)
// lengthens it (MinBackoff × 2^(n−1), capped at OutageMaxBackoff, with
// jitter),
// and a batch that publishes anything ends it. Rows count no attempt for
// such failures, so an outage of any length dead-letters nothing.
type outage struct {
	mu    sync.Mutex
	n     int       // batches failed in a row with a broker error
	until time.Time // no claim before
	// unknown holds, for each topic failing with ErrUnknownTopic, when it
	// first did (cleared when the topic publishes again).
	unknown map[string]time.Time
}

// fail records a batch that failed with a broker error at now and returns
// when its failed rows are due again: after the backoff d of the n-th
// failure in a row. The relay claims nothing for d/2: the next claim after
// the pause takes other rows first, so that a topic the broker keeps
// refusing (a partition without leader) does not starve the others, while
// an unreachable broker fails those too and lengthens the backoff.
func (o *outage) fail(now time.Time, lo, hi time.Duration) time.Time {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.n++
	d := backoff.Exponential(lo, hi, o.n, nil)
	o.until = now.Add(d / 2)
	return now.Add(d)
}

// ok records a batch that published something: the outage is over.
func (o *outage) ok() {
	o.mu.Lock()
	o.n, o.until = 0, time.Time{}
	o.mu.Unlock()
}

// pausedUntil returns when the relay may claim again, if after now.
func (o *outage) pausedUntil(now time.Time) (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.until, now.Before(o.until)
}

// published forgets that topic was unknown.
func (o *outage) published(topic string) {
	o.mu.Lock()
	if o.unknown != nil {
		delete(o.unknown, topic)
	}
	o.mu.Unlock()
}

// brokerFault reports whether err, the failure of a message of topic at
// now, belongs to the broker rather than the message: it wraps
// ErrBrokerUnavailable, or ErrUnknownTopic within grace of the topic's
// first such failure.
func (o *outage) brokerFault(topic string, err error, now time.Time, grace time.Duration) bool {
	if errors.Is(err, ErrBrokerUnavailable) {
		return true
	}
	if !errors.Is(err, ErrUnknownTopic) {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.unknown == nil {
		o.unknown = make(map[string]time.Time)
	}
	first, ok := o.unknown[topic]
	if !ok {
		first = now
		o.unknown[topic] = now
	}
	return now.Sub(first) < grace
}
