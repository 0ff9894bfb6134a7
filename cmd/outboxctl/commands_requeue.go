package main

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/go-outbox/outbox/gormoutbox"
)

// ---- replay

func cmdReplay(ctx context.Context, c *cli, args []string) error {
	return requeue(ctx, c, args, deadKind())
}

func cmdResend(ctx context.Context, c *cli, args []string) error {
	return requeue(ctx, c, args, failedKind())
}

// requeue puts rows of kind k back in the queue: by id, by topic or all.
func requeue(ctx context.Context, c *cli, args []string, k rowKind) error {
	fs := flag.NewFlagSet(k.requeue, flag.ContinueOnError)
	topic := fs.String("topic", "", "every one of the "+k.noun+" of this topic")
	all := fs.Bool("all", false, "every one of the "+k.noun)
	if err := c.parse(k.requeue, fs, args); err != nil {
		return err
	}
	modes := 0
	if fs.NArg() > 0 {
		modes++
	}
	if *topic != "" {
		modes++
	}
	if *all {
		modes++
	}
	if modes != 1 {
		return usagef("give ids, -topic T or -all (exactly one of them)")
	}
	var ids []int64
	for _, a := range fs.Args() {
		id, err := parseID(a)
		if err != nil {
			return err
		}
		if !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	db, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer db.Close()

	if len(ids) > 0 {
		found, err := among(ctx, db, k, ids)
		if err != nil {
			return db.explain(ctx, err)
		}
		n, err := putBack(ctx, db, k, found)
		if err != nil {
			return err
		}
		fmt.Fprintf(c.stdout, "%s %d of %d %s\n", k.verb, n, len(ids), k.noun)
		var missing []string
		for _, id := range ids {
			if !slices.Contains(found, id) {
				missing = append(missing, strconv.FormatInt(id, 10))
			}
		}
		if len(missing) > 0 {
			return &notFoundError{fmt.Sprintf("not %s in %s (left alone): %s", k.noun, db.table, strings.Join(missing, ", "))}
		}
		return nil
	}

	// -topic or -all: gather the ids page by page, then put them back.
	q := gormoutbox.DeadLetterQuery{Topic: *topic, Limit: pageSize}
	for {
		rows, err := k.query(ctx, db, q)
		if err != nil {
			return db.explain(ctx, err)
		}
		for _, r := range rows {
			ids = append(ids, r.ID)
		}
		if len(rows) < q.Limit {
			break
		}
		q.AfterID = rows[len(rows)-1].ID
	}
	n, err := putBack(ctx, db, k, ids)
	if err != nil {
		return err
	}
	what := "every topic"
	if *topic != "" {
		what = "topic " + strconv.Quote(*topic)
	}
	fmt.Fprintf(c.stdout, "%s %d %s of %s\n", k.verb, n, k.noun, what)
	if int(n) < len(ids) {
		fmt.Fprintf(c.stdout, "(%d were %s meanwhile by someone else)\n", int64(len(ids))-n, k.verb)
	}
	return nil
}

// putBack puts ids back in chunks and returns how many were put back.
func putBack(ctx context.Context, db *conn, k rowKind, ids []int64) (int64, error) {
	var total int64
	for chunk := range slices.Chunk(ids, pageSize) {
		n, err := k.put(ctx, db, chunk...)
		total += n
		if err != nil {
			return total, fmt.Errorf("%s %d, then: %w", k.verb, total, err)
		}
	}
	return total, nil
}

// among returns those of ids that are rows of kind k.
func among(ctx context.Context, db *conn, k rowKind, ids []int64) ([]int64, error) {
	return db.admin.InState(ctx, k.state, ids...)
}
