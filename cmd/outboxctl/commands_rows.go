package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-outbox/outbox/gormoutbox"
)

// ---- dead list / dead show

// deadLetter is a dead row as printed.
type deadLetter struct {
	ID            int64      `json:"id"`
	EventID       string     `json:"event_id"`
	Topic         string     `json:"topic"`
	Key           *string    `json:"key"`
	KeyHex        string     `json:"key_hex,omitempty"`
	Type          string     `json:"type"`
	AggregateType string     `json:"aggregate_type,omitempty"`
	AggregateID   string     `json:"aggregate_id,omitempty"`
	Shard         int        `json:"shard"`
	Attempts      int        `json:"attempts"`
	CreatedAt     time.Time  `json:"created_at"`
	AvailableAt   time.Time  `json:"available_at"`
	DeadAt        *time.Time `json:"dead_at"`
	PublishedAt   *time.Time `json:"published_at,omitempty"`
	FailedAt      *time.Time `json:"failed_at,omitempty"`
	// ProcessAttempts is the process attempt the row is at (rows that ask
	// consumers for an answer).
	ProcessAttempts int               `json:"process_attempts"`
	LastError       string            `json:"last_error"`
	Headers         map[string]string `json:"headers,omitempty"`
	Payload         *string           `json:"payload,omitempty"`
	PayloadHex      string            `json:"payload_hex,omitempty"`
	// PayloadBytes is the size of the whole payload; PayloadTruncated
	// says that Payload or PayloadHex holds only its start (dead show
	// without -full).
	PayloadBytes     int  `json:"payload_bytes,omitempty"`
	PayloadTruncated bool `json:"payload_truncated,omitempty"`

	shown int // payload bytes in Payload or PayloadHex
}

func isText(b []byte) bool {
	if !utf8.Valid(b) {
		return false
	}
	for _, r := range string(b) {
		if !unicode.IsPrint(r) && !unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

func utc(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// shownPayload is how much of a payload dead show prints without -full.
const shownPayload = 4 << 10

// toDeadLetter converts a row for printing. With withPayload, the headers
// and at most limit bytes of the payload (all of it when limit is 0) are
// included.
func toDeadLetter(r gormoutbox.Row, withPayload bool, limit int) deadLetter {
	d := deadLetter{
		ID: r.ID, EventID: r.EventID, Topic: r.Topic, Type: r.EventType,
		AggregateType: r.AggregateType, AggregateID: r.AggregateID, Shard: r.Shard, Attempts: r.Attempts,
		CreatedAt: r.CreatedAt.UTC(), AvailableAt: r.AvailableAt.UTC(), DeadAt: utc(r.DeadAt),
		PublishedAt: utc(r.PublishedAt), FailedAt: utc(r.FailedAt), ProcessAttempts: r.ProcessAttempts, LastError: r.LastError,
	}
	if r.Key != nil {
		if isText(r.Key) {
			k := string(r.Key)
			d.Key = &k
		} else {
			d.KeyHex = hex.EncodeToString(r.Key)
		}
	}
	if withPayload {
		d.Headers = r.Headers
		d.PayloadBytes = len(r.Payload)
		text := isText(r.Payload)
		shown := r.Payload
		if limit > 0 && len(shown) > limit {
			n := limit
			for text && n > 0 && !utf8.RuneStart(shown[n]) {
				n-- // cut between characters
			}
			shown = shown[:n]
			d.PayloadTruncated = true
		}
		if text {
			p := string(shown)
			d.Payload = &p
		} else {
			d.PayloadHex = hex.EncodeToString(shown)
		}
		d.shown = len(shown)
	}
	return d
}

func (d deadLetter) keyText() string {
	switch {
	case d.Key != nil:
		return *d.Key
	case d.KeyHex != "":
		return "0x" + d.KeyHex
	}
	return "-"
}

// oneLine truncates s to n runes on one line.
func oneLine(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func timeText(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

// rowKind is a kind of row the operator lists and puts back: dead letters
// (replay) or failed rows (resend).
type rowKind struct {
	list, requeue string              // command names: "dead list", "replay"
	noun          string              // "dead letters"
	verb          string              // "replayed"
	state         gormoutbox.RowState // the rows' state
	at            string              // column head of the kind's time
	time          func(deadLetter) *time.Time
	query         func(ctx context.Context, db *conn, q gormoutbox.DeadLetterQuery) ([]gormoutbox.Row, error)
	put           func(ctx context.Context, db *conn, ids ...int64) (int64, error)
}

// deadKind is the kind of the dead letters: dead list, replay.
func deadKind() rowKind {
	return rowKind{list: "dead list", requeue: "replay", noun: "dead letters", verb: "replayed",
		state: gormoutbox.StateDead, at: "DEAD_AT", time: func(d deadLetter) *time.Time { return d.DeadAt },
		query: func(ctx context.Context, db *conn, q gormoutbox.DeadLetterQuery) ([]gormoutbox.Row, error) {
			return db.admin.DeadLetters(ctx, q)
		},
		put: func(ctx context.Context, db *conn, ids ...int64) (int64, error) { return db.admin.Replay(ctx, ids...) }}
}

// failedKind is the kind of the failed rows: failed list, resend.
func failedKind() rowKind {
	return rowKind{list: "failed list", requeue: "resend", noun: "failed rows", verb: "re-sent",
		state: gormoutbox.StateFailed, at: "FAILED_AT", time: func(d deadLetter) *time.Time { return d.FailedAt },
		query: func(ctx context.Context, db *conn, q gormoutbox.DeadLetterQuery) ([]gormoutbox.Row, error) {
			return db.admin.Failed(ctx, q)
		},
		put: func(ctx context.Context, db *conn, ids ...int64) (int64, error) { return db.admin.Resend(ctx, ids...) }}
}

func cmdDeadList(ctx context.Context, c *cli, args []string) error {
	return listRows(ctx, c, args, deadKind())
}

func cmdFailedList(ctx context.Context, c *cli, args []string) error {
	return listRows(ctx, c, args, failedKind())
}

func listRows(ctx context.Context, c *cli, args []string, k rowKind) error {
	fs := flag.NewFlagSet(k.list, flag.ContinueOnError)
	topic := fs.String("topic", "", "only "+k.noun+" of this topic")
	limit := fs.Int("limit", 50, "list at most this many (1..10000)")
	after := fs.Int64("after", 0, "only ids greater than this (paging)")
	asJSON := fs.Bool("json", false, "print JSON")
	if err := c.parse(k.list, fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	if *limit < 1 || *limit > 10000 {
		return usagef("-limit %d: want 1..10000", *limit)
	}
	if *after < 0 {
		return usagef("-after %d: want an id, 0 or more", *after)
	}
	db, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	rows, err := k.query(ctx, db, gormoutbox.DeadLetterQuery{Topic: *topic, AfterID: *after, Limit: *limit})
	if err != nil {
		return db.explain(ctx, err)
	}
	out := make([]deadLetter, len(rows))
	for i, r := range rows {
		out[i] = toDeadLetter(r, false, 0)
	}
	if *asJSON {
		return writeJSON(c.stdout, out)
	}
	if len(out) == 0 {
		fmt.Fprintln(c.stdout, "no "+k.noun)
		return nil
	}
	tw := tabwriter.NewWriter(c.stdout, 0, 4, 2, ' ', 0)
	attempts := "ATTEMPTS"
	if k.requeue == "resend" {
		attempts = "PROCESS_ATTEMPTS"
	}
	fmt.Fprintf(tw, "ID\tTOPIC\tKEY\tTYPE\t%s\t%s\tLAST_ERROR\n", attempts, k.at)
	for _, d := range out {
		n := d.Attempts
		if k.requeue == "resend" {
			n = d.ProcessAttempts
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%d\t%s\t%s\n", d.ID, oneLine(d.Topic, 40), oneLine(d.keyText(), 32),
			oneLine(d.Type, 32), n, timeText(k.time(d)), oneLine(d.LastError, 60))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(out) == *limit {
		next := fmt.Sprintf("outboxctl %s -after %d -limit %d", k.list, out[len(out)-1].ID, *limit)
		if *topic != "" {
			next += " -topic " + strconv.Quote(*topic)
		}
		fmt.Fprintf(c.stdout, "(limit reached; more may follow: %s)\n", next)
	}
	return nil
}

// parseID parses a positive row id given as an argument.
func parseID(s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id < 1 {
		if strings.HasPrefix(s, "-") && err != nil {
			return 0, usagef("bad id %q: give flags before the ids", s)
		}
		return 0, usagef("bad id %q: want a positive integer", s)
	}
	return id, nil
}

// deadLetterByID returns the dead letter id, or a notFoundError.
func deadLetterByID(ctx context.Context, db *conn, id int64) (gormoutbox.Row, error) {
	rows, err := db.admin.DeadLetters(ctx, gormoutbox.DeadLetterQuery{AfterID: id - 1, Limit: 1})
	if err != nil {
		return gormoutbox.Row{}, db.explain(ctx, err)
	}
	if len(rows) == 0 || rows[0].ID != id {
		return gormoutbox.Row{}, &notFoundError{fmt.Sprintf("%d is not a dead letter in %s (no such row, or it is pending or published)", id, db.table)}
	}
	return rows[0], nil
}

func cmdDeadShow(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("dead show", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	full := fs.Bool("full", false, fmt.Sprintf("print the whole payload (default: its first %d bytes)", shownPayload))
	if err := c.parse("dead show", fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return usagef("want exactly one id, got %d arguments", fs.NArg())
	}
	id, err := parseID(fs.Arg(0))
	if err != nil {
		return err
	}
	db, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	row, err := deadLetterByID(ctx, db, id)
	if err != nil {
		return err
	}
	limit := shownPayload
	if *full {
		limit = 0
	}
	d := toDeadLetter(row, true, limit)
	if *asJSON {
		return writeJSON(c.stdout, d)
	}
	w := c.stdout
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	fmt.Fprintf(tw, "id:\t%d\n", d.ID)
	fmt.Fprintf(tw, "event id:\t%s\n", d.EventID)
	fmt.Fprintf(tw, "topic:\t%s\n", d.Topic)
	fmt.Fprintf(tw, "key:\t%s\n", d.keyShown())
	fmt.Fprintf(tw, "type:\t%s\n", d.Type)
	fmt.Fprintf(tw, "aggregate type:\t%s\n", orNone(d.AggregateType))
	fmt.Fprintf(tw, "aggregate id:\t%s\n", orNone(d.AggregateID))
	fmt.Fprintf(tw, "shard:\t%d\n", d.Shard)
	fmt.Fprintf(tw, "attempts:\t%d\n", d.Attempts)
	fmt.Fprintf(tw, "created at:\t%s\n", timeText(&d.CreatedAt))
	fmt.Fprintf(tw, "available at:\t%s\n", timeText(&d.AvailableAt))
	fmt.Fprintf(tw, "dead at:\t%s\n", timeText(d.DeadAt))
	fmt.Fprintf(tw, "published at:\t%s\n", timeText(d.PublishedAt))
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "last error:\n  %s\n", strings.ReplaceAll(orNone(d.LastError), "\n", "\n  "))
	fmt.Fprintln(w, "headers:")
	if len(d.Headers) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	names := make([]string, 0, len(d.Headers))
	for k := range d.Headers {
		names = append(names, k)
	}
	slices.Sort(names)
	for _, k := range names {
		fmt.Fprintf(w, "  %s: %s\n", k, d.Headers[k])
	}
	size := fmt.Sprintf("%d bytes", d.PayloadBytes)
	if d.PayloadTruncated {
		size = fmt.Sprintf("%d bytes, the first %d shown", d.PayloadBytes, d.shown)
	}
	if d.Payload != nil {
		fmt.Fprintf(w, "payload (%s):\n%s\n", size, *d.Payload)
	} else {
		fmt.Fprintf(w, "payload (%s, binary, hex):\n%s\n", size, d.PayloadHex)
	}
	if d.PayloadTruncated {
		fmt.Fprintf(w, "… %d more bytes not shown: outboxctl dead show -full %d prints them all\n", d.PayloadBytes-d.shown, d.ID)
	}
	return nil
}

// orNone returns s, or "(none)" when s is empty.
func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// keyShown is the key as dead show prints it.
func (d deadLetter) keyShown() string {
	switch {
	case d.Key == nil && d.KeyHex == "":
		return "(none)"
	case d.Key != nil && *d.Key == "":
		return "(empty)"
	}
	return d.keyText()
}
