package gormoutbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/internal/backoff"
)

// batch publishes claimed rows and records the outcome.
//
// prior holds the topics and keys (topic + "\x00" + key) whose rows of the
// previous batch were not all published, when rows were claimed while that
// batch was in flight (a forked pass, dialects.Forker): the rows of those
// keys are held back, as their earlier rows were. batch returns the keys of
// rows that were not published, for the batch after it.
func (r *Relay) batch(ctx context.Context, pass dialects.Pass, rows []Row, pl *passLog, prior map[string]bool) (DrainResult, bool, map[string]bool, error) {
	res := DrainResult{Batches: 1}
	msgs := make([]Message, len(rows))
	src := r.sourceValue()
	for i := range rows {
		msgs[i] = message(&rows[i], src)
	}
	errs := make([]error, len(rows))
	hookVetoes := 0
	// vetoed holds the keys whose earlier message is kept out of the call
	// (a row that cannot be published, a hook's veto): the later ones of
	// the key are held back, so that nothing overtakes it in this batch
	// (the next claim's guard decides whether they may pass a dead row).
	vetoed := make(map[string]error)
	for i := range rows {
		if rows[i].Key != nil && prior[rows[i].Topic+"\x00"+string(rows[i].Key)] {
			errs[i] = errPriorBatch
			continue
		}
		if rows[i].Invalid != nil {
			// A row that cannot be published as stored is dead-lettered at
			// once and is neither given to hooks nor sent.
			errs[i] = invalidRowError{rows[i].Invalid}
			if rows[i].Key != nil {
				tk := rows[i].Topic + "\x00" + string(rows[i].Key)
				if _, ok := vetoed[tk]; !ok {
					vetoed[tk] = errs[i]
				}
			}
		} else if verr, ok := vetoed[rows[i].Topic+"\x00"+string(rows[i].Key)]; ok && rows[i].Key != nil {
			errs[i] = fmt.Errorf("%w (%v)", ErrHeldBack, verr)
		}
	}
	// Hooks first: a veto keeps the message (and the later ones of its key)
	// out of the call.
	send := make([]int, 0, len(rows))
	if len(r.cfg.Hooks) > 0 {
		for i := range msgs {
			if errs[i] != nil {
				continue
			}
			tk := msgs[i].Topic + "\x00" + string(msgs[i].Key)
			if verr, ok := vetoed[tk]; ok && msgs[i].Key != nil {
				errs[i] = fmt.Errorf("%w (%v)", ErrHeldBack, verr)
				continue
			}
			for _, h := range r.cfg.Hooks {
				if err := h.BeforePublish(ctx, &msgs[i]); err != nil {
					hookVetoes++
					errs[i] = fmt.Errorf("vetoed by a hook: %w", err)
					vetoed[tk] = err
					break
				}
			}
			if errs[i] == nil {
				send = append(send, i)
			}
		}
	} else {
		for i := range msgs {
			if errs[i] == nil {
				send = append(send, i)
			}
		}
	}
	var (
		perr  error
		took  time.Duration
		batch = msgs
	)
	if len(send) > 0 {
		if len(send) < len(msgs) {
			batch = make([]Message, len(send))
			for j, i := range send {
				batch[j] = msgs[i]
			}
		}
		start := time.Now()
		pctx, cancel := context.WithTimeout(ctx, r.cfg.PublishTimeout)
		perr = r.pub.Publish(pctx, batch)
		cancel()
		took = time.Since(start)
		var pe PublishErrors
		switch {
		case perr == nil:
		case errors.As(perr, &pe) && len(pe) == len(batch):
			for j, i := range send {
				errs[i] = pe[j]
			}
		default:
			for _, i := range send {
				errs[i] = perr
			}
		}
	} else if hookVetoes > 0 {
		perr = errors.New("every message of the batch was vetoed by a hook")
	}
	now := r.cfg.Now()
	out := dialects.Outcome{Now: now, Delete: r.cfg.DeleteOnPublish}
	failed := make(map[string]bool)
	allFailed := perr != nil
	var (
		lb batchLog
		// outageRetries are the retries failed by the broker: they count
		// no attempt and wait for the relay's backoff as a whole.
		outageRetries []int
		// lastOK is the topic of the last published row: a batch is
		// mostly one topic, so the outage hears of each once, not per row.
		lastOK string
	)
	if r.fails.watching() {
		lb.ok = make(map[string]bool)
	}
	for i := range rows {
		row, err := &rows[i], errs[i]
		tk := row.Topic + "\x00" + string(row.Key)
		if err == nil {
			allFailed = false
			if lb.ok != nil {
				lb.ok[row.Topic] = true
			}
			if row.Topic != lastOK {
				r.outage.published(row.Topic)
				lastOK = row.Topic
			}
			for _, h := range r.cfg.Hooks {
				h.AfterPublish(ctx, &msgs[i], took)
			}
			if row.Key != nil && failed[tk] {
				// The publisher broke its contract: a later message of a
				// failed key was written. It is out of order on the topic;
				// say so loudly rather than hide it.
				r.log.Error("outbox relay: publisher wrote a message after an earlier one of its key failed",
					"event_id", row.EventID, "topic", row.Topic)
			}
			out.Published = append(out.Published, row.ID)
			continue
		}
		failed[tk] = true
		if errors.Is(err, ErrHeldBack) {
			res.HeldBack++
			for _, h := range r.cfg.Hooks {
				h.OnError(ctx, &msgs[i], err, row.Attempts)
			}
			continue
		}
		if r.outage.brokerFault(row.Topic, err, now, r.cfg.UnknownTopicGrace) {
			// Not the message's fault: no attempt counted; due when the
			// relay's backoff ends (set below).
			res.Retried++
			lb.fail(row.Topic, false)
			for _, h := range r.cfg.Hooks {
				h.OnError(ctx, &msgs[i], err, row.Attempts)
			}
			outageRetries = append(outageRetries, len(out.Retries))
			out.Retries = append(out.Retries, dialects.Retry{ID: row.ID, Attempts: row.Attempts,
				Error: truncate(err.Error(), 2000)})
			out.Keys = append(out.Keys, dialects.TopicKey{Topic: row.Topic, Key: row.Key})
			continue
		}
		rt := dialects.Retry{ID: row.ID, Attempts: row.Attempts + 1, Error: truncate(err.Error(), 2000)}
		once := errors.Is(err, ErrMessageTooLarge) || errors.Is(err, ErrDeadLetter) || errors.Is(err, ErrInvalidRow)
		switch {
		case once:
			rt.Dead = true
		case rt.Attempts >= r.cfg.MaxAttempts:
			rt.Dead = true
		default:
			rt.AvailableAt = now.Add(r.backoff(rt.Attempts))
		}
		lb.fail(row.Topic, once)
		if rt.Dead {
			res.Dead++
			lb.dead(row, rt.Error)
			// Each at debug; a rate-limited summary at warn (logPass).
			r.log.Debug("outbox relay: dead-lettered", "id", row.ID, "event_id", row.EventID,
				"topic", row.Topic, "attempts", rt.Attempts, "error", rt.Error)
			for _, h := range r.cfg.Hooks {
				h.OnDeadLetter(ctx, &msgs[i], err, rt.Attempts)
			}
		} else {
			res.Retried++
			for _, h := range r.cfg.Hooks {
				h.OnError(ctx, &msgs[i], err, rt.Attempts)
			}
		}
		out.Retries = append(out.Retries, rt)
		out.Keys = append(out.Keys, dialects.TopicKey{Topic: row.Topic, Key: row.Key})
	}
	switch {
	case len(outageRetries) > 0:
		until := r.outage.fail(now, r.cfg.MinBackoff, r.cfg.OutageMaxBackoff)
		for _, j := range outageRetries {
			out.Retries[j].AvailableAt = until
		}
	case len(out.Published) > 0:
		r.outage.ok()
	}
	res.Published = len(out.Published)
	if err := pass.Finish(ctx, out); err != nil {
		// Nothing is lost: the rows stay pending and are claimed again;
		// those already sent are sent twice (consumers dedupe by event id).
		return DrainResult{Batches: 1}, allFailed, nil, fmt.Errorf("gormoutbox: relay: %w", err)
	}
	pl.add(res, perr, &lb)
	return res, allFailed, failed, nil
}

// errPriorBatch holds back a row whose key had a row left unpublished in
// the batch before, claimed while this one was in flight.
var errPriorBatch = fmt.Errorf("%w (an earlier row of its key in the batch before was not published)", ErrHeldBack)

// backoff returns the wait before attempt n+1: MinBackoff × 2^(n−1), capped
// at MaxBackoff, with "equal jitter" (a random point in its upper half).
func (r *Relay) backoff(n int) time.Duration {
	return backoff.Exponential(r.cfg.MinBackoff, r.cfg.MaxBackoff, n, nil)
}

// message is row as a Publisher receives it; src is the source of its
// x-sequence ("" when unknown).
func message(row *Row, src string) Message {
	h := make([]Header, 0, 7+len(row.Headers))
	h = append(h,
		Header{HeaderEventID, []byte(row.EventID)},
		Header{HeaderEventType, []byte(row.EventType)},
		Header{HeaderOccurredAt, []byte(row.CreatedAt.UTC().Format(time.RFC3339Nano))},
	)
	if row.Sequence > 0 {
		h = append(h, Header{HeaderSequence, strconv.AppendInt(nil, row.Sequence, 10)})
		if src != "" {
			h = append(h, Header{HeaderSequenceSource, []byte(src)})
		}
	}
	if row.AggregateType != "" {
		h = append(h, Header{HeaderAggregateType, []byte(row.AggregateType)})
	}
	if row.AggregateID != "" {
		h = append(h, Header{HeaderAggregateID, []byte(row.AggregateID)})
	}
	names := make([]string, 0, len(row.Headers))
	for k := range row.Headers {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		h = append(h, Header{k, []byte(row.Headers[k])})
	}
	return Message{Topic: row.Topic, Key: row.Key, Value: row.Payload, Headers: h, EventID: row.EventID,
		ID: row.ID, Attempts: row.Attempts, CreatedAt: row.CreatedAt, Sequence: row.Sequence}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "")
}
