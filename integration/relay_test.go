package integration

import (
	"context"

	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
)

// newPublisher returns a kafka Publisher for brokers, closed at the end of
// the test.
func newPublisher(t *testing.T, brokers []string, cfg kafka.Config) *kafka.Publisher {
	t.Helper()
	cfg.Brokers = brokers
	p, err := kafka.NewPublisher(cfg)
	if err != nil {
		t.Fatalf("NewPublisher: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func newRelay(t *testing.T, db *gorm.DB, pub gormoutbox.Publisher, cfg gormoutbox.RelayConfig) *gormoutbox.Relay {
	t.Helper()
	r, err := gormoutbox.NewRelay(db, pub, cfg)
	if err != nil {
		t.Fatalf("NewRelay: %v", err)
	}
	return r
}

// drainUntilEmpty runs r.Drain until the outbox has no pending row,
// failing the test after timeout.
func drainUntilEmpty(t *testing.T, r *gormoutbox.Relay, timeout time.Duration) gormoutbox.DrainResult {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	var total gormoutbox.DrainResult
	for {
		res, err := r.Drain(ctx)
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
		total.Batches += res.Batches
		total.Published += res.Published
		total.Retried += res.Retried
		total.Dead += res.Dead
		total.HeldBack += res.HeldBack
		st, err := r.Stats(ctx)
		if err != nil {
			t.Fatalf("Stats: %v", err)
		}
		if st.Pending == 0 {
			return total
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbox still has %d pending rows after %v (so far %+v)", st.Pending, timeout, total)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// runIDs keeps the records whose event id is one of ids.
func runIDs(ids map[string]bool) func(kafkaenv.Record) bool {
	return func(r kafkaenv.Record) bool { return ids[r.Headers[gormoutbox.HeaderEventID]] }
}

// Entities written through GORM reach their topic with the event key, the
// envelope headers and the payload as captured, in order per key; every
// row is marked published.
func TestRelayEndToEnd(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{}, &Inventory{})
		brokers, _ := kafkaenv.Kafka(t, 4)
		kafkaenv.CreateTopic(t, brokers, "inventory", 4)
		explicit := kafkaenv.TopicName("orders")
		kafkaenv.CreateTopic(t, brokers, explicit, 2)

		items := []*Inventory{{SKU: "A-1", Quantity: 5, CostPrice: 9}, {SKU: "B-2", Quantity: 7}, {SKU: "C-3", Quantity: 1}}
		if err := db.Create(&items).Error; err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			if err := db.Model(items[0]).Update("quantity", 10+i).Error; err != nil {
				t.Fatal(err)
			}
		}
		if err := db.Delete(items[2]).Error; err != nil {
			t.Fatal(err)
		}
		if err := db.Transaction(func(tx *gorm.DB) error {
			return gormoutbox.Publish(tx, gormoutbox.Event{Topic: explicit, Key: "o-1", Type: "OrderPlaced",
				Payload: map[string]int{"n": 1}, Headers: map[string]string{"x-tenant": "t1"}})
		}); err != nil {
			t.Fatal(err)
		}
		rows := readOutbox(t, db, "")
		if len(rows) != 8 {
			t.Fatalf("outbox has %d rows, want 8", len(rows))
		}

		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{})
		res := drainUntilEmpty(t, r, 30*time.Second)
		if res.Published != 8 || res.Retried != 0 || res.Dead != 0 {
			t.Fatalf("drain: %+v, want 8 published", res)
		}
		after := readOutbox(t, db, "")
		byID := map[string]outboxRow{}
		ids := map[string]bool{}
		for _, row := range after {
			if row.PublishedAt == nil {
				t.Errorf("row %d (%s) not marked published", row.ID, row.Type)
			}
			byID[row.EventID] = row
			ids[row.EventID] = true
		}

		got := kafkaenv.ReadTopic(t, brokers, "inventory", 7, 20*time.Second, runIDs(ids))
		got = append(got, kafkaenv.ReadTopic(t, brokers, explicit, 1, 20*time.Second, runIDs(ids))...)
		perKey := map[string][]int64{}
		for _, m := range got {
			row, ok := byID[m.Headers[gormoutbox.HeaderEventID]]
			if !ok {
				t.Fatalf("message with unknown event id %q", m.Headers[gormoutbox.HeaderEventID])
			}
			if string(m.Key) != deref(row.Key) {
				t.Errorf("event %s: key %q, want %q", row.EventID, m.Key, deref(row.Key))
			}
			if string(m.Value) != string(row.RawPayload) {
				t.Errorf("event %s: value %s, want %s", row.EventID, m.Value, row.RawPayload)
			}
			wantH := map[string]string{
				gormoutbox.HeaderEventType:     row.Type,
				gormoutbox.HeaderAggregateType: row.AggregateType,
				gormoutbox.HeaderAggregateID:   row.AggregateID,
				gormoutbox.HeaderContentType:   "application/json",
			}
			for k, v := range row.Headers {
				wantH[k] = v
			}
			for k, v := range wantH {
				if m.Headers[k] != v {
					t.Errorf("event %s: header %s = %q, want %q", row.EventID, k, m.Headers[k], v)
				}
			}
			if ts, err := time.Parse(time.RFC3339Nano, m.Headers[gormoutbox.HeaderOccurredAt]); err != nil || time.Since(ts) > time.Minute {
				t.Errorf("event %s: occurred-at %q: %v", row.EventID, m.Headers[gormoutbox.HeaderOccurredAt], err)
			}
			perKey[string(m.Key)] = append(perKey[string(m.Key)], row.ID)
		}
		if got := byIDHeader(got, "x-tenant"); got != "t1" {
			t.Errorf("explicit event: x-tenant header %q, want t1", got)
		}
		for k, ids := range perKey {
			if !sort.SliceIsSorted(ids, func(i, j int) bool { return ids[i] < ids[j] }) {
				t.Errorf("key %s: outbox ids on the topic %v are out of order", k, ids)
			}
		}
		if n := len(perKey["A-1"]); n != 4 {
			t.Errorf("key A-1: %d messages, want 4 (create + 3 updates)", n)
		}
		// Nothing left to do: a second drain publishes nothing.
		if res, err := r.Drain(ctx); err != nil || res.Published != 0 {
			t.Fatalf("second drain: %+v, %v", res, err)
		}
	})
}

func byIDHeader(recs []kafkaenv.Record, h string) string {
	for _, r := range recs {
		if v, ok := r.Headers[h]; ok {
			return v
		}
	}
	return ""
}

// seqEvent is the payload of the load tests' events.
type seqEvent struct {
	Key string `json:"key"`
	Seq int    `json:"seq"`
}

// writeSeqEvents writes n events per key for keys keys through Publish,
// from writers goroutines; each key is written by one goroutine, in
// sequence, per transaction of up to perTx events.
func writeSeqEvents(t *testing.T, db *gorm.DB, topic string, keys, n, writers, perTx int) map[string]bool {
	t.Helper()
	var (
		mu  sync.Mutex
		ids = map[string]bool{}
		wg  sync.WaitGroup
	)
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var mine []int
			for k := w; k < keys; k += writers {
				mine = append(mine, k)
			}
			var batch []gormoutbox.Event
			flush := func() error {
				if len(batch) == 0 {
					return nil
				}
				err := db.Transaction(func(tx *gorm.DB) error { return gormoutbox.Publish(tx, batch...) })
				batch = batch[:0]
				return err
			}
			for s := 0; s < n; s++ {
				for _, k := range mine {
					key := "key-" + strconv.Itoa(k)
					p, _ := json.Marshal(seqEvent{Key: key, Seq: s})
					id := testEventID()
					mu.Lock()
					ids[id] = true
					mu.Unlock()
					batch = append(batch, gormoutbox.Event{ID: id, Topic: topic, Key: key, Type: "Seq", Payload: json.RawMessage(p)})
					if len(batch) == perTx {
						if err := flush(); err != nil {
							errs <- err
							return
						}
					}
				}
			}
			if err := flush(); err != nil {
				errs <- err
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("write events: %v", err)
	}
	return ids
}

var (
	testIDMu  sync.Mutex
	testIDSeq uint64
	testIDRun = uint64(time.Now().UnixNano())
)

// testEventID returns a unique UUID-shaped id.
func testEventID() string {
	testIDMu.Lock()
	testIDSeq++
	s := testIDSeq
	testIDMu.Unlock()
	return fmt.Sprintf("%08x-%04x-7%03x-8%03x-%012x", uint32(testIDRun>>32), uint16(testIDRun>>16), uint16(testIDRun)&0xfff, 0, s)
}

// checkSeqOrder checks that every (key, seq) arrived and that, once
// duplicates are set aside, each key's events arrived in sequence. It
// returns the number of duplicates.
func checkSeqOrder(t *testing.T, recs []kafkaenv.Record, keys, n int) int {
	t.Helper()
	next := map[string]int{}
	dups := 0
	seen := map[string]bool{}
	for _, r := range recs {
		var e seqEvent
		if err := json.Unmarshal(r.Value, &e); err != nil {
			t.Fatalf("payload %s: %v", r.Value, err)
		}
		if string(r.Key) != e.Key {
			t.Fatalf("message key %q carries payload of key %q", r.Key, e.Key)
		}
		id := e.Key + "/" + strconv.Itoa(e.Seq)
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		if e.Seq != next[e.Key] {
			t.Fatalf("key %s: seq %d arrived when %d was expected (partition %d offset %d)",
				e.Key, e.Seq, next[e.Key], r.Partition, r.Offset)
		}
		next[e.Key]++
	}
	if len(next) != keys {
		t.Fatalf("%d keys arrived, want %d", len(next), keys)
	}
	for k, got := range next {
		if got != n {
			t.Fatalf("key %s: %d distinct events arrived, want %d", k, got, n)
		}
	}
	return dups
}

// Four relays at once over 20,000 events on 200 keys, written while the
// relays run: every event arrives, each key in order.
func TestRelayFourRelaysKeepKeyOrder(t *testing.T) {
	const (
		keys     = 200
		perKey   = 100
		relays   = 4
		parts    = 8
		writers  = 8
		expected = keys * perKey
	)
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, p := setup(t, d, nil, gormoutbox.Config{})
		brokers, _ := kafkaenv.Kafka(t, parts)
		topic := kafkaenv.TopicName("seq")
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
			r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{}), gormoutbox.RelayConfig{
				BatchSize: 500, MaxShards: p.Shards() / relays, LockWait: -1,
			})
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
		start := time.Now()
		ids := writeSeqEvents(t, db, topic, keys, perKey, writers, 100)
		deadline := time.Now().Add(2 * time.Minute)
		for {
			mu.Lock()
			n := total.Published
			mu.Unlock()
			if n >= expected {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("published %d of %d within 2m", n, expected)
			}
			time.Sleep(20 * time.Millisecond)
		}
		elapsed := time.Since(start)
		cancel()
		wg.Wait()
		recs := kafkaenv.ReadTopic(t, brokers, topic, expected, time.Minute, runIDs(ids))
		dups := checkSeqOrder(t, recs, keys, perKey)
		t.Logf("%s: %d events on %d keys through %d relays in %v; published per relay %v; %d duplicates on the topic; retried %d, dead %d",
			d.Name, expected, keys, relays, elapsed.Round(time.Millisecond), perR, dups, total.Retried, total.Dead)
		if total.Dead != 0 {
			t.Errorf("%d rows dead-lettered", total.Dead)
		}
		var pending int64
		sqlDB, _ := db.DB()
		if err := sqlDB.QueryRow(`SELECT COUNT(*) FROM outbox WHERE published_at IS NULL`).Scan(&pending); err != nil {
			t.Fatal(err)
		}
		if pending != 0 {
			t.Errorf("%d rows not marked published", pending)
		}
	})
}
