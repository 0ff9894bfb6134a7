package inbox

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/internal/backoff"
)

// slice is a partition's part of a batch.
type slice struct {
	p    *partition
	msgs []*Message
	done int // messages handled or skipped, a prefix of msgs
}

// step handles one batch of ready messages, and parks the head messages
// that ran out of attempts.
func (r *run) step(ctx context.Context) {
	c := r.c
	now := c.cfg.Now()
	if now.Before(r.dbWait) {
		return
	}
	var batch []*slice
	n, limit := 0, c.cfg.BatchSize
	if r.isolate > 0 {
		limit = 1 // looking for the message whose data the database refused
	}
	for i := 0; i < len(r.order) && n < limit; i++ {
		p := r.order[(r.next+i)%len(r.order)]
		if len(p.msgs) == 0 || now.Before(p.notBefore) {
			continue
		}
		if p.fails >= c.cfg.MaxAttempts {
			if err := r.park(ctx, p, "after repeated handler failures"); err != nil {
				r.dbFailed(err)
				return
			}
			if len(p.msgs) == 0 {
				continue
			}
		}
		take := min(len(p.msgs), limit-n)
		batch = append(batch, &slice{p: p, msgs: p.msgs[:take]})
		n += take
	}
	if len(r.order) > 0 {
		r.next = (r.next + 1) % len(r.order)
	}
	if n == 0 {
		return
	}
	t0 := time.Now()
	err := r.handle(ctx, batch)
	c.stats.inTx.Add(int64(time.Since(t0)))
	if err != nil {
		if !r.dataError(ctx, batch, n, err) {
			r.dbFailed(err)
		}
		return
	}
	r.dbFails, r.dbWait = 0, time.Time{}
	if r.isolate > 0 {
		r.isolate--
	}
	// Commit the offsets of what is done, partition by partition.
	var done []*Message
	var commit []kafkago.Message
	for _, s := range batch {
		if s.done == 0 {
			continue
		}
		done = append(done, s.msgs[:s.done]...)
		commit = append(commit, s.msgs[s.done-1].Message)
	}
	if c.cfg.AfterCommit != nil && len(done) > 0 {
		c.cfg.AfterCommit(ctx, done)
	}
	if len(commit) > 0 {
		if err := r.commit(ctx, commit...); err != nil {
			c.stats.commitErrors.Add(1)
			c.cfg.Logger.Warn("inbox: offset commit failed; the messages will be delivered again and skipped as duplicates",
				"group", c.cfg.GroupID, "error", err)
		}
	}
	for _, s := range batch {
		s.p.msgs = s.p.msgs[s.done:]
		r.queued -= s.done
	}
}

// commitTimeout bounds an offset commit: a commit that cannot be made
// only means redeliveries, which the inbox skips.
const commitTimeout = 10 * time.Second

func (r *run) commit(ctx context.Context, ms ...kafkago.Message) error {
	ctx, cancel := context.WithTimeout(ctx, commitTimeout)
	defer cancel()
	defer func(t0 time.Time) { r.c.stats.inCommit.Add(int64(time.Since(t0))) }(time.Now())
	return r.reader.CommitMessages(ctx, ms...)
}

// dbFailed backs the whole consumer off after a failed transaction: the
// database (not a handler) failed, so no message loses an attempt. A
// transaction the database rolled back (a deadlock) is retried the same
// way: the batch, whole, and no message loses an attempt.
func (r *run) dbFailed(err error) {
	r.c.stats.txFailures.Add(1)
	r.dbFails++
	d := backoff.Exponential(r.c.cfg.MinBackoff, r.c.cfg.MaxBackoff, r.dbFails, nil)
	r.dbWait = r.c.cfg.Now().Add(d)
	msg := "inbox: batch transaction failed; retrying"
	if dialects.ClassifyInboxError(r.c.st.d, err) == dialects.InboxErrorRolledBack {
		msg = "inbox: the database rolled the batch's transaction back (deadlock or lock wait timeout); retrying the batch"
	}
	r.c.cfg.Logger.Warn(msg, "group", r.c.cfg.GroupID, "failures", r.dbFails, "retry_in", d, "error", err)
}

// recordError is a failure to record a batch's messages in the inbox
// table.
type recordError struct{ err error }

func (e *recordError) Error() string { return e.err.Error() }
func (e *recordError) Unwrap() error { return e.err }

// dataError handles a batch whose record the database refused for the
// data of a message (the dialect's InboxErrorData): that message's
// failure, not an outage. A batch of several messages is tried again
// one message at a time (the next n steps take one each); a batch of one
// parks its message at once with the reason, and its partition goes on.
// It reports whether err was such an error.
func (r *run) dataError(ctx context.Context, batch []*slice, n int, err error) bool {
	c := r.c
	var re *recordError
	if !errors.As(err, &re) || dialects.ClassifyInboxError(c.st.d, err) != dialects.InboxErrorData {
		return false
	}
	if n > 1 {
		r.isolate = n
		c.cfg.Logger.Warn("inbox: the database refused the data of a message of the batch; recording the messages one at a time",
			"group", c.cfg.GroupID, "messages", n, "error", err)
		return true
	}
	p := batch[0].p
	p.lastErr = "inbox: the database cannot store the record of this message: " + err.Error()
	if perr := r.park(ctx, p, "because the database cannot store its record"); perr != nil {
		r.dbFailed(perr)
		return true
	}
	if r.isolate > 0 {
		r.isolate--
	}
	return true
}

// handle runs one batch in one transaction.
func (r *run) handle(ctx context.Context, batch []*slice) (err error) {
	c := r.c
	now := c.cfg.Now().UTC()
	// Messages whose x-sequence says they are recorded are skipped without
	// the database. The others have distinct ids: a message whose id came
	// earlier in the batch is a duplicate (a producer retry can put both
	// in one batch).
	var ms []*Message
	first := map[string]bool{}
	var stale map[*Message]bool
	for _, s := range batch {
		for _, m := range s.msgs {
			if c.isStale(m) {
				if stale == nil {
					stale = map[*Message]bool{}
				}
				stale[m] = true
			} else if !first[m.EventID] {
				first[m.EventID] = true
				ms = append(ms, m)
			}
		}
	}
	if len(ms) == 0 { // all stale: nothing for the database to do
		for _, s := range batch {
			s.done = len(s.msgs)
			if len(s.msgs) > 0 {
				s.p.fails, s.p.lastErr, s.p.notBefore = 0, "", time.Time{}
			}
		}
		c.stats.duplicates.Add(int64(len(stale)))
		c.stats.stale.Add(int64(len(stale)))
		return nil
	}
	tx := c.db.WithContext(ctx).Begin()
	if tx.Error != nil {
		return tx.Error
	}
	committed := false
	defer func() {
		if !committed {
			tx.Rollback()
			for _, s := range batch {
				s.done = 0
			}
		}
	}()
	pool := rawTx(tx.Statement.ConnPool) // the inbox's own statements are not prepared
	fresh, err := c.st.claim(ctx, pool, c.cfg.GroupID, ms, now)
	if err != nil {
		return &recordError{fmt.Errorf("record %d messages in %s: %w", len(ms), c.st.table, err)}
	}
	var handled, dups, stales int64
	var retries int64
	sp := newSavepointPool(tx.Statement.ConnPool, c.st.d, c.st.d.FoldsRelease())
	htx := tx.Session(&gorm.Session{NewDB: true, Context: ctx})
	htx.Statement.ConnPool = sp
	owner := map[string]*Message{} // the message that claimed each fresh id
	for _, s := range batch {
		for i, m := range s.msgs {
			if stale[m] || !fresh[m.EventID] || owner[m.EventID] != nil {
				dups++
				if stale[m] {
					stales++
				}
				s.done = i + 1
				if i == 0 { // the head moves on: its failures are not the next one's
					s.p.fails, s.p.lastErr, s.p.notBefore = 0, "", time.Time{}
				}
				continue
			}
			owner[m.EventID] = m
			m.Attempt = 1
			if i == 0 {
				m.Attempt = s.p.fails + 1
			}
			herr := c.call(ctx, htx, m)
			if herr == nil {
				if err := sp.keep(ctx); err != nil {
					return fmt.Errorf("release savepoint: %w", err)
				}
				handled++
				s.done = i + 1
				if i == 0 {
					s.p.fails, s.p.lastErr, s.p.notBefore = 0, "", time.Time{}
				}
				continue
			}
			if dialects.ClassifyInboxError(c.st.d, herr) == dialects.InboxErrorRolledBack {
				// The transaction is gone (a deadlock: InnoDB rolls it
				// back whole, savepoint included) or must go: the batch
				// is retried, and the message loses no attempt.
				return fmt.Errorf("handler of %s: %w", m.EventID, herr)
			}
			if uerr := sp.undo(ctx); uerr != nil {
				// The handler's error first: it is the cause (a savepoint
				// that does not exist is the effect).
				return fmt.Errorf("handler of %s failed (%w), then undoing it failed: %w", m.EventID, herr, uerr)
			}
			// Unrecord this message and the later ones of its partition:
			// they wait for it.
			var ids []string
			for _, w := range s.msgs[i:] {
				if owner[w.EventID] == w || (owner[w.EventID] == nil && fresh[w.EventID]) {
					ids = append(ids, w.EventID)
					delete(fresh, w.EventID)
					delete(owner, w.EventID)
				}
			}
			if err := c.st.unclaim(ctx, pool, c.cfg.GroupID, ids); err != nil {
				return fmt.Errorf("unrecord %d messages: %w", len(ids), err)
			}
			s.p.fails = m.Attempt
			s.p.lastErr = herr.Error()
			retries++
			if s.p.fails < c.cfg.MaxAttempts {
				d := backoff.Exponential(c.cfg.MinBackoff, c.cfg.MaxBackoff, s.p.fails, nil)
				s.p.notBefore = c.cfg.Now().Add(d)
				c.cfg.Logger.Warn("inbox: handler failed; will retry", "group", c.cfg.GroupID,
					"topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "event_id", m.EventID,
					"attempt", s.p.fails, "max_attempts", c.cfg.MaxAttempts, "retry_in", d, "error", herr)
			}
			break
		}
	}
	if err := tx.Commit().Error; err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	committed = true
	sp.runCommitted()
	// What is done is recorded now: its x-sequences may spare their
	// redeliveries the database.
	for _, s := range batch {
		for _, m := range s.msgs[:s.done] {
			c.sequenceCommitted(m)
		}
	}
	c.stats.handled.Add(handled)
	c.stats.duplicates.Add(dups)
	c.stats.stale.Add(stales)
	c.stats.retries.Add(retries)
	c.stats.batches.Add(1)
	return nil
}

// call runs the handler, turning a panic into an error.
func (c *Consumer) call(ctx context.Context, tx *gorm.DB, m *Message) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("handler panicked: %v", v)
		}
	}()
	return c.handler(ctx, tx, m)
}

// park records p's head message as a dead letter, commits its offset and
// moves the partition on; why completes the log line.
func (r *run) park(ctx context.Context, p *partition, why string) error {
	c := r.c
	m := p.msgs[0]
	sqlDB, err := c.db.DB()
	if err != nil {
		return err
	}
	err = c.st.park(ctx, sqlDB, c.cfg.GroupID, m, p.fails, p.lastErr, c.cfg.Now().UTC())
	if err != nil && dialects.ClassifyInboxError(c.st.d, err) == dialects.InboxErrorData {
		// The id itself cannot be stored (a Config.EventID's, or a
		// column narrower than the inbox's): park under its hash, the
		// raw id named in the error.
		sum := sha256.Sum256([]byte(m.EventID))
		p.lastErr = fmt.Sprintf("%s (event id %q replaced by its hash: %v)", p.lastErr, m.EventID, err)
		m.EventID = "sha256:" + hex.EncodeToString(sum[:])
		err = c.st.park(ctx, sqlDB, c.cfg.GroupID, m, p.fails, p.lastErr, c.cfg.Now().UTC())
	}
	if err != nil {
		return fmt.Errorf("park %s: %w", m.EventID, err)
	}
	c.stats.parked.Add(1)
	c.sequenceCommitted(m)
	c.cfg.Logger.Error("inbox: message parked as a dead letter "+why,
		"group", c.cfg.GroupID, "topic", m.Topic, "partition", m.Partition, "offset", m.Offset,
		"event_id", m.EventID, "attempts", p.fails, "error", p.lastErr)
	if c.cfg.AfterCommit != nil {
		c.cfg.AfterCommit(ctx, []*Message{m})
	}
	if err := r.commit(ctx, m.Message); err != nil {
		c.stats.commitErrors.Add(1)
		c.cfg.Logger.Warn("inbox: offset commit failed", "group", c.cfg.GroupID, "error", err)
	}
	p.msgs = p.msgs[1:]
	r.queued--
	p.fails, p.lastErr, p.notBefore = 0, "", time.Time{}
	return nil
}
