package inventory

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/ack"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/hooks"
	"github.com/go-outbox/outbox/inbox"
	outboxkafka "github.com/go-outbox/outbox/kafka"
	"github.com/go-outbox/outbox/scheduler"
)

// Options configure Sync. Title, Products and Orders are needed.
type Options struct {
	// Title names the databases in the output.
	Title string
	// Products and Orders are the two services' databases (empty).
	Products, Orders *gorm.DB
	// Brokers are the Kafka bootstrap brokers, "host:port[,host:port...]".
	// Empty: an in-process kfake cluster.
	Brokers string
	// Items is how many SKUs the product service starts with. Default 100.
	Items int
	// Changes is how many random stock changes the writers make in all,
	// Writers how many goroutines make them. Defaults 2000 and 8.
	Changes, Writers int
	// FailPercent of the events fail once on the order side (chosen by a
	// hash of the change — SKU, version, event type — and Seed), so that
	// the FAILED path runs.
	// Default 5; negative: none.
	FailPercent int
	// Seed makes the random changes and the failures repeatable. Default 1.
	Seed uint64
	// MaxAttempts bounds the process attempts of an event. Default 3.
	MaxAttempts int
	// Timeout bounds the wait for the two services to converge. Default 2m.
	Timeout time.Duration
	// Out receives the output. Default os.Stdout.
	Out io.Writer
	// Logger receives the libraries' logs. Default: warnings and errors,
	// as text, to os.Stderr.
	Logger *slog.Logger
}

// Relay jobs in the schedulers, and their cron spec (every second; the
// in-process wake-ups make them run sooner after each commit).
const (
	RelayJob  = "outbox-relay"
	RelaySpec = "* * * * * *"
)

// Result is what Sync measured.
type Result struct {
	Events, Resent, Processed, Failed int64
	Acks                              int64
	Duplicates                        int64
	ProductRows, CopyRows             int
	Equal                             bool
	Took                              time.Duration
}

// Sync runs the inventory synchronisation end to end and checks that both
// inventory tables end equal. It returns an error if they differ, an event
// failed for good, or they did not converge within the timeout.
func Sync(ctx context.Context, o Options) (Result, error) {
	var res Result
	if o.Products == nil || o.Orders == nil {
		return res, errors.New("inventory: Products and Orders databases are needed")
	}
	if o.Items <= 0 {
		o.Items = 100
	}
	if o.Changes <= 0 {
		o.Changes = 2000
	}
	if o.Writers <= 0 {
		o.Writers = 8
	}
	if o.FailPercent == 0 {
		o.FailPercent = 5
	}
	if o.Seed == 0 {
		o.Seed = 1
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 3
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Minute
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	out := &printer{w: o.Out}
	out.printf("Inventory synchronisation on %s.\n\n", o.Title)

	// Kafka first, so that a wrong broker address fails before anything
	// is written.
	k, err := openKafka(ctx, o.Brokers, o.Logger)
	if err != nil {
		return res, err
	}
	defer k.Close()
	if k.cluster != nil {
		out.printf("Kafka: an in-process kfake cluster at %s (pass -brokers or set OUTBOX_KAFKA_BROKERS for yours)\n", strings.Join(k.addrs, ","))
	} else {
		out.printf("Kafka: the brokers at %s\n", strings.Join(k.addrs, ","))
	}
	parts, err := k.createTopics(ctx)
	if err != nil {
		return res, err
	}
	run := fmt.Sprintf("%x", rand.Uint32())
	ordersGroup, productsGroup := "inventory-orders-"+run, "inventory-products-"+run
	if err := k.seekGroupToEnd(ctx, ordersGroup, parts, TopicInventory); err != nil {
		return res, err
	}
	if err := k.seekGroupToEnd(ctx, productsGroup, parts, TopicAcks); err != nil {
		return res, err
	}

	// Both services: a plugin, a relay scheduled with cron and woken after
	// each commit, and an inbox consumer.
	counter := &ackCounter{}
	products, err := newService(ctx, o.Products, k.addrs, o.Logger, &Item{}, counter)
	if err != nil {
		return res, fmt.Errorf("product service: %w", err)
	}
	defer products.stop()
	orders, err := newService(ctx, o.Orders, k.addrs, o.Logger, &Copy{}, nil)
	if err != nil {
		return res, fmt.Errorf("order service: %w", err)
	}
	defer orders.stop()
	prefix := run + "-" // this run's SKUs (see orderService.prefix)
	osvc := &orderService{failPercent: max(o.FailPercent, 0), seed: o.Seed, prefix: prefix}
	orderIn, err := inbox.New(o.Orders, osvc.handle, inbox.Config{Brokers: k.addrs, GroupID: ordersGroup,
		Topics: []string{TopicInventory}, Logger: o.Logger, Workers: 4})
	if err != nil {
		return res, err
	}
	tracker := ack.NewTracker(ack.Config{MaxAttempts: o.MaxAttempts, Logger: o.Logger, Timeout: time.Minute,
		// The log hook at error level: the notification of an event that
		// failed for good (re-sends show in the progress lines).
		Hooks: []gormoutbox.AckHook{hooks.Slog(slog.New(minLevel{o.Logger.Handler(), slog.LevelError})), counter}})
	ackIn, err := inbox.New(o.Products, tracker.Handle, inbox.Config{Brokers: k.addrs, GroupID: productsGroup,
		Topics: []string{TopicAcks}, Logger: o.Logger, Workers: 4})
	if err != nil {
		return res, err
	}
	for _, c := range []*inbox.Consumer{orderIn, ackIn} {
		if err := c.Migrate(ctx); err != nil {
			return res, err
		}
	}
	// Events nobody answers within the tracker's Timeout are sent again
	// (or failed after the last attempt).
	if err := products.sched.Add("ack-timeout", "@every 10s", scheduler.AckTimeoutJob(tracker, o.Products)); err != nil {
		return res, err
	}
	cctx, stopConsumers := context.WithCancel(ctx)
	var cwg sync.WaitGroup
	consumerErr := make(chan error, 2)
	for _, c := range []*inbox.Consumer{orderIn, ackIn} {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			if err := c.Run(cctx); err != nil {
				consumerErr <- err
			}
		}()
	}
	stopAll := sync.OnceFunc(func() {
		stopConsumers()
		cwg.Wait()
		products.stop()
		orders.stop()
	})
	defer stopAll()

	out.printf("Product service: %d SKUs, then %d random stock changes from %d goroutines;\n", o.Items, o.Changes, o.Writers)
	out.printf("order service: a copy fed through the inbox, answering each event (%d%% fail once).\n\n", max(o.FailPercent, 0))
	began := time.Now()
	seedItems := make([]Item, o.Items)
	skus := make([]string, o.Items)
	for i := range seedItems {
		skus[i] = fmt.Sprintf("%ssku-%04d", prefix, i)
		seedItems[i] = Item{SKU: skus[i], Name: fmt.Sprintf("Item %d", i), Quantity: 100, Version: 1, CostPrice: 5}
	}
	if err := o.Products.WithContext(ctx).CreateInBatches(&seedItems, 500).Error; err != nil {
		return res, err
	}
	var changed atomic.Int64
	answered := func() int64 { return counter.processed.Load() + counter.gaveUp.Load() }
	progressDone := make(chan struct{})
	var pwg sync.WaitGroup
	pwg.Add(1)
	go func() { // progress, every second, while the services work
		defer pwg.Done()
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-tick.C:
				out.printf("  %5.1fs  committed %d events, sent %d, answered %d (processed %d, re-sent %d, failed %d)\n",
					time.Since(began).Seconds(), changed.Load()+int64(o.Items), counter.published.Load(), answered(),
					counter.processed.Load(), counter.resent.Load(), counter.gaveUp.Load())
			case <-progressDone:
				return
			}
		}
	}()
	stopProgress := sync.OnceFunc(func() { close(progressDone); pwg.Wait() })
	defer stopProgress()
	var wg sync.WaitGroup
	werr := make(chan error, o.Writers)
	for w := 0; w < o.Writers; w++ {
		n := o.Changes / o.Writers
		if w < o.Changes%o.Writers {
			n++
		}
		c := &changer{db: o.Products, rng: rand.New(rand.NewPCG(o.Seed, uint64(w))), id: w, prefix: prefix,
			skus: append([]string(nil), skus...)}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < n; i++ {
				ok, err := c.change(ctx)
				if err != nil {
					werr <- fmt.Errorf("writer %d: %w", c.id, err)
					return
				}
				if ok {
					changed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	close(werr)
	for err := range werr {
		return res, err
	}
	total := changed.Load() + int64(o.Items)
	out.printf("  all %d changes made: %d events committed (with the %d initial SKUs) in %v\n",
		o.Changes, total, o.Items, time.Since(began).Round(time.Millisecond))

	// Wait for the answers to every event.
	deadline := time.Now().Add(o.Timeout)
	for {
		stats, err := products.relay.TopicStats(ctx)
		if err != nil {
			return res, err
		}
		st := stats[TopicInventory]
		if st.Pending == 0 && st.Awaiting == 0 && answered() >= total {
			break
		}
		if time.Now().After(deadline) {
			out.printf("  gave up waiting after %v\n", o.Timeout)
			break
		}
		select {
		case err := <-consumerErr:
			return res, err
		case <-ctx.Done():
			return res, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	stopProgress()
	res.Took = time.Since(began)
	stopAll()

	// The check.
	if err := compare(ctx, o.Products, o.Orders, &res); err != nil {
		return res, err
	}
	// The outboxes' rows per state, read as an operator would (no SQL of
	// our own): every event of the product service, and every answer the
	// order service published.
	events, err := topicStates(ctx, o.Products, TopicInventory)
	if err != nil {
		return res, err
	}
	answers, err := topicStates(ctx, o.Orders, TopicAcks)
	if err != nil {
		return res, err
	}
	res.Events = events.Pending + events.Dead + events.Awaiting + events.Failed + events.Published + events.Processed
	res.Processed, res.Failed = events.Processed, events.Failed
	res.Acks = answers.Awaiting + answers.Failed + answers.Published + answers.Processed
	// Each FAILED answer (or timeout) that sent an event again moved it to
	// its next process attempt; the tracker's hook heard of each once, after
	// its commit.
	res.Resent = counter.resent.Load()
	res.Duplicates = orderIn.Stats().Duplicates + ackIn.Stats().Duplicates

	out.printf("\nCheck:\n")
	out.printf("  events sent by the product service   %d\n", res.Events)
	out.printf("  re-sent after a FAILED answer         %d\n", res.Resent)
	out.printf("  answers sent by the order service     %d\n", res.Acks)
	out.printf("  events processed                      %d\n", res.Processed)
	out.printf("  events failed for good                %d\n", res.Failed)
	out.printf("  redeliveries skipped by the inboxes   %d\n", res.Duplicates)
	out.printf("  product inventory rows                %d\n", res.ProductRows)
	out.printf("  order service's copy (live rows)      %d\n", res.CopyRows)
	out.printf("  took                                  %v\n", res.Took.Round(time.Millisecond))
	switch {
	case !res.Equal:
		return res, errors.New("the two inventory tables differ (see the DIFF lines above)")
	case res.Processed+res.Failed != res.Events:
		return res, fmt.Errorf("%d of %d events were not answered", res.Events-res.Processed-res.Failed, res.Events)
	case res.Failed > 0:
		return res, fmt.Errorf("%d events failed for good", res.Failed)
	}
	out.printf("\nOK: both inventory tables are equal; every event was answered and processed.\n")
	return res, nil
}

// topicStates returns the rows of topic per state in the outbox of db
// (gormoutbox.Admin.CountStates: published and processed rows counted too).
func topicStates(ctx context.Context, db *gorm.DB, topic string) (gormoutbox.Stats, error) {
	admin, err := gormoutbox.NewAdmin(db, gormoutbox.AdminConfig{})
	if err != nil {
		return gormoutbox.Stats{}, err
	}
	states, err := admin.CountStates(ctx)
	if err != nil {
		return gormoutbox.Stats{}, err
	}
	return states[topic], nil
}

// compare reads both tables and reports differences.
func compare(ctx context.Context, products, orders *gorm.DB, res *Result) error {
	var items []Item
	if err := products.WithContext(ctx).Order("sku").Find(&items).Error; err != nil {
		return err
	}
	var copies []Copy
	if err := orders.WithContext(ctx).Where("deleted = ?", false).Order("sku").Find(&copies).Error; err != nil {
		return err
	}
	res.ProductRows, res.CopyRows = len(items), len(copies)
	want := make(map[string]Item, len(items))
	for _, it := range items {
		want[it.SKU] = it
	}
	diffs := 0
	report := func(format string, args ...any) {
		if diffs < 10 {
			fmt.Fprintf(os.Stderr, "DIFF: "+format+"\n", args...)
		}
		diffs++
	}
	for _, c := range copies {
		it, ok := want[c.SKU]
		switch {
		case !ok:
			report("%s is in the copy (version %d) but not in the product service", c.SKU, c.Version)
		case it.Name != c.Name || it.Quantity != c.Quantity || it.Version != c.Version:
			report("%s: product service %q qty %d v%d, copy %q qty %d v%d", c.SKU, it.Name, it.Quantity, it.Version, c.Name, c.Quantity, c.Version)
		}
		delete(want, c.SKU)
	}
	for sku, it := range want {
		report("%s (version %d) is missing from the copy", sku, it.Version)
	}
	res.Equal = diffs == 0
	return nil
}

// ackCounter counts the events the product service's relay sent
// (re-sends included) and the answers it applied.
type ackCounter struct {
	gormoutbox.HookBase
	published, processed, resent, gaveUp atomic.Int64
}

func (c *ackCounter) AfterPublish(context.Context, *gormoutbox.Message, time.Duration) {
	c.published.Add(1)
}

func (c *ackCounter) OnAck(_ context.Context, r gormoutbox.AckResult) {
	switch r.Outcome {
	case gormoutbox.AckProcessed:
		c.processed.Add(1)
	case gormoutbox.AckResent:
		c.resent.Add(1)
	case gormoutbox.AckGaveUp:
		c.gaveUp.Add(1)
	}
}

// service is one service's outbox side: the plugin, a relay and its
// scheduler.
type service struct {
	relay *gormoutbox.Relay
	sched *scheduler.Scheduler
	pub   *outboxkafka.Publisher
	once  sync.Once
}

func newService(ctx context.Context, db *gorm.DB, brokers []string, log *slog.Logger, model any, hook gormoutbox.Hook) (*service, error) {
	s := &service{sched: scheduler.New(scheduler.Config{Logger: log})}
	ob := gormoutbox.New(gormoutbox.Config{Wake: func() { s.sched.Wake(RelayJob) }})
	if err := db.Use(ob); err != nil {
		return nil, err
	}
	if _, source := model.(*Item); source {
		if err := ob.Validate(model); err != nil {
			return nil, err
		}
	}
	if err := ob.Migrate(ctx); err != nil {
		return nil, err
	}
	if err := db.AutoMigrate(model); err != nil {
		return nil, err
	}
	pub, err := outboxkafka.NewPublisher(outboxkafka.Config{Brokers: brokers})
	if err != nil {
		return nil, err
	}
	s.pub = pub
	rc := gormoutbox.RelayConfig{Logger: log}
	if hook != nil {
		rc.Hooks = []gormoutbox.Hook{hook}
	}
	if s.relay, err = gormoutbox.NewRelay(db, pub, rc); err != nil {
		return nil, err
	}
	if err := s.sched.Add(RelayJob, RelaySpec, scheduler.RelayJob(s.relay)); err != nil {
		return nil, err
	}
	s.sched.Start()
	return s, nil
}

func (s *service) stop() {
	s.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = s.sched.Stop(ctx)
		_ = s.pub.Close()
	})
}

// printer serialises the output.
type printer struct {
	mu sync.Mutex
	w  io.Writer
}

func (p *printer) printf(format string, args ...any) {
	p.mu.Lock()
	defer p.mu.Unlock()
	fmt.Fprintf(p.w, format, args...)
}

// Flags defines the flags of the examples on fs (the database flags are
// the mains' own) and returns the Options they fill once fs is parsed.
func Flags(fs *flag.FlagSet) *Options {
	o := &Options{}
	fs.StringVar(&o.Brokers, "brokers", FirstEnv("OUTBOX_KAFKA_BROKERS", "OUTBOX_DEMO_KAFKA_BROKERS"),
		"Kafka bootstrap brokers, host:port[,host:port...]; empty: an in-process kfake cluster")
	fs.IntVar(&o.Items, "items", 100, "SKUs the product service starts with")
	fs.IntVar(&o.Changes, "changes", 2000, "random stock changes to make")
	fs.IntVar(&o.Writers, "writers", 8, "goroutines making the changes")
	fs.IntVar(&o.FailPercent, "fail-percent", 5, "percent of the events the order service fails once (-1: none)")
	fs.Uint64Var(&o.Seed, "seed", 1, "seed of the random changes and failures")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "how long to wait for the services to converge")
	return o
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

// minLevel drops records below its level.
type minLevel struct {
	slog.Handler
	level slog.Level
}

func (h minLevel) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= h.level && h.Handler.Enabled(ctx, l)
}

func (h minLevel) WithAttrs(as []slog.Attr) slog.Handler {
	return minLevel{h.Handler.WithAttrs(as), h.level}
}

func (h minLevel) WithGroup(name string) slog.Handler {
	return minLevel{h.Handler.WithGroup(name), h.level}
}
