package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	kafkago "github.com/segmentio/kafka-go"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/postgres"
	"github.com/go-outbox/outbox/dialects/postgres/pgxlisten"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/inbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
	"github.com/go-outbox/outbox/scheduler"
)

// The tests of this file run the library through PgBouncer in transaction
// pooling mode (scripts/servers.sh up pgbouncer, or OUTBOX_TEST_PGBOUNCER_URL):
// capture, several relays claiming with SKIP LOCKED, the inbox, and
// Listen, which needs a connection of its own on the server.

// setupPgBouncer is setup on a fresh database reached through PgBouncer.
func setupPgBouncer(t *testing.T, cfg gormoutbox.Config, models ...any) (*gorm.DB, *gormoutbox.Plugin, testenv.PgBouncerURLs) {
	t.Helper()
	var urls testenv.PgBouncerURLs
	d := testenv.Dialect{Name: "pgbouncer", Open: func(t testing.TB, cfg *gorm.Config) *gorm.DB {
		db, u := testenv.OpenPgBouncer(t, cfg)
		urls = u
		return db
	}}
	db, p := setup(t, d, nil, cfg, models...)
	assertPooled(t, db)
	return db, p, urls
}

// assertPooled fails the test unless db's connections go through a pooler:
// the backend pid in a direct connection's BackendKeyData is its server
// process, PgBouncer hands out keys of its own.
func assertPooled(t *testing.T, db *gorm.DB) {
	t.Helper()
	sqlDB, err := db.DB()
	if err != nil {
		t.Fatal(err)
	}
	conn, err := sqlDB.Conn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var keyPID, serverPID uint32
	if err := conn.Raw(func(dc any) error {
		keyPID = dc.(*stdlib.Conn).Conn().PgConn().PID()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRowContext(context.Background(), `SELECT pg_backend_pid()`).Scan(&serverPID); err != nil {
		t.Fatal(err)
	}
	if keyPID == serverPID {
		t.Fatalf("the *gorm.DB is not behind PgBouncer: its connection's key pid %d is the server's", keyPID)
	}
}

// Writes of a tagged model through GORM behind PgBouncer leave their
// events in the outbox table: in GORM's own transactions, in
// db.Transaction, and from concurrent writers spread over several server
// connections.
func TestPgBouncerCapture(t *testing.T) {
	t.Parallel()
	db, _, _ := setupPgBouncer(t, gormoutbox.Config{}, &Inventory{})
	item := Inventory{SKU: "apple", Quantity: 10, CostPrice: 3}
	if err := db.Create(&item).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Model(&item).Update("quantity", gorm.Expr("quantity - ?", 4)).Error; err != nil {
		t.Fatal(err)
	}
	if err := db.Transaction(func(tx *gorm.DB) error {
		if err := tx.Create(&[]Inventory{{SKU: "pear", Quantity: 1}, {SKU: "plum", Quantity: 2}}).Error; err != nil {
			return err
		}
		return gormoutbox.Publish(tx, gormoutbox.Event{Topic: "orders", Key: "o-1", Type: "StockReserved",
			Payload: map[string]any{"sku": "pear"}})
	}); err != nil {
		t.Fatal(err)
	}
	if err := db.Delete(&item).Error; err != nil {
		t.Fatal(err)
	}
	checkRows(t, readOutbox(t, db, ""),
		want{Topic: "inventory", Key: "apple", Type: "InventoryCreated", Payload: map[string]any{"Quantity": 10}, Absent: []string{"CostPrice"}},
		want{Topic: "inventory", Key: "apple", Type: "InventoryUpdated", Payload: map[string]any{"Quantity": 6}},
		want{Topic: "inventory", Key: "pear", Type: "InventoryCreated"},
		want{Topic: "inventory", Key: "plum", Type: "InventoryCreated"},
		want{Topic: "orders", Key: "o-1", Type: "StockReserved"},
		want{Topic: "inventory", Key: "apple", Type: "InventoryDeleted"},
	)

	// Concurrent writers: their transactions get whichever server
	// connection PgBouncer has free.
	const writers, each = 8, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				it := Inventory{SKU: fmt.Sprintf("w%d-%d", w, i), Quantity: i}
				if err := db.Create(&it).Error; err != nil {
					errs <- err
					return
				}
				if err := db.Model(&it).Update("quantity", i+1).Error; err != nil {
					errs <- err
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent writer: %v", err)
	}
	for typ, n := range map[string]int64{"InventoryCreated": 3 + writers*each, "InventoryUpdated": 1 + writers*each} {
		if got := countRows(t, db, "event_type = '"+typ+"'"); got != n {
			t.Errorf("%d %s rows, want %d", got, typ, n)
		}
	}
	var live int64
	if err := db.Model(&Inventory{}).Count(&live).Error; err != nil || live != 2+writers*each {
		t.Errorf("%d inventory rows (%v), want %d", live, err, 2+writers*each)
	}
}

// pgx's default query exec mode (cache_statement) prepares named
// statements on the server connection; PgBouncer 1.18 in transaction mode
// does not follow them, so a second client finds the first one's statement
// on the server connection it is given ("already exists") or misses its
// own ("does not exist"). default_query_exec_mode=exec, which testenv and
// the README use, prepares nothing that outlives the round trip.
func TestPgBouncerPreparedStatements(t *testing.T) {
	t.Parallel()
	_, urls := testenv.OpenPgBouncer(t, nil)
	ctx := context.Background()
	run := func(mode string) (fails int, first error) {
		u := strings.Replace(urls.Pooled, "default_query_exec_mode=exec", "default_query_exec_mode="+mode, 1)
		for i := 0; i < 5; i++ {
			// Two clients, one after the other, running the same
			// statement: PgBouncer gives the second the server
			// connection the first used.
			for c := 0; c < 2; c++ {
				conn, err := pgx.Connect(ctx, u)
				if err != nil {
					t.Fatal(err)
				}
				var n int
				err = conn.QueryRow(ctx, `SELECT $1::int + 1`, i).Scan(&n)
				_ = conn.Close(ctx)
				if err != nil {
					fails++
					if first == nil {
						first = err
					}
				}
			}
		}
		return fails, first
	}
	if n, err := run("cache_statement"); n == 0 {
		t.Errorf("pgx's default cache_statement mode worked 10 times out of 10 through PgBouncer; the README says it does not")
	} else {
		t.Logf("cache_statement: %d of 10 failed, e.g. %v", n, err)
		if !strings.Contains(err.Error(), "prepared statement") {
			t.Errorf("cache_statement failed with %v, want a prepared statement error", err)
		}
	}
	for _, mode := range []string{"exec", "simple_protocol"} {
		if n, err := run(mode); n != 0 {
			t.Errorf("%s: %d of 10 failed through PgBouncer, e.g. %v", mode, n, err)
		}
	}
}

// Four relays drain, concurrently and while the writers write, through
// PgBouncer: every event is published once (no claim taken twice, nothing
// published twice on the topic) and each key's events arrive in order.
func TestPgBouncerRelays(t *testing.T) {
	t.Parallel()
	const (
		keys     = 40
		perKey   = 50
		relays   = 4
		parts    = 4
		writers  = 4
		expected = keys * perKey
	)
	db, _, _ := setupPgBouncer(t, gormoutbox.Config{})
	brokers, _ := kafkaenv.Kafka(t, parts)
	topic := kafkaenv.TopicName("pgb")
	kafkaenv.CreateTopic(t, brokers, topic, parts)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		total gormoutbox.DrainResult
		perR  = make([]int, relays)
	)
	for i := 0; i < relays; i++ {
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{BatchSize: 50})
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for ctx.Err() == nil {
				res, err := r.Drain(ctx)
				if err != nil && ctx.Err() == nil {
					t.Errorf("relay %d: %v", i, err)
					return
				}
				mu.Lock()
				total.Published += res.Published
				total.Retried += res.Retried
				total.Dead += res.Dead
				perR[i] += res.Published
				mu.Unlock()
				if res.Published == 0 {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}(i)
	}
	ids := writeSeqEvents(t, db, topic, keys, perKey, writers, 10)
	deadline := time.Now().Add(time.Minute)
	for {
		mu.Lock()
		n := total.Published
		mu.Unlock()
		if n >= expected {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("published %d of %d within 1m", n, expected)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // a row published twice would be counted now
	cancel()
	wg.Wait()
	if total.Published != expected || total.Retried != 0 || total.Dead != 0 {
		t.Errorf("relays published %d rows (want %d, each once), retried %d, dead %d", total.Published, expected, total.Retried, total.Dead)
	}
	if n := countRows(t, db, "published_at IS NULL"); n != 0 {
		t.Errorf("%d rows left unpublished", n)
	}
	if n := topicSize(t, brokers, topic); n != expected {
		t.Errorf("the topic holds %d messages, want %d (each event once)", n, expected)
	}
	recs := kafkaenv.ReadTopic(t, brokers, topic, expected, time.Minute, runIDs(ids))
	if dups := checkSeqOrder(t, recs, keys, perKey); dups != 0 {
		t.Errorf("%d events published more than once", dups)
	}
	t.Logf("%d events on %d keys through %d relays behind PgBouncer; published per relay %v", expected, keys, relays, perR)
}

// topicSize is the number of messages on topic: the sum of its partitions'
// end offsets.
func topicSize(t *testing.T, brokers []string, topic string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := &kafkago.Client{Addr: kafkago.TCP(brokers...), Timeout: 20 * time.Second}
	meta, err := c.Metadata(ctx, &kafkago.MetadataRequest{Topics: []string{topic}})
	if err != nil || len(meta.Topics) != 1 || meta.Topics[0].Error != nil {
		t.Fatalf("metadata of %s: %v %+v", topic, err, meta)
	}
	req := &kafkago.ListOffsetsRequest{Topics: map[string][]kafkago.OffsetRequest{}}
	for _, p := range meta.Topics[0].Partitions {
		req.Topics[topic] = append(req.Topics[topic], kafkago.LastOffsetOf(p.ID))
	}
	res, err := c.ListOffsets(ctx, req)
	if err != nil {
		t.Fatalf("list offsets of %s: %v", topic, err)
	}
	n := 0
	for _, p := range res.Topics[topic] {
		if p.Error != nil {
			t.Fatalf("list offsets of %s/%d: %v", topic, p.Partition, p.Error)
		}
		n += int(p.LastOffset)
	}
	return n
}

// The inbox behind PgBouncer: each message handled once (redeliveries
// skipped), in per-key order, its records written.
func TestPgBouncerInbox(t *testing.T) {
	t.Parallel()
	db, _, _ := setupPgBouncer(t, gormoutbox.Config{}, &applied{})
	brokers, _ := kafkaenv.Kafka(t, 4)
	e := &inboxEnv{db: db, brokers: brokers, topic: kafkaenv.TopicName("pgb-inbox"), group: kafkaenv.TopicName("group")}
	kafkaenv.CreateTopic(t, brokers, e.topic, 4)
	want := produceInbox(t, brokers, e.topic, 300, 20)
	var again []kafkago.Message
	for i := 0; i < len(want); i += 7 {
		again = append(again, inMsg(e.topic, want[i]))
	}
	writeKafka(t, brokers, again...)
	c := e.consumer(t, applyHandler, func(c *inbox.Config) { c.BatchSize = 50 })
	stop := start(t, c)
	total := int64(len(want) + len(again))
	waitFor(t, 30*time.Second, "all messages", func() bool {
		s := c.Stats()
		return s.Handled+s.Duplicates >= total
	})
	stop()
	checkApplied(t, db, want)
	if s := c.Stats(); s.Handled != int64(len(want)) || s.Duplicates != int64(len(again)) {
		t.Errorf("stats %+v: want handled %d, duplicates %d", s, len(want), len(again))
	}
	if n := inboxCount(t, db, "done"); n != int64(len(want)) {
		t.Errorf("inbox has %d done rows, want %d", n, len(want))
	}
}

// pgbListenRelay is a relay over db behind PgBouncer, scheduled hourly so
// that only a wake-up can publish within the test.
func pgbListenRelay(t *testing.T, db *gorm.DB) (*gormoutbox.Relay, *scheduler.Scheduler) {
	t.Helper()
	brokers, _ := kafkaenv.Kafka(t, 2)
	kafkaenv.CreateTopic(t, brokers, "inventory", 2)
	r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{})
	s := scheduler.New(scheduler.Config{})
	if err := s.Add("relay", "@every 1h", scheduler.RelayJob(r)); err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { _ = s.Stop(context.Background()) })
	return r, s
}

// Writes go through PgBouncer, Listen holds a direct connection of its own
// (ListenOptions.DSN): each commit wakes the relay.
func TestPgBouncerListenDirectDSN(t *testing.T) {
	t.Parallel()
	db, _, urls := setupPgBouncer(t, gormoutbox.Config{}, &Inventory{})
	r, s := pgbListenRelay(t, db)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- r.ListenWith(ctx, func() { _ = s.Wake("relay") }, pgListen(urls.Direct))
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ListenWith: %v", err)
		}
	})
	waitListeningOr(t, db, done)

	var lat []time.Duration
	if err := db.Create(&Inventory{SKU: "l1"}).Error; err != nil {
		t.Fatal(err)
	}
	lat = append(lat, publishedWithin(t, db, 1, 3*time.Second))
	if err := db.Transaction(func(tx *gorm.DB) error { return tx.Create(&Inventory{SKU: "l2"}).Error }); err != nil {
		t.Fatal(err)
	}
	lat = append(lat, publishedWithin(t, db, 2, 3*time.Second))
	tx := db.Begin()
	if err := tx.Create(&Inventory{SKU: "l3"}).Error; err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit().Error; err != nil {
		t.Fatal(err)
	}
	lat = append(lat, publishedWithin(t, db, 3, 3*time.Second))
	t.Logf("commit through PgBouncer to published, woken by LISTEN on the direct connection: %v", lat)
}

// waitListeningOr is waitListening (a session of the test's database is
// LISTENing), failing at once if the listener returns (done, buffered).
func waitListeningOr(t *testing.T, db *gorm.DB, done chan error) {
	t.Helper()
	sqlDB, _ := db.DB()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err // for the cleanup that waits for it
			t.Fatalf("the listener returned: %v", err)
		default:
		}
		var n int
		_ = sqlDB.QueryRow(`SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'
  AND application_name = current_setting('application_name')`).Scan(&n)
		if n > 0 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("the relay is not listening after 10s")
}

// Listen whose connection goes through PgBouncer in transaction mode (the
// relay's own pool, or a DSN naming PgBouncer) returns an error that says
// so and how to get out, instead of listening for notifications that never
// come.
func TestPgBouncerListenRefused(t *testing.T) {
	t.Parallel()
	db, _, urls := setupPgBouncer(t, gormoutbox.Config{}, &Inventory{})
	r := newRelay(t, db, &slowPublisher{}, gormoutbox.RelayConfig{})
	for _, c := range []struct {
		name   string
		listen func(ctx context.Context) error
	}{
		{"Listen on the relay's pool", func(ctx context.Context) error { return r.ListenWith(ctx, func() {}, pgListen("")) }},
		{"ListenWith a PgBouncer DSN", func(ctx context.Context) error {
			return r.ListenWith(ctx, func() {}, pgListen(urls.Pooled))
		}},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		start := time.Now()
		err := c.listen(ctx)
		cancel()
		took := time.Since(start)
		switch {
		case err == nil:
			t.Errorf("%s through PgBouncer: no error after %v", c.name, took)
		case !errors.Is(err, gormoutbox.ErrTransactionPooler):
			t.Errorf("%s through PgBouncer: %v, want ErrTransactionPooler", c.name, err)
		default:
			for _, s := range []string{"PgBouncer", "pool_mode = transaction", "ListenOptions{DSN:", "pool_mode = session"} {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("%s: the error does not say %q: %v", c.name, s, err)
				}
			}
			if strings.Contains(err.Error(), "outbox:outbox@") {
				t.Errorf("%s: the error shows the password: %v", c.name, err)
			}
			t.Logf("%s: after %v: %v", c.name, took.Round(time.Millisecond), err)
		}
	}

	// Configuration errors.
	if err := r.ListenWith(context.Background(), func() {}, pgListen("postgres://[::1")); !errors.Is(err, gormoutbox.ErrInvalidConfig) {
		t.Errorf("ListenWith a DSN pgx cannot parse: %v, want ErrInvalidConfig", err)
	}
	my, _ := setup(t, testenv.Dialect{Name: "mysql", Open: testenv.OpenMySQL}, nil, gormoutbox.Config{})
	mr := newRelay(t, my, &slowPublisher{}, gormoutbox.RelayConfig{})
	if err := mr.ListenWith(context.Background(), func() {}, pgListen(urls.Direct)); !errors.Is(err, gormoutbox.ErrUnsupportedDialect) {
		t.Errorf("ListenWith on MySQL: %v, want ErrUnsupportedDialect", err)
	}
}

// Through a pool in session mode LISTEN works: the probe that tells a
// transaction pooler from a direct connection lets it through.
func TestPgBouncerListenSessionPool(t *testing.T) {
	t.Parallel()
	sessionURL := testenv.PgBouncerSessionURL(t)
	cfg, err := pgx.ParseConfig(sessionURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	var serverPID uint32
	if err := conn.QueryRow(context.Background(), `SELECT pg_backend_pid()`).Scan(&serverPID); err != nil {
		t.Fatal(err)
	}
	pooled := conn.PgConn().PID() != serverPID
	_ = conn.Close(context.Background())
	if !pooled {
		t.Fatalf("%s is not pooled (key pid = server pid): the probe would not run", sessionURL)
	}

	table := dialects.Table{Name: strings.ReplaceAll(kafkaenv.TopicName("pgb_session"), "-", "_")}
	var n atomic.Int32
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- pgxlisten.New().Listen(ctx, dialects.ListenParams{Table: table, DSN: sessionURL, Notify: func() { n.Add(1) }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Listen on a DSN through a session pool: %v", err)
		}
	}()
	direct, err := sql.Open("pgx", testenv.PostgresURL(t)) // the database outbox, which outbox_session pools
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	deadline := time.Now().Add(10 * time.Second)
	for n.Load() == 0 {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("Listen on a DSN through a session pool returned: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("no notification through the session pool within 10s")
		}
		if _, err := direct.Exec(`NOTIFY ` + postgres.Channel(table)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
