package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/inbox"
)

// pageSize is the DeadLetters page and Replay chunk size.
const pageSize = 1000

func noArgs(fs *flag.FlagSet) error {
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// ---- migrate

func cmdMigrate(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	printOnly := fs.Bool("print", false, "print the DDL instead of running it: no database is needed, -driver names it")
	inboxTable := fs.String("inbox-table", "", `also the inbox table of package inbox, "table" or "schema.table" (default: none)`)
	if err := c.parse("migrate", fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	var inboxT dialects.Table
	if *inboxTable != "" {
		t, err := dialects.ParseTable(*inboxTable)
		if err != nil {
			return usagef("-inbox-table: %v", err)
		}
		inboxT = t
	}
	if *printOnly {
		return printDDL(c, inboxT)
	}
	db, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.plugin.Migrate(ctx); err != nil {
		return err
	}
	v, err := db.d.SchemaVersion(ctx, db.sqlDB, db.table)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "outbox table %s on %s is migrated (schema version %d)\n", db.table, db.driver, v)
	if inboxT.Name == "" {
		return nil
	}
	if err := inbox.MigrateTable(ctx, db.db, inboxT.String()); err != nil {
		return err
	}
	if v, err = db.d.SchemaVersion(ctx, db.sqlDB, inboxT); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "inbox table %s on %s is migrated (schema version %d)\n", inboxT, db.driver, v)
	return nil
}

// printDDL writes the DDL of the outbox table, and of the inbox table
// when inboxT is set, without a database.
func printDDL(c *cli, inboxT dialects.Table) error {
	driver, table, err := c.g.checkOffline()
	if err != nil {
		return err
	}
	scripts := make([]dialects.Script, 0, 2)
	s, err := gormoutbox.DDL(driver, table.String())
	if err != nil {
		return usagef("%v", err)
	}
	scripts = append(scripts, s)
	if inboxT.Name != "" {
		s, err := inbox.DDL(driver, inboxT.String())
		if err != nil {
			return usagef("%v", err)
		}
		scripts = append(scripts, s)
	}
	fmt.Fprintf(c.stdout, "-- Printed by outboxctl migrate -print -driver %s. Apply it to a database without\n", driver)
	fmt.Fprintln(c.stdout, "-- these tables; \"outboxctl migrate\" and Migrate then find nothing to do.")
	if driver == "postgres" {
		fmt.Fprintln(c.stdout, "-- In one transaction: psql -v ON_ERROR_STOP=1 -1 -f FILE")
	} else {
		fmt.Fprintln(c.stdout, "-- MySQL commits each DDL statement: if one fails, drop what it created before the next try.")
	}
	for _, s := range scripts {
		fmt.Fprintf(c.stdout, "\n%s", s)
	}
	return nil
}

// ---- status

// topicCount is one topic's rows per state. Published (waiting for
// nothing) and Processed are counted only with -all.
type topicCount struct {
	Topic       string `json:"topic"`
	Pending     int64  `json:"pending"`
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
	Dead    int64  `json:"dead"`
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
	rep := statusReport{Driver: db.driver, Table: db.table.String(), Pending: st.Pending, Dead: st.Dead,
		AwaitingAck: st.Awaiting, Failed: st.Failed, Topics: topics}
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
	head := []string{"TOPIC", "PENDING", "AWAITING_ACK", "FAILED", "DEAD"}
	if *all {
		head = append(head, "PUBLISHED", "PROCESSED")
	}
	rows := [][]string{head}
	for _, t := range rep.Topics {
		r := []string{t.Topic}
		for _, n := range []int64{t.Pending, t.AwaitingAck, t.Failed, t.Dead} {
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
		stats, err = db.relay.CountStates(ctx)
	} else {
		stats, err = db.relay.TopicStats(ctx)
	}
	if err != nil {
		return nil, total, err
	}
	out := make([]topicCount, 0, len(stats))
	for topic, st := range stats {
		tc := topicCount{Topic: topic, Pending: st.Pending, Dead: st.Dead, AwaitingAck: st.Awaiting, Failed: st.Failed}
		if all {
			tc.Published, tc.Processed = &st.Published, &st.Processed
		}
		out = append(out, tc)
		total.Pending += st.Pending
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
	list, requeue string // command names: "dead list", "replay"
	noun          string // "dead letters"
	verb          string // "replayed"
	where         string // SQL predicate of the kind
	at            string // column head of the kind's time
	time          func(deadLetter) *time.Time
	query         func(ctx context.Context, db *conn, q gormoutbox.DeadLetterQuery) ([]gormoutbox.Row, error)
	put           func(ctx context.Context, db *conn, ids ...int64) (int64, error)
}

var (
	deadKind = rowKind{list: "dead list", requeue: "replay", noun: "dead letters", verb: "replayed",
		where: "dead_at IS NOT NULL", at: "DEAD_AT", time: func(d deadLetter) *time.Time { return d.DeadAt },
		query: func(ctx context.Context, db *conn, q gormoutbox.DeadLetterQuery) ([]gormoutbox.Row, error) {
			return db.relay.DeadLetters(ctx, q)
		},
		put: func(ctx context.Context, db *conn, ids ...int64) (int64, error) { return db.relay.Replay(ctx, ids...) }}
	failedKind = rowKind{list: "failed list", requeue: "resend", noun: "failed rows", verb: "re-sent",
		where: "failed_at IS NOT NULL", at: "FAILED_AT", time: func(d deadLetter) *time.Time { return d.FailedAt },
		query: func(ctx context.Context, db *conn, q gormoutbox.DeadLetterQuery) ([]gormoutbox.Row, error) {
			return db.relay.Failed(ctx, q)
		},
		put: func(ctx context.Context, db *conn, ids ...int64) (int64, error) { return db.relay.Resend(ctx, ids...) }}
)

func cmdDeadList(ctx context.Context, c *cli, args []string) error {
	return listRows(ctx, c, args, deadKind)
}

func cmdFailedList(ctx context.Context, c *cli, args []string) error {
	return listRows(ctx, c, args, failedKind)
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
	rows, err := db.relay.DeadLetters(ctx, gormoutbox.DeadLetterQuery{AfterID: id - 1, Limit: 1})
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

// ---- replay

func cmdReplay(ctx context.Context, c *cli, args []string) error {
	return requeue(ctx, c, args, deadKind)
}

func cmdResend(ctx context.Context, c *cli, args []string) error {
	return requeue(ctx, c, args, failedKind)
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
	var found []int64
	for chunk := range slices.Chunk(ids, pageSize) {
		rows, err := db.sqlDB.QueryContext(ctx, `SELECT id FROM `+db.quoted()+
			` WHERE `+k.where+` AND id IN (`+dialects.IDList(chunk)+`)`)
		if err != nil {
			return nil, fmt.Errorf("look up ids in %s: %w", db.table, err)
		}
		for rows.Next() {
			var id int64
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, err
			}
			found = append(found, id)
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, err
		}
	}
	return found, nil
}

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
	n, err := db.relay.Cleanup(ctx, older.d)
	if err != nil {
		if n > 0 {
			return fmt.Errorf("purged %d rows, then: %w", n, db.explain(ctx, err))
		}
		return db.explain(ctx, err)
	}
	fmt.Fprintf(c.stdout, "purged %d rows published more than %v ago from %s\n", n, older.d, db.table)
	return nil
}
