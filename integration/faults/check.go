// Package faults is the project's fault suite: real relay processes and
// writers against both databases and the broker, with faults injected, and
// a checker that compares what reached the topic with the ground truth —
// the business table, not the outbox table.
//
// This file is the checker. It knows nothing of databases or Kafka: give
// it what the business table says was committed and what a consumer read
// from the topic, and it counts lost events, duplicates and per-key order
// violations.
package faults

import (
	"fmt"
	"sort"
	"strings"
)

// Committed is one change the business table holds, with its place in
// its key's order.
type Committed struct {
	// Key is the message key (the entity's identity).
	Key string
	// Seq orders the changes of one key: strictly increasing in commit
	// order (the entity's version column, say).
	Seq int64
	// EventID identifies the event the change should have produced, ""
	// when the change is identified by Key and Seq alone.
	EventID string
}

// Delivered is one message read from the topic, in the order of its
// partition.
type Delivered struct {
	Key     string
	Seq     int64
	EventID string
}

// Report is what the checker found.
type Report struct {
	// Committed and Delivered count the inputs.
	Committed, Delivered int
	// Lost are committed changes never delivered.
	Lost []Committed
	// Duplicates counts deliveries of a change already delivered.
	Duplicates int
	// OrderViolations are pairs, per key, where a change reached the topic
	// for the first time after a later change of the same key had.
	OrderViolations []Violation
	// Unknown are deliveries of changes the business table does not hold
	// (invented events).
	Unknown []Delivered
}

// Violation is one per-key order violation: Late first arrived after
// Earlier, although Late's Seq is lower.
type Violation struct {
	Key           string
	Earlier, Late int64
}

// OK reports whether nothing was lost, invented or reordered (duplicates
// are allowed: delivery is at least once).
func (r Report) OK() bool {
	return len(r.Lost) == 0 && len(r.OrderViolations) == 0 && len(r.Unknown) == 0
}

// String summarises the report on one line, naming up to three examples of
// each problem.
func (r Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d committed, %d delivered: %d lost, %d duplicates, %d order violations, %d unknown",
		r.Committed, r.Delivered, len(r.Lost), r.Duplicates, len(r.OrderViolations), len(r.Unknown))
	for i, l := range r.Lost {
		if i == 3 {
			break
		}
		fmt.Fprintf(&b, "; lost %s#%d", l.Key, l.Seq)
	}
	for i, v := range r.OrderViolations {
		if i == 3 {
			break
		}
		fmt.Fprintf(&b, "; key %s: #%d after #%d", v.Key, v.Late, v.Earlier)
	}
	for i, u := range r.Unknown {
		if i == 3 {
			break
		}
		fmt.Fprintf(&b, "; unknown %s#%d", u.Key, u.Seq)
	}
	return b.String()
}

type change struct {
	key string
	seq int64
}

// Check compares the topic with the ground truth. Deliveries are matched
// to committed changes by key and Seq; order is judged per key on each
// change's first delivery.
func Check(committed []Committed, delivered []Delivered) Report {
	r := Report{Committed: len(committed), Delivered: len(delivered)}
	truth := make(map[change]bool, len(committed))
	for _, c := range committed {
		truth[change{c.Key, c.Seq}] = true
	}
	seen := make(map[change]bool, len(delivered))
	maxSeq := make(map[string]int64)
	for _, d := range delivered {
		ch := change{d.Key, d.Seq}
		if !truth[ch] {
			r.Unknown = append(r.Unknown, d)
			continue
		}
		if seen[ch] {
			r.Duplicates++
			continue
		}
		seen[ch] = true
		if m, ok := maxSeq[d.Key]; ok && d.Seq < m {
			r.OrderViolations = append(r.OrderViolations, Violation{Key: d.Key, Earlier: m, Late: d.Seq})
			continue
		}
		maxSeq[d.Key] = d.Seq
	}
	for _, c := range committed {
		if !seen[change{c.Key, c.Seq}] {
			r.Lost = append(r.Lost, c)
		}
	}
	sort.Slice(r.Lost, func(i, j int) bool {
		if r.Lost[i].Key != r.Lost[j].Key {
			return r.Lost[i].Key < r.Lost[j].Key
		}
		return r.Lost[i].Seq < r.Lost[j].Seq
	})
	return r
}
