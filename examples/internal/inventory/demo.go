package inventory

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	outboxkafka "github.com/go-outbox/outbox/kafka"
	"github.com/go-outbox/outbox/scheduler"
)

// Options configure Demo. Only Title is needed.
type Options struct {
	// Title names the database in the output, e.g. "PostgreSQL, schema
	// outbox_demo".
	Title string

	// Brokers are the Kafka bootstrap brokers, "host:port[,host:port...]".
	// Empty: Demo starts an in-process kfake cluster.
	Brokers string

	// Out receives the demo's output. Default os.Stdout.
	Out io.Writer

	// Logger receives the logs of the relay, the scheduler and the
	// consumer (failed passes, retries, broker errors). Default: warnings
	// and errors, as text, to os.Stderr.
	Logger *slog.Logger

	// Timeout bounds the wait for the events to arrive. Default 15s.
	Timeout time.Duration
}

// RelayJob is the name of the relay's job in the scheduler, and RelaySpec
// its cron spec: every second (six fields, the first one seconds).
const (
	RelayJob  = "outbox-relay"
	RelaySpec = "* * * * * *"
)

// Demo runs the inventory example end to end on db:
//
//  1. Setup, then the stock changes of Run through GORM; each commits its
//     event to the outbox in the same transaction, and the refused
//     reservation (RefusedOrder) is rolled back with its event;
//  2. the outbox rows they produced are printed;
//  3. a relay (gormoutbox.NewRelay with kafka.NewPublisher), scheduled with
//     the scheduler package on RelaySpec, drains the outbox to Kafka
//     (o.Brokers, or an in-process kfake cluster) while a consumer prints
//     every message that arrives on Topics;
//  4. once every event has arrived (or o.Timeout has passed) the scheduler
//     is stopped and Demo checks that every committed event arrived, in
//     outbox order per key, and that the refused reservation did not.
//
// It returns an error when anything failed or was missing.
func Demo(ctx context.Context, db *gorm.DB, o Options) error {
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if o.Timeout <= 0 {
		o.Timeout = 15 * time.Second
	}
	out := &printer{w: o.Out}
	out.printf("The inventory example on %s, end to end.\n\n", o.Title)

	// Kafka first, so that a wrong broker address fails before anything
	// is written.
	k, err := openKafka(ctx, o.Brokers, o.Logger)
	if err != nil {
		return err
	}
	defer k.Close()
	if k.cluster != nil {
		out.printf("Kafka: an in-process kfake cluster at %s\n", strings.Join(k.addrs, ","))
		out.printf("  (pass -brokers or set OUTBOX_KAFKA_BROKERS to use your own cluster)\n")
	} else {
		out.printf("Kafka: the brokers at %s\n", strings.Join(k.addrs, ","))
	}
	parts, err := k.createTopics(ctx)
	if err != nil {
		return err
	}
	for _, t := range Topics {
		out.printf("  topic %-10s %d partitions\n", t, len(parts[t]))
	}

	out.printf("\n1. Stock changes through GORM; each commits its event to the outbox in the same transaction:\n")
	if _, err := Setup(ctx, db); err != nil {
		return err
	}
	if err := Run(ctx, db, out); err != nil {
		return err
	}

	rows, err := ReadOutbox(ctx, db)
	if err != nil {
		return err
	}
	out.printf("\n2. The outbox rows they produced (%d events; nothing has left the database yet):\n", len(rows))
	if err := PrintOutbox(out, rows); err != nil {
		return err
	}
	if len(rows) != WantEvents {
		return fmt.Errorf("outbox has %d rows, want %d", len(rows), WantEvents)
	}

	// The consumer starts at the current end of each partition, so that a
	// topic of an earlier run is not read again, and keeps only the events
	// of this run's outbox rows.
	starts, err := k.endOffsets(ctx, parts)
	if err != nil {
		return err
	}
	col := newCollector(rows, out)
	cons, err := k.consume(ctx, starts, col.add)
	if err != nil {
		return err
	}
	defer cons.Close()

	// The relay: what a service runs next to its writes. It claims the
	// committed rows, publishes them with kafka-go, and marks them published.
	pub, err := outboxkafka.NewPublisher(outboxkafka.Config{Brokers: k.addrs})
	if err != nil {
		return err
	}
	defer pub.Close()
	relay, err := gormoutbox.NewRelay(db, pub, gormoutbox.RelayConfig{Logger: o.Logger})
	if err != nil {
		return err
	}
	sched := scheduler.New(scheduler.Config{Logger: o.Logger})
	err = sched.Add(RelayJob, RelaySpec, func(ctx context.Context) error {
		res, err := relay.Drain(ctx)
		if res.Batches > 0 {
			out.printf("  relay pass: %s\n", describe(res))
		}
		return err
	})
	if err != nil {
		return err
	}
	stop := sync.OnceValue(func() error {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		return sched.Stop(sctx)
	})
	defer stop()

	out.printf("\n3. The relay, scheduled every second (cron %q), publishes them to Kafka;\n", RelaySpec)
	out.printf("   a consumer (one kafka-go Reader per partition) prints each message as it arrives:\n")
	out.printf("  %-22s %-8s %-14s %s\n", "TOPIC/PARTITION@OFFSET", "KEY", "EVENT-TYPE", "PAYLOAD")
	sched.Start()
	// The first pass now rather than at the next tick.
	if err := sched.RunNow(RelayJob); err != nil {
		return err
	}
	timedOut := false
	timer := time.NewTimer(o.Timeout)
	defer timer.Stop()
wait:
	for !col.complete() {
		select {
		case <-col.arrived:
		case <-timer.C:
			timedOut = true
			break wait
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	// Stop waits for a pass in flight, so its line is printed above.
	if err := stop(); err != nil {
		return err
	}
	out.printf("\n4. Check:\n")
	js, _ := sched.Stats(RelayJob)
	out.printf("  scheduler stopped after %s", plural(int(js.Runs), "relay pass", "relay passes"))
	if js.Failures > 0 {
		out.printf(" (%d failed: see the log above)", js.Failures)
	}
	out.printf("\n")
	st, err := relay.Stats(ctx)
	if err != nil {
		return err
	}
	out.printf("  outbox: %d rows, %d pending, %d dead-lettered\n", len(rows), st.Pending, st.Dead)
	if timedOut {
		out.printf("  gave up waiting for the events after %v\n", o.Timeout)
	}
	cons.Close()

	rep := check(rows, col.snapshot())
	for _, p := range rep.Problems {
		out.printf("  PROBLEM: %s\n", p)
	}
	if rep.Foreign > 0 {
		out.printf("  %d messages of other producers (not in this run's outbox) ignored\n", rep.Foreign)
	}
	out.printf("  the refused reservation (%s): %d outbox rows, %d messages\n", RefusedOrder, rep.RefusedRows, rep.RefusedMsgs)
	out.printf("\n%d events committed, %d arrived in order, %d missing, %d duplicates\n",
		rep.Committed, rep.InOrder, rep.Missing, rep.Duplicates)
	if !rep.OK() || st.Pending > 0 || st.Dead > 0 {
		return errors.New("the events did not all arrive as committed: see the PROBLEM lines above")
	}
	out.printf("OK: every committed change reached Kafka, in order per key, and the rolled-back one did not.\n")
	return nil
}

// describe says what a relay pass did.
func describe(res gormoutbox.DrainResult) string {
	parts := []string{fmt.Sprintf("%d published", res.Published)}
	if res.Retried > 0 {
		parts = append(parts, fmt.Sprintf("%d to retry", res.Retried))
	}
	if res.Dead > 0 {
		parts = append(parts, fmt.Sprintf("%d dead-lettered", res.Dead))
	}
	if res.HeldBack > 0 {
		parts = append(parts, fmt.Sprintf("%d held back behind a failed one", res.HeldBack))
	}
	return fmt.Sprintf("%s (%s)", strings.Join(parts, ", "), plural(res.Batches, "batch", "batches"))
}

// plural returns "1 thing" or "n things".
func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

// printer serialises the output of the demo, the relay passes and the
// consumer's goroutines.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format, args...)
}

// Write implements io.Writer.
func (p *printer) Write(b []byte) (int, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.w.Write(b)
}

// OutboxRow is an outbox row as the demo shows it.
type OutboxRow struct {
	ID          int64
	EventID     string
	Topic       string
	Key         []byte // nil: no key
	Type        string
	AggregateID string
	Payload     []byte
}

// ReadOutbox returns the rows of the outbox table in id order.
func ReadOutbox(ctx context.Context, db *gorm.DB) ([]OutboxRow, error) {
	sqlDB, err := db.DB()
	if err != nil {
		return nil, err
	}
	rs, err := sqlDB.QueryContext(ctx, `SELECT id, event_id, topic, msg_key, event_type, aggregate_id, payload FROM outbox ORDER BY id`)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var rows []OutboxRow
	for rs.Next() {
		var r OutboxRow
		if err := rs.Scan(&r.ID, &r.EventID, &r.Topic, &r.Key, &r.Type, &r.AggregateID, &r.Payload); err != nil {
			return nil, err
		}
		rows = append(rows, r)
	}
	return rows, rs.Err()
}

// PrintOutbox writes rows as a table.
func PrintOutbox(w io.Writer, rows []OutboxRow) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  ID\tTOPIC\tKEY\tTYPE\tAGGREGATE\tPAYLOAD")
	for _, r := range rows {
		fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\n", r.ID, r.Topic, r.Key, r.Type, r.AggregateID, strings.TrimSpace(string(r.Payload)))
	}
	return tw.Flush()
}

// BrokersFlag defines the -brokers flag of the examples, which defaults to
// OUTBOX_KAFKA_BROKERS, else OUTBOX_DEMO_KAFKA_BROKERS (set by "make demo").
func BrokersFlag() *string {
	return flag.String("brokers", FirstEnv("OUTBOX_KAFKA_BROKERS", "OUTBOX_DEMO_KAFKA_BROKERS"),
		"Kafka bootstrap brokers, host:port[,host:port...]; empty: an in-process kfake cluster")
}

// FirstEnv returns the value of the first of keys that is set.
func FirstEnv(keys ...string) string {
	for _, k := range keys {
		if v := os.Getenv(k); v != "" {
			return v
		}
	}
	return ""
}

var errNoBrokers = errors.New("no Kafka broker address in -brokers (or OUTBOX_KAFKA_BROKERS)")
