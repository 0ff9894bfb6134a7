// Package claim holds the order guard both dialects run on claimed rows:
// a claimed row is published only when every earlier pending row of its
// topic and key is claimed with it; the others are held back, and those
// behind a row that waits for a retry are parked until it is due.
package claim

import (
	"cmp"
	"slices"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// MaxRounds bounds the claims one Claim call runs when every row it got
// was parked.
const MaxRounds = 8

// DefaultBlockedRecheck is how long a row blocked behind a dead row of its
// key is parked when ClaimOptions.BlockedRecheck is 0.
const DefaultBlockedRecheck = time.Minute

// BlockedRecheck returns how long o parks a row blocked behind a dead row
// of its key.
func BlockedRecheck(o dialects.ClaimOptions) time.Duration {
	if o.BlockedRecheck > 0 {
		return o.BlockedRecheck
	}
	return DefaultBlockedRecheck
}

// Candidate is a claimed row with the previous pending row of its topic
// and key, as the order guard needs it.
type Candidate struct {
	dialects.Row
	// Prev is the id of the previous pending row of the same topic and
	// key (0 when there is none) and PrevAvail its available_at.
	Prev      int64
	PrevAvail time.Time
}

// Pending is a pending row's id and available_at, as a previous-row probe
// reads it.
type Pending struct {
	ID          int64
	AvailableAt time.Time
}

// SetPrevs sets the previous pending row of each candidate of topic and
// key in cands (which are in id order) from those candidates themselves and
// the other pending rows of the key a probe found (any order): the last
// pending row before a key's first claimed row, and the pending rows
// between its first and last claimed rows.
func SetPrevs(cands []Candidate, topic string, key []byte, others []Pending) {
	all := make([]Pending, 0, len(others)+8)
	all = append(all, others...)
	idx := make([]int, 0, 8)
	for i := range cands {
		if cands[i].Topic == topic && cands[i].Key != nil && string(cands[i].Key) == string(key) {
			all = append(all, Pending{cands[i].ID, cands[i].AvailableAt})
			idx = append(idx, i)
		}
	}
	slices.SortFunc(all, func(a, b Pending) int { return cmp.Compare(a.ID, b.ID) })
	for _, i := range idx {
		c := &cands[i]
		j, _ := slices.BinarySearchFunc(all, c.ID, func(p Pending, id int64) int { return cmp.Compare(p.ID, id) })
		c.Prev, c.PrevAvail = 0, time.Time{}
		if j > 0 {
			c.Prev, c.PrevAvail = all[j-1].ID, all[j-1].AvailableAt
		}
	}
}

// Park is a claimed row the order guard holds back because an earlier row
// of its key waits for a retry: it is made due when that row is, so that
// it does not fill claims in the meantime only to be held back again.
type Park struct {
	ID    int64
	Until time.Time
}

// OrderedPrefix keeps, of candidates read with their previous pending row
// (in id order), the rows whose whole chain of earlier pending rows of the
// same topic and key is in cands: a row is kept when it has no earlier
// pending row or when that row was kept. Rows without a key are always
// kept.
//
// Of the rows held back, those behind a row that is not due at now (it
// waits for a retry) are returned in park with the time that row is due;
// the others are behind a row another relay holds, and wait for the next
// claim.
func OrderedPrefix(cands []Candidate, now time.Time) (kept []dialects.Row, park []Park) {
	last := make(map[string]int64)
	until := make(map[string]time.Time)
	kept = make([]dialects.Row, 0, len(cands))
	for i := range cands {
		c := &cands[i]
		if c.Key == nil {
			kept = append(kept, c.Row)
			continue
		}
		k := c.Topic + "\x00" + string(c.Key)
		if c.Prev == 0 || c.Prev == last[k] {
			last[k] = c.ID
			kept = append(kept, c.Row)
			continue
		}
		u, ok := until[k]
		if !ok && c.PrevAvail.After(now) {
			u, ok = c.PrevAvail, true
			until[k] = u
		}
		if ok {
			park = append(park, Park{ID: c.ID, Until: u})
		}
	}
	return kept, park
}

// Guard is OrderedPrefix for claims that read the due rows in
// (available_at, id) order rather than in id order. Such a claim can take a
// row and leave out an earlier row of its key that is due but comes later
// in that order (its available_at is later: a row released by Replay, or
// one captured while the earlier row was backing off and not claimed before
// it came due). OrderedPrefix holds the row back without parking it (its
// earlier row is due), and every claim would read it again ahead of that
// row: a claim full of such rows would never reach them. So the rows held
// back behind an earlier row that is due but later than themselves are
// also returned in park, with that row's available_at: they move behind it
// in the claim's order (parking never moves a row earlier), and a later
// claim reaches the earlier row first. The later held-back rows of the same
// key move with them.
func Guard(cands []Candidate, now time.Time) (kept []dialects.Row, park []Park) {
	kept, park = OrderedPrefix(cands, now)
	if len(kept)+len(park) == len(cands) {
		return kept, park
	}
	done := make(map[int64]bool, len(kept)+len(park))
	for _, r := range kept {
		done[r.ID] = true
	}
	for _, pk := range park {
		done[pk.ID] = true
	}
	until := make(map[string]time.Time)
	for i := range cands {
		c := &cands[i]
		if c.Key == nil || done[c.ID] {
			continue
		}
		k := c.Topic + "\x00" + string(c.Key)
		u, ok := until[k]
		if !ok && c.PrevAvail.After(c.AvailableAt) {
			u, ok = c.PrevAvail, true
			until[k] = u
		}
		if ok && u.After(c.AvailableAt) {
			park = append(park, Park{ID: c.ID, Until: u})
		}
	}
	return kept, park
}
