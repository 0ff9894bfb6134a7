package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode/utf8"

	"github.com/go-outbox/outbox/gormoutbox"
)

// ---- status

// topicCount is one topic's rows per state. Published (waiting for
// nothing) and Processed are counted only with -all.
type topicCount struct {
	Topic       string `json:"topic"`
	Pending     int64  `json:"pending"`
	Blocked     int64  `json:"blocked"`
	Dead        int64  `json:"dead"`
	AwaitingAck int64  `json:"awaiting_ack"`
	Failed      int64  `json:"failed"`
	Published   *int64 `json:"published,omitempty"`
	Processed   *int64 `json:"processed,omitempty"`
}

type statusReport struct {
	Driver  string `json:"driver"`
	Table   string `json:"table"`
	Pending int64  `json:"pending"`
	// Blocked pending rows wait behind a dead row of their key (until it
	// is replayed; see RelayConfig.SkipDeadKeys).
	Blocked int64 `json:"blocked"`
	Dead    int64 `json:"dead"`
	// AwaitingAck rows are published and wait for a consumer's answer;
	// Failed ones were answered FAILED on their last process attempt.
	AwaitingAck int64 `json:"awaiting_ack"`
	Failed      int64 `json:"failed"`
	// OldestPending is the created_at of the oldest pending row.
	OldestPending *time.Time `json:"oldest_pending"`
	// OldestPendingAgeSeconds is 0 when nothing is pending.
	OldestPendingAgeSeconds float64      `json:"oldest_pending_age_seconds"`
	Topics                  []topicCount `json:"topics"`
}

func cmdStatus(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("status", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	all := fs.Bool("all", false, "also count published rows that wait for nothing and processed rows (reads every published row)")
	if err := c.parse("status", fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	db, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	topics, st, err := topicCounts(ctx, db, *all)
	if err != nil {
		return db.explain(ctx, err)
	}
	rep := statusReport{Driver: db.driver, Table: db.table.String(), Pending: st.Pending, Blocked: st.Blocked,
		Dead: st.Dead, AwaitingAck: st.Awaiting, Failed: st.Failed, Topics: topics}
	if !st.OldestPending.IsZero() {
		t := st.OldestPending.UTC()
		rep.OldestPending = &t
		rep.OldestPendingAgeSeconds = max(time.Since(t).Seconds(), 0)
	}
	if *asJSON {
		return writeJSON(c.stdout, rep)
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "table:\t%s (%s)\n", rep.Table, rep.Driver)
	fmt.Fprintf(tw, "pending:\t%d\n", rep.Pending)
	fmt.Fprintf(tw, "blocked:\t%d\n", rep.Blocked)
	fmt.Fprintf(tw, "awaiting ack:\t%d\n", rep.AwaitingAck)
	fmt.Fprintf(tw, "failed:\t%d\n", rep.Failed)
	fmt.Fprintf(tw, "dead:\t%d\n", rep.Dead)
	if rep.OldestPending != nil {
		age := time.Duration(rep.OldestPendingAgeSeconds * float64(time.Second)).Round(time.Second)
		fmt.Fprintf(tw, "oldest pending:\t%v (created %s)\n", age, rep.OldestPending.Format(time.RFC3339))
	} else {
		fmt.Fprintf(tw, "oldest pending:\t-\n")
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Topics) == 0 {
		return nil
	}
	fmt.Fprintln(c.stdout)
	// Topics left-aligned, counts right-aligned.
	head := []string{"TOPIC", "PENDING", "BLOCKED", "AWAITING_ACK", "FAILED", "DEAD"}
	if *all {
		head = append(head, "PUBLISHED", "PROCESSED")
	}
	rows := [][]string{head}
	for _, t := range rep.Topics {
		r := []string{t.Topic}
		for _, n := range []int64{t.Pending, t.Blocked, t.AwaitingAck, t.Failed, t.Dead} {
			r = append(r, strconv.FormatInt(n, 10))
		}
		if *all {
			r = append(r, strconv.FormatInt(*t.Published, 10), strconv.FormatInt(*t.Processed, 10))
		}
		rows = append(rows, r)
	}
	width := make([]int, len(head))
	for _, r := range rows {
		for i, v := range r {
			width[i] = max(width[i], utf8.RuneCountInString(v))
		}
	}
	for _, r := range rows {
		var b strings.Builder
		for i, v := range r {
			pad := strings.Repeat(" ", width[i]-utf8.RuneCountInString(v))
			if i == 0 {
				b.WriteString(v + pad)
			} else {
				b.WriteString("  " + pad + v)
			}
		}
		fmt.Fprintln(c.stdout, b.String())
	}
	return nil
}

// topicCounts returns the counts per topic, in topic order, and their
// totals (the oldest pending row of all topics included).
func topicCounts(ctx context.Context, db *conn, all bool) ([]topicCount, gormoutbox.Stats, error) {
	var (
		stats map[string]gormoutbox.Stats
		total gormoutbox.Stats
		err   error
	)
	if all {
		stats, err = db.admin.CountStates(ctx)
	} else {
		stats, err = db.admin.TopicStats(ctx)
	}
	if err != nil {
		return nil, total, err
	}
	out := make([]topicCount, 0, len(stats))
	for topic, st := range stats {
		tc := topicCount{Topic: topic, Pending: st.Pending, Blocked: st.Blocked, Dead: st.Dead, AwaitingAck: st.Awaiting, Failed: st.Failed}
		if all {
			tc.Published, tc.Processed = &st.Published, &st.Processed
		}
		out = append(out, tc)
		total.Pending += st.Pending
		total.Blocked += st.Blocked
		total.Dead += st.Dead
		total.Awaiting += st.Awaiting
		total.Failed += st.Failed
		if !st.OldestPending.IsZero() && (total.OldestPending.IsZero() || st.OldestPending.Before(total.OldestPending)) {
			total.OldestPending = st.OldestPending
		}
	}
	slices.SortFunc(out, func(a, b topicCount) int { return strings.Compare(a.Topic, b.Topic) })
	return out, total, nil
}
