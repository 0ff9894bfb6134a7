package faults

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/inbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
)

var (
	longRun    = flag.Bool("faults.long", false, "run the long fault suite (make faults): 60 s faults, more kills")
	reportPath = flag.String("faults.report", "", "write the results as markdown to this file (docs/reliability.md)")
)

// durations size a run of the suite.
type durations struct {
	Name     string
	Warmup   time.Duration // writers and relays before the fault
	Window   time.Duration // how long the repeated faults go on
	Outage   time.Duration // the broker's outage
	Kills    int           // relay kills in Window
	Cuts     int           // connection cuts in Window
	Restarts int           // database crashes in Window
	Inbox    int           // consumer kills in Window
	Wait     time.Duration // bound on the recovery
}

var (
	short = durations{Name: "short", Warmup: 2 * time.Second, Window: 8 * time.Second, Outage: 8 * time.Second,
		Kills: 4, Cuts: 8, Restarts: 2, Inbox: 3, Wait: 2 * time.Minute}
	long = durations{Name: "long", Warmup: 5 * time.Second, Window: 60 * time.Second, Outage: 60 * time.Second,
		Kills: 20, Cuts: 30, Restarts: 4, Inbox: 10, Wait: 10 * time.Minute}
)

// Relay settings: fast backs off quickly (a failure counted by mistake
// soon dead-letters: MaxAttempts × MaxBackoff is 300 ms); the zero value is
// the library's defaults.
var (
	fast  = childSpec{MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond, MaxAttempts: 3}
	quick = childSpec{MinBackoff: 50 * time.Millisecond, MaxBackoff: time.Second, MaxAttempts: 5}
)

// fault is one kind of fault the suite injects.
type fault struct {
	Name, Title string
	Relay       childSpec // relay settings
	Proxy       bool      // relays reach the database through a proxy
	OwnServer   bool      // on a database server of the suite's own
	Consumer    bool      // an inbox consumer runs
	// inject runs the fault and returns when it is over, describing it.
	inject func(t *testing.T, e *env, d durations) string
}

var faultList = []fault{
	{Name: "relay-kill", Title: "Relays SIGKILLed at random points and restarted", Relay: quick, inject: killRelays},
	{Name: "broker-outage", Title: "Broker stopped, default backoff (MinBackoff 1 s, MaxBackoff 5 min, OutageMaxBackoff 10 s, MaxAttempts 10)", inject: stopBroker},
	{Name: "broker-outage-fast-backoff", Title: "Broker stopped for longer than MaxAttempts × MaxBackoff (3 × 100 ms)", Relay: fast, inject: stopBroker},
	{Name: "db-conn-cut", Title: "Relays' database connections cut (TCP proxy closes every connection)", Relay: quick, Proxy: true, inject: cutConnections},
	{Name: "db-crash", Title: "Database server SIGKILLed and restarted (own instance)", Relay: quick, OwnServer: true, inject: crashDatabase},
	{Name: "inbox-kill", Title: "Inbox consumer SIGKILLed and restarted (handler not idempotent)", Relay: quick, Consumer: true, inject: killConsumer},
}

// result is one row of the report.
type result struct {
	Fault, DB, Detail             string
	Events, Delivered, Duplicates int
	Lost, Order, Unknown, Dead    int
	Twice                         int   // -1: no consumer
	Redelivered                   int64 // inbox duplicates skipped
	Failed                        bool
	Recover                       time.Duration
	WriteFailures                 int64
}

// The fault suite: for each database and fault, 16 writers update the
// business table while two relay processes publish its events, the fault
// is injected, and once the writers stop and the topic has caught up the
// topic is checked against the business table: nothing lost, nothing
// reordered per key, no dead letter, no inbox effect applied twice.
// Short by default (make test); -faults.long for make faults.
func TestFaults(t *testing.T) {
	if os.Getenv(kafkaenv.KafkaEnv) != "" {
		t.Skip("stops and restarts the in-process kfake broker (" + kafkaenv.KafkaEnv + " is set)")
	}
	d := short
	if *longRun {
		d = long
	}
	start := time.Now()
	var (
		mu      sync.Mutex
		results []result
	)
	t.Run("group", func(t *testing.T) {
		for _, db := range testenv.Dialects() {
			t.Run(db.Name, func(t *testing.T) {
				t.Parallel()
				for _, f := range faultList {
					t.Run(f.Name, func(t *testing.T) {
						r := &result{Fault: f.Name, DB: db.Name, Twice: -1}
						defer func() { // also when the subtest fails
							r.Failed = t.Failed()
							mu.Lock()
							results = append(results, *r)
							mu.Unlock()
						}()
						runFault(t, db, f, d, r)
					})
				}
			})
		}
	})
	t.Logf("%s fault suite: %v", d.Name, time.Since(start).Round(time.Second))
	if *reportPath != "" {
		if err := os.WriteFile(*reportPath, []byte(markdown(results, d, time.Since(start))), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// env is one subtest's world.
type env struct {
	dialect string
	db      *gorm.DB
	dsn     string // the relays' DSN
	broker  *broker
	relays  []*child
	cons    *child
	proxy   *proxy
	server  *ownServer
}

// runFault runs fault f on database dbd and fills in res.
func runFault(t *testing.T, dbd testenv.Dialect, f fault, d durations, res *result) {
	const keys, nWriters = 100, 16
	ctx := context.Background()
	e := &env{dialect: dbd.Name}
	if f.OwnServer {
		e.server = startOwnServer(t, dbd.Name)
		var err error
		if e.db, err = openDB(dbd.Name, e.server.dsn); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			if s, err := e.db.DB(); err == nil {
				s.Close()
			}
		})
	} else {
		e.db = dbd.Open(t, nil)
	}
	p := gormoutbox.New(gormoutbox.Config{})
	if err := e.db.Use(p); err != nil {
		t.Fatal(err)
	}
	if err := p.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.db.AutoMigrate(&Account{}, &Effect{}); err != nil {
		t.Fatal(err)
	}
	accts := make([]Account, keys)
	for i := range accts {
		accts[i].Name = keyName(i)
	}
	if err := e.db.Create(&accts).Error; err != nil {
		t.Fatal(err)
	}
	e.dsn = dsnOf(t, e.db)
	if f.Proxy {
		addr := serverAddr(t, dbd.Name, e.dsn)
		e.proxy = newProxy(t, addr)
		e.dsn = withAddr(t, dbd.Name, e.dsn, e.proxy.addr())
	}
	e.broker = newBroker(t, 4)
	rd := startReader(t, e.broker.addrs())

	spec := f.Relay
	spec.Dialect, spec.DSN, spec.Brokers, spec.Topic = dbd.Name, e.dsn, e.broker.addrs(), topic
	if dbd.Name == "mysql" {
		spec.MaxShards = 8 // two relays split the 16 shards
	}
	for i := 0; i < 2; i++ {
		e.relays = append(e.relays, startChild(t, "relay", i, spec))
	}
	if f.Consumer {
		spec.Group = "faults-inbox"
		spec.StatsFile = filepath.Join(t.TempDir(), "inbox-stats.json")
		c, err := inbox.New(e.db, func(context.Context, *gorm.DB, *inbox.Message) error { return nil },
			inbox.Config{Brokers: spec.Brokers, GroupID: spec.Group, Topics: []string{topic}})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Migrate(ctx); err != nil {
			t.Fatal(err)
		}
		e.cons = startChild(t, "consumer", 0, spec)
	}

	stopWriters := writers(e.db, nWriters, keys)
	time.Sleep(d.Warmup)
	began := time.Now()
	res.Detail = f.inject(t, e, d)
	faultEnd := time.Now()
	commits, failed := stopWriters()
	res.WriteFailures = failed
	want := committedChanges(t, e.db)
	t.Logf("%s: %d commits (%d failed transactions), fault %v: %s", f.Name, commits, failed, faultEnd.Sub(began).Round(time.Millisecond), res.Detail)
	check := func() Report {
		del, bad := rd.delivered()
		if len(bad) > 0 {
			t.Errorf("%d records without a version, e.g. %q", len(bad), bad[0])
		}
		rep := Check(want, del)
		res.Events, res.Delivered, res.Duplicates = rep.Committed, rep.Delivered, rep.Duplicates
		res.Lost, res.Order, res.Unknown = len(rep.Lost), len(rep.OrderViolations), len(rep.Unknown)
		return rep
	}

	// Caught up: the topic holds every committed change.
	var got int
	for deadline := faultEnd.Add(d.Wait); ; time.Sleep(50 * time.Millisecond) {
		var ok bool
		if ok, got = rd.covers(want); ok {
			break
		}
		if time.Now().After(deadline) {
			res.Recover = time.Since(faultEnd)
			t.Fatalf("not caught up %v after the fault: %d of %d committed changes on the topic; %s",
				d.Wait, got, len(want), check())
		}
	}
	res.Recover = time.Since(faultEnd)
	if f.Consumer {
		waitEffects(t, e.db, len(want), faultEnd.Add(d.Wait), func() { logGroup(t, e.broker.addrs(), spec.Group) })
		res.Recover = time.Since(faultEnd)
	}
	time.Sleep(time.Second) // late duplicates
	rep := check()
	if !rep.OK() {
		t.Errorf("%s on %s: %s", f.Name, dbd.Name, rep)
	}
	r, err := gormoutbox.NewRelay(e.db, nopPublisher{}, gormoutbox.RelayConfig{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := r.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if res.Dead = int(st.Dead); res.Dead != 0 {
		t.Errorf("%d dead letters after %s, want 0 (an outage must not dead-letter)", res.Dead, f.Name)
	}
	if f.Consumer {
		e.cons.kill()
		res.Twice, res.Redelivered = appliedTwice(t, e.db), e.cons.redeliveries()
		if res.Twice != 0 {
			t.Errorf("%d inbox effects applied twice, want 0", res.Twice)
		}
	}
	inboxSaid := ""
	if f.Consumer {
		inboxSaid = fmt.Sprintf("; %d inbox effects applied twice (%d redeliveries skipped)", res.Twice, res.Redelivered)
	}
	t.Logf("%s on %s: %s; %d dead%s; recovered in %v", f.Name, dbd.Name, rep, res.Dead, inboxSaid, res.Recover.Round(time.Millisecond))
}

// distinctEffects counts the changes the consumer applied: an effect is
// identified by its account and version, what the business table says,
// not by the event id the inbox deduplicates on.
const distinctEffects = `SELECT COUNT(*) FROM (SELECT DISTINCT name, version FROM effects) d`

// waitEffects waits until the consumer has applied n distinct events.
func waitEffects(t *testing.T, db *gorm.DB, n int, deadline time.Time, diagnose func()) {
	t.Helper()
	for ; ; time.Sleep(100 * time.Millisecond) {
		var got int64
		if err := db.Raw(distinctEffects).Scan(&got).Error; err != nil {
			t.Fatal(err)
		}
		if got >= int64(n) {
			return
		}
		if time.Now().After(deadline) {
			logSessions(t, db)
			diagnose()
			t.Fatalf("the inbox consumer applied %d of %d events", got, n)
		}
	}
}

// logSessions logs the database sessions of the test (what a stuck
// process waits for).
func logSessions(t *testing.T, db *gorm.DB) {
	t.Helper()
	q := `SELECT pid::text, state, wait_event_type, wait_event, (now() - xact_start)::text, left(query, 160)
		FROM pg_stat_activity WHERE application_name = current_setting('application_name')`
	if db.Dialector.Name() == "mysql" {
		q = `SELECT CAST(id AS CHAR), command, state, CAST(time AS CHAR), '', left(info, 160)
		FROM information_schema.processlist WHERE db = database()`
	}
	rows, err := db.Raw(q).Rows()
	if err != nil {
		t.Logf("sessions: %v", err)
		return
	}
	defer rows.Close()
	for rows.Next() {
		var a, b, c, d, e, f *string
		if err := rows.Scan(&a, &b, &c, &d, &e, &f); err != nil {
			t.Logf("sessions: %v", err)
		} else {
			deref := func(p *string) string {
				if p == nil {
					return "-"
				}
				return *p
			}
			t.Logf("session %s: %s %s %s %s %s", deref(a), deref(b), deref(c), deref(d), deref(e), deref(f))
		}
	}
}

// appliedTwice counts the effects beyond one per event.
func appliedTwice(t *testing.T, db *gorm.DB) int {
	t.Helper()
	var all, distinct int64
	if err := db.Model(&Effect{}).Count(&all).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Raw(distinctEffects).Scan(&distinct).Error; err != nil {
		t.Fatal(err)
	}
	return int(all - distinct)
}

// serverAddr is the host:port of dsn.
func serverAddr(t *testing.T, dialect, dsn string) string {
	t.Helper()
	if dialect == "mysql" {
		i, j := strings.Index(dsn, "tcp("), strings.Index(dsn, ")/")
		return dsn[i+4 : j]
	}
	i := strings.Index(dsn, "@")
	j := strings.Index(dsn[i+1:], "/")
	return dsn[i+1 : i+1+j]
}

// jitter returns a random duration around d (from d/2 to 3d/2).
func jitter(d time.Duration) time.Duration {
	return d/2 + time.Duration(rand.Int64N(int64(d)+1))
}

func killRelays(t *testing.T, e *env, d durations) string {
	for i := 0; i < d.Kills; i++ {
		time.Sleep(jitter(d.Window / time.Duration(d.Kills)))
		victims := e.relays[rand.IntN(2):][:1]
		if rand.IntN(4) == 0 {
			victims = e.relays // both at once, now and then
		}
		for _, c := range victims {
			c.kill()
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		for _, c := range victims {
			c.start()
		}
	}
	return fmt.Sprintf("%d kills over %v", d.Kills, d.Window)
}

func stopBroker(t *testing.T, e *env, d durations) string {
	e.broker.stop()
	time.Sleep(d.Outage)
	e.broker.start(4)
	return fmt.Sprintf("broker down %v", d.Outage)
}

func cutConnections(t *testing.T, e *env, d durations) string {
	conns := 0
	for i := 0; i < d.Cuts; i++ {
		time.Sleep(jitter(d.Window / time.Duration(d.Cuts)))
		conns += e.proxy.cut()
	}
	return fmt.Sprintf("%d cuts over %v (%d connections closed)", d.Cuts, d.Window, conns)
}

func crashDatabase(t *testing.T, e *env, d durations) string {
	var down time.Duration
	for i := 0; i < d.Restarts; i++ {
		time.Sleep(jitter(d.Window / time.Duration(d.Restarts)))
		e.server.crash()
		start := time.Now()
		time.Sleep(time.Second)
		e.server.up()
		down += time.Since(start)
	}
	return fmt.Sprintf("%d crashes over %v (down %v in all)", d.Restarts, d.Window, down.Round(100*time.Millisecond))
}

func killConsumer(t *testing.T, e *env, d durations) string {
	for i := 0; i < d.Inbox; i++ {
		time.Sleep(jitter(d.Window / time.Duration(d.Inbox)))
		e.cons.waitWorking()
		if i%2 == 0 {
			e.cons.kill()
		} else {
			e.cons.killInWindow()
		}
		time.Sleep(time.Duration(rand.IntN(300)) * time.Millisecond)
		e.cons.start()
	}
	return fmt.Sprintf("%d kills over %v (%d between a batch's commit and its offsets')", d.Inbox, d.Window, d.Inbox/2)
}
