package main

import (
	"context"
	"flag"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ---- purge

// retention is a flag.Value for a duration that also takes days ("7d").
type retention struct {
	d   time.Duration
	set bool
}

func (r *retention) String() string {
	if r == nil || !r.set {
		return ""
	}
	return r.d.String()
}

func (r *retention) Set(s string) error {
	var (
		d   time.Duration
		err error
	)
	if days, ok := strings.CutSuffix(s, "d"); ok {
		var n float64
		n, err = strconv.ParseFloat(days, 64)
		d = time.Duration(n * float64(24*time.Hour))
	} else {
		d, err = time.ParseDuration(s)
	}
	if err != nil {
		return fmt.Errorf("want a duration such as 90m, 24h or 7d")
	}
	if d < 0 {
		return fmt.Errorf("must not be negative")
	}
	r.d, r.set = d, true
	return nil
}

func cmdPurge(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("purge", flag.ContinueOnError)
	var older retention
	fs.Var(&older, "older-than", "delete rows published longer ago than this, e.g. 24h or 7d (required)")
	if err := c.parse("purge", fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if !older.set {
		return usagef("-older-than is required, e.g. -older-than 24h")
	}
	db, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	n, err := db.admin.Cleanup(ctx, older.d)
	if err != nil {
		if n > 0 {
			return fmt.Errorf("purged %d rows, then: %w", n, db.explain(ctx, err))
		}
		return db.explain(ctx, err)
	}
	fmt.Fprintf(c.stdout, "purged %d rows published more than %v ago from %s\n", n, older.d, db.table)
	return nil
}
