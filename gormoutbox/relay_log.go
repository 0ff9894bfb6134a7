package gormoutbox

import (
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// WarnInterval is the least time between two log lines of one kind from a
// Relay: failed publications, dead letters, a lost Listen connection (at
// warn), failing topics publishing again (at info). What happens in
// between is counted and reported with the next line of that kind
// ("suppressed"), or once the interval is over, so that a broker outage
// writes one line every 30 seconds, not one per pass. Each held-back line
// is logged at debug level instead. The clock is RelayConfig.Now.
const WarnInterval = 30 * time.Second

// Kinds of rate-limited relay log lines.
type logKind int

const (
	logPublish   logKind = iota // a Publish call (or hook veto) failed messages
	logDead                     // rows were dead-lettered
	logRecovered                // failing topics publish again (info)
	logListen                   // Listen lost its connection
	numLogKinds
)

// maxLogTopics bounds the topic names one log line lists.
const maxLogTopics = 10

// logLimiter lets through at most one line per kind per interval, and
// counts what it holds back for the next line of the kind.
type logLimiter struct {
	every time.Duration
	mu    sync.Mutex
	state [numLogKinds]limitState
}

type limitState struct {
	last     time.Time // when the last line of the kind was let through
	logged   bool      // whether one was
	held     int       // occurrences held back since
	heldMsgs int       // their messages
	topics   topicList // topics of the occurrences since, this one's included
}

// limitReport is what a line let through carries.
type limitReport struct {
	held, heldMsgs int // occurrences held back since the previous line, and their messages
	topics         topicList
}

// allow records n failures of kind at now, of msgs messages of topics,
// and reports whether their line may be written. When it may, the report
// holds what was held back since the previous line and the topics of all
// of them; the counts start again. When it may not, n and msgs are added
// to what is held back.
func (l *logLimiter) allow(kind logKind, now time.Time, n, msgs int, topics []string) (limitReport, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := &l.state[kind]
	s.topics.add(topics...)
	if l.within(s, now) {
		s.held += n
		s.heldMsgs += msgs
		return limitReport{}, false
	}
	rep := limitReport{held: s.held, heldMsgs: s.heldMsgs, topics: s.topics}
	*s = limitState{last: now, logged: true}
	return rep, true
}

// within reports whether now is less than the interval after s's last line
// (a clock that went back counts as past it).
func (l *logLimiter) within(s *limitState, now time.Time) bool {
	d := now.Sub(s.last)
	return s.logged && l.every > 0 && d >= 0 && d < l.every
}

// flush lets a line through for what kind holds back, if anything, once
// the interval since the last line is over; it starts a new interval.
func (l *logLimiter) flush(kind logKind, now time.Time) (limitReport, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := &l.state[kind]
	if s.held == 0 || l.within(s, now) {
		return limitReport{}, false
	}
	rep := limitReport{held: s.held, heldMsgs: s.heldMsgs, topics: s.topics}
	*s = limitState{last: now, logged: true}
	return rep, true
}

// take returns and clears what kind holds back, leaving its interval
// running.
func (l *logLimiter) take(kind logKind) limitReport {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := &l.state[kind]
	rep := limitReport{held: s.held, heldMsgs: s.heldMsgs, topics: s.topics}
	s.held, s.heldMsgs, s.topics = 0, 0, topicList{}
	return rep
}

// topicList is a set of at most maxLogTopics topic names, in the order
// first seen, and the number of others.
type topicList struct {
	names []string
	more  int
}

func (t *topicList) add(names ...string) {
	for _, n := range names {
		if slices.Contains(t.names, n) {
			continue
		}
		if len(t.names) < maxLogTopics {
			t.names = append(t.names, n)
		} else {
			t.more++ // an approximation: a name past the cap may be counted twice
		}
	}
}

// LogValue implements slog.LogValuer: the names, then "+N more".
func (t topicList) LogValue() slog.Value {
	v := slices.Clone(t.names)
	if t.more > 0 {
		v = append(v, "+"+strconv.Itoa(t.more)+" more")
	}
	return slog.AnyValue(v)
}

// failWatch remembers the topics whose messages failed, so that the relay
// can say when they publish again.
type failWatch struct {
	n      atomic.Int32 // len(topics), read without the lock by every batch
	mu     sync.Mutex
	topics map[string]failingTopic
}

type failingTopic struct {
	since time.Time // first failure
	msgs  int       // failed messages since
}

// maxWatched bounds the topics remembered as failing.
const maxWatched = 1000

func (w *failWatch) watching() bool { return w.n.Load() > 0 }

// failed records failed messages per topic.
func (w *failWatch) failed(now time.Time, topics map[string]int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.topics == nil {
		w.topics = make(map[string]failingTopic)
	}
	for t, n := range topics {
		f, ok := w.topics[t]
		if !ok {
			if len(w.topics) >= maxWatched {
				continue
			}
			f.since = now
		}
		f.msgs += n
		w.topics[t] = f
	}
	w.n.Store(int32(len(w.topics)))
}

// published forgets the failing topics of ok (topics that published a
// message and failed none in the same batch) and returns them sorted, with
// the earliest first failure and the failed messages among them; left
// reports whether other topics are still failing.
func (w *failWatch) published(ok map[string]bool) (topics []string, since time.Time, msgs int, left bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for t := range ok {
		f, found := w.topics[t]
		if !found {
			continue
		}
		delete(w.topics, t)
		topics = append(topics, t)
		if since.IsZero() || f.since.Before(since) {
			since = f.since
		}
		msgs += f.msgs
	}
	w.n.Store(int32(len(w.topics)))
	slices.Sort(topics)
	return topics, since, msgs, len(w.topics) > 0
}

// passLog gathers what one Drain logs, from all its workers.
type passLog struct {
	mu       sync.Mutex
	calls    int             // failed Publish calls (or batches vetoed whole)
	failMsgs int             // messages they failed (not held back)
	res      DrainResult     // what those batches did
	lastErr  string          // the last one's error
	failed   map[string]int  // topic → messages failed
	retried  map[string]int  // the same, without those dead-lettered at once (too large, vetoed)
	ok       map[string]bool // topics that published, when some topic is failing
	dead     int             // rows dead-lettered
	deadIDs  []int64         // the first of them
	deadTops []string
	deadErr  string // the last dead letter's error
}

// batchLog is what one batch adds to its pass's passLog.
type batchLog struct {
	failed, retried map[string]int
	ok              map[string]bool
	deadIDs         []int64
	deadTops        []string
	deadErr         string
}

// fail counts a failed message; once means it is dead-lettered at once
// (too large, vetoed for good): a fault of the message, not of its topic.
func (b *batchLog) fail(topic string, once bool) {
	if b.failed == nil {
		b.failed = make(map[string]int)
	}
	b.failed[topic]++
	if once {
		return
	}
	if b.retried == nil {
		b.retried = make(map[string]int)
	}
	b.retried[topic]++
}

func (b *batchLog) dead(row *Row, errText string) {
	if len(b.deadIDs) < maxLogTopics {
		b.deadIDs = append(b.deadIDs, row.ID)
	}
	if !slices.Contains(b.deadTops, row.Topic) {
		b.deadTops = append(b.deadTops, row.Topic)
	}
	b.deadErr = errText
}

// add merges a batch's outcome into the pass's.
func (p *passLog) add(res DrainResult, perr error, b *batchLog) {
	if perr == nil && res.Dead == 0 && len(b.ok) == 0 && len(b.retried) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	merge := func(dst *map[string]int, src map[string]int) {
		if len(src) > 0 && *dst == nil {
			*dst = make(map[string]int)
		}
		for t, n := range src {
			(*dst)[t] += n
		}
	}
	if perr != nil {
		p.calls++
		p.res.add(res)
		p.lastErr = perr.Error()
		for _, n := range b.failed {
			p.failMsgs += n
		}
	}
	merge(&p.failed, b.failed)
	merge(&p.retried, b.retried)
	if len(b.ok) > 0 && p.ok == nil {
		p.ok = make(map[string]bool)
	}
	for t := range b.ok {
		p.ok[t] = true
	}
	if res.Dead > 0 {
		p.dead += res.Dead
		for _, id := range b.deadIDs {
			if len(p.deadIDs) < maxLogTopics {
				p.deadIDs = append(p.deadIDs, id)
			}
		}
		for _, t := range b.deadTops {
			if !slices.Contains(p.deadTops, t) {
				p.deadTops = append(p.deadTops, t)
			}
		}
		p.deadErr = b.deadErr
	}
}

// maxLogError bounds the error text of a log line.
const maxLogError = 1000

// logPass writes what one Drain logs once its workers are done: failed
// Publish calls and dead letters at warn (rate-limited, see WarnInterval),
// topics publishing again at info. Payloads, keys and header values are
// never logged.
func (r *Relay) logPass(now time.Time, p *passLog) {
	if p.calls > 0 {
		topics := slices.Sorted(maps.Keys(p.failed))
		attrs := []any{"calls", p.calls, "failed", p.failMsgs, "published", p.res.Published, "retried", p.res.Retried,
			"dead", p.res.Dead, "held_back", p.res.HeldBack, "error", truncate(p.lastErr, maxLogError)}
		if rep, ok := r.warn.allow(logPublish, now, p.calls, p.failMsgs, topics); ok {
			r.log.Warn("outbox relay: publish failed", append(attrs, "topics", rep.topics,
				"suppressed", rep.held, "suppressed_messages", rep.heldMsgs)...)
		} else {
			r.log.Debug("outbox relay: publish failed", append(attrs, "topics", topics)...)
		}
	}
	if p.dead > 0 {
		attrs := []any{"count", p.dead, "ids", p.deadIDs, "error", truncate(p.deadErr, maxLogError)}
		if rep, ok := r.warn.allow(logDead, now, p.dead, p.dead, p.deadTops); ok {
			r.log.Warn("outbox relay: dead-lettered", append(attrs, "topics", rep.topics, "suppressed", rep.heldMsgs)...)
		} else {
			r.log.Debug("outbox relay: dead-lettered", append(attrs, "topics", p.deadTops)...)
		}
	}
	if len(p.retried) > 0 {
		r.fails.failed(now, p.retried)
	}
	if len(p.ok) > 0 {
		for t := range p.retried {
			delete(p.ok, t) // failed and published in one pass: not recovered yet
		}
		if topics, since, msgs, left := r.fails.published(p.ok); len(topics) > 0 {
			attrs := []any{"topics", topics, "failed_for", now.Sub(since), "failed_messages", msgs}
			if _, ok := r.warn.allow(logRecovered, now, 1, 0, topics); !ok {
				r.log.Debug("outbox relay: publishing again", attrs...)
			} else {
				if !left {
					// Nothing fails any more: the failures held back are
					// told now, not with the next outage's first line.
					rep := r.warn.take(logPublish)
					attrs = append(attrs, "suppressed", rep.held, "suppressed_messages", rep.heldMsgs)
				}
				r.log.Info("outbox relay: publishing again", attrs...)
			}
		}
	}
	// Failures held back and not followed by another within the interval
	// are told once it is over, so that none goes untold.
	if p.calls == 0 {
		if rep, ok := r.warn.flush(logPublish, now); ok {
			r.log.Warn("outbox relay: publish failed", "calls", 0, "topics", rep.topics,
				"suppressed", rep.held, "suppressed_messages", rep.heldMsgs)
		}
	}
	if p.dead == 0 {
		if rep, ok := r.warn.flush(logDead, now); ok {
			r.log.Warn("outbox relay: dead-lettered", "count", 0, "topics", rep.topics, "suppressed", rep.heldMsgs)
		}
	}
}

// logListenLost logs a lost Listen connection at warn, rate-limited as the
// other warnings (a database outage makes Listen reconnect every few
// seconds).
func (r *Relay) logListenLost(err error) {
	attrs := []any{"error", truncate(err.Error(), maxLogError)}
	if rep, ok := r.warn.allow(logListen, r.cfg.Now(), 1, 0, nil); ok {
		r.log.Warn("outbox relay: listen connection lost; reconnecting", append(attrs, "suppressed", rep.held)...)
	} else {
		r.log.Debug("outbox relay: listen connection lost; reconnecting", attrs...)
	}
}
