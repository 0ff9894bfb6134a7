package gormoutbox

import (
	"context"
	"strconv"
	"sync"
	"time"
)

// sequenceSource caches the source of the outbox table's x-sequence
// numbers (HeaderSequenceSource), read once from the database: until it is
// found (a table migrated that far), it is looked for again at most once a
// minute, and messages go without the header.
type sequenceSource struct {
	mu     sync.Mutex
	value  string // "" until found
	tried  time.Time
	warned bool
}

// retrySource is how often a missing or unreadable source is looked for.
const retrySource = time.Minute

// refreshSource reads the source when it is not known yet and was not looked
// for within retrySource.
func (r *Relay) refreshSource(ctx context.Context) {
	s := &r.source
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	if s.value != "" || (!s.tried.IsZero() && now.Sub(s.tried) < retrySource) {
		return
	}
	s.tried = now
	v, err := r.d.SequenceSource(ctx, r.db, r.table)
	switch {
	case err != nil:
		if !s.warned {
			s.warned = true
			r.log.Warn("outbox relay: cannot read the source of the x-sequence numbers; messages go without "+
				HeaderSequenceSource+" (consumers then cannot use "+HeaderSequence+") until it can be read",
				"outbox_table", r.table.String(), "error", err)
		}
	case v != 0:
		s.value = strconv.FormatUint(uint64(v), 16)
	}
}

// sourceValue is the cached source, "" when unknown.
func (r *Relay) sourceValue() string {
	r.source.mu.Lock()
	defer r.source.mu.Unlock()
	return r.source.value
}
