package integration

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/mysql"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/integration/kafkaenv"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
)

// kfakeOnly returns the in-process broker, skipping the test when the
// tests run against real brokers (faults are injected through kfake).
func kfakeOnly(t *testing.T, partitions int) ([]string, *kfake.Cluster) {
	t.Helper()
	brokers, c := kafkaenv.Kafka(t, partitions)
	if c == nil {
		t.Skip("fault injection needs the in-process kfake broker (" + kafkaenv.KafkaEnv + " is set)")
	}
	return brokers, c
}

// fastRetry is a relay config whose backoff is short enough for tests.
var fastRetry = gormoutbox.RelayConfig{MinBackoff: 20 * time.Millisecond, MaxBackoff: 80 * time.Millisecond, MaxAttempts: 1000, BatchSize: 50, LockWait: -1}

type outboxState struct {
	ID          int64
	Attempts    int
	AvailableAt time.Time
	LastError   sql.NullString
	PublishedAt dbTime
	DeadAt      dbTime
}

// dbTime scans a time column from drivers that return time.Time and from
// those that return text (MySQL without parseTime). The zero value is NULL.
type dbTime struct {
	Time  time.Time
	Valid bool
}

func (t *dbTime) Scan(v any) error {
	switch x := v.(type) {
	case nil:
		*t = dbTime{}
		return nil
	case time.Time:
		*t = dbTime{Time: x.UTC(), Valid: true}
		return nil
	case []byte:
		v = string(x)
	}
	s, ok := v.(string)
	if !ok {
		return fmt.Errorf("cannot scan %T into a time", v)
	}
	for _, layout := range []string{"2006-01-02 15:04:05.999999999", time.RFC3339Nano} {
		if p, err := time.ParseInLocation(layout, s, time.UTC); err == nil {
			*t = dbTime{Time: p, Valid: true}
			return nil
		}
	}
	return fmt.Errorf("cannot parse %q as a time", s)
}

func readStates(t *testing.T, db *gorm.DB) []outboxState {
	t.Helper()
	sqlDB, _ := db.DB()
	rows, err := sqlDB.Query(`SELECT id, attempts, available_at, last_error, published_at, dead_at FROM outbox ORDER BY id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []outboxState
	for rows.Next() {
		var s outboxState
		var avail dbTime
		if err := rows.Scan(&s.ID, &s.Attempts, &avail, &s.LastError, &s.PublishedAt, &s.DeadAt); err != nil {
			t.Fatal(err)
		}
		s.AvailableAt = avail.Time
		out = append(out, s)
	}
	return out
}

// Produce requests fail for a while (the broker answers NOT_LEADER, then
// times out after appending, which duplicates): the relay backs off,
// keeps the error, counts no attempt (the broker's fault, not the
// messages'), and in the end every event arrives in order per key.
func TestRelayBrokerErrorsRetryInOrder(t *testing.T) {
	const keys, perKey = 10, 30
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, c := kfakeOnly(t, 4)
		topic := kafkaenv.TopicName("faults")
		kafkaenv.CreateTopic(t, brokers, topic, 4)
		ids := writeSeqEvents(t, db, topic, keys, perKey, 1, 50)

		// kafka-go's own retries off: every failure reaches the relay.
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{MaxAttempts: 1}), fastRetry)
		h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.NotLeaderForPartition, Count: -1})
		before := time.Now()
		res, err := r.Drain(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if res.Published != 0 || res.Retried == 0 {
			t.Fatalf("drain with the broker refusing: %+v, want retries and nothing published", res)
		}
		retried := 0
		for _, s := range readStates(t, db) {
			if !s.LastError.Valid {
				continue
			}
			retried++
			if s.Attempts != 0 {
				t.Errorf("row %d failed by the broker has %d attempts, want 0 (an outage burns no attempt)", s.ID, s.Attempts)
			}
			if !s.AvailableAt.After(before) {
				t.Errorf("row %d failed but is due at %v, before the attempt (%v)", s.ID, s.AvailableAt, before)
			}
			if !strings.Contains(s.LastError.String, "Leader") {
				t.Errorf("row %d: last_error %q does not name the broker error", s.ID, s.LastError.String)
			}
		}
		if retried != res.Retried {
			t.Errorf("%d rows have an error, drain reported %d retried", retried, res.Retried)
		}
		// Keep failing through several passes, then fail some requests
		// after the append (duplicates), then let everything through.
		time.Sleep(100 * time.Millisecond)
		if _, err := r.Drain(context.Background()); err != nil {
			t.Fatal(err)
		}
		h.Remove()
		h2 := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.RequestTimedOut, Count: 3})
		total := drainUntilEmpty(t, r, time.Minute)
		if h2.Hits() == 0 {
			t.Errorf("the timed-out fault was never hit")
		}
		recs := kafkaenv.ReadTopic(t, brokers, topic, keys*perKey, 30*time.Second, runIDs(ids))
		dups := checkSeqOrder(t, recs, keys, perKey)
		maxAttempts := 0
		for _, s := range readStates(t, db) {
			maxAttempts = max(maxAttempts, s.Attempts)
			if !s.PublishedAt.Valid {
				t.Errorf("row %d not published", s.ID)
			}
		}
		if maxAttempts != 0 {
			t.Errorf("max attempts %d, want 0 (broker errors count no attempt)", maxAttempts)
		}
		t.Logf("%s: %d events arrived in order after broker errors; %d duplicates; up to %d attempts; last drain %+v",
			d.Name, keys*perKey, dups, maxAttempts, total)
	})
}

// A topic the broker keeps refusing: its rows are dead-lettered after
// MaxAttempts with their error kept, the other topic flows meanwhile, and
// Replay sends the dead rows once the broker takes them, in order.
func TestRelayDeadLetterAndReplay(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, c := kfakeOnly(t, 2)
		bad, good := kafkaenv.TopicName("bad"), kafkaenv.TopicName("good")
		kafkaenv.CreateTopic(t, brokers, bad, 2)
		kafkaenv.CreateTopic(t, brokers, good, 2)
		badIDs := writeSeqEvents(t, db, bad, 2, 3, 1, 10)
		goodIDs := writeSeqEvents(t, db, good, 5, 10, 1, 10)

		h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: bad, Err: kerr.InvalidRecord, Count: -1})
		cfg := fastRetry
		cfg.MaxAttempts = 3
		// Every row is to die here: let none wait behind a dead one (a
		// dead row blocking its key: TestRelayDeadRowBlocksKey).
		cfg.SkipDeadKeys = true
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{MaxAttempts: 1}), cfg)
		res := drainUntilEmpty(t, r, time.Minute)
		if res.Dead != 6 {
			t.Fatalf("drain: %+v, want the 6 rows of the refused topic dead", res)
		}
		kafkaenv.ReadTopic(t, brokers, good, 50, 30*time.Second, runIDs(goodIDs))

		dead, err := r.DeadLetters(ctx, gormoutbox.DeadLetterQuery{Topic: bad})
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 6 {
			t.Fatalf("DeadLetters: %d rows, want 6", len(dead))
		}
		var deadIDs []int64
		for _, row := range dead {
			if row.Attempts != 3 || row.DeadAt == nil || !strings.Contains(row.LastError, "INVALID_RECORD") {
				t.Errorf("dead row %d: attempts %d, dead_at %v, last_error %q", row.ID, row.Attempts, row.DeadAt, row.LastError)
			}
			deadIDs = append(deadIDs, row.ID)
		}
		if st, _ := r.Stats(ctx); st.Dead != 6 || st.Pending != 0 {
			t.Errorf("stats %+v, want 6 dead, 0 pending", st)
		}

		h.Remove()
		n, err := r.Replay(ctx, deadIDs...)
		if err != nil || n != 6 {
			t.Fatalf("Replay: %d, %v; want 6", n, err)
		}
		if n, err := r.Replay(ctx, deadIDs...); err != nil || n != 0 {
			t.Fatalf("second Replay: %d, %v; want 0 (no longer dead)", n, err)
		}
		if _, err := r.Replay(ctx); !errors.Is(err, dialects.ErrNoIDs) {
			t.Fatalf("Replay without ids: %v, want ErrNoIDs", err)
		}
		drainUntilEmpty(t, r, time.Minute)
		recs := kafkaenv.ReadTopic(t, brokers, bad, 6, 30*time.Second, runIDs(badIDs))
		checkSeqOrder(t, recs, 2, 3)
		if dead, _ := r.DeadLetters(ctx, gormoutbox.DeadLetterQuery{}); len(dead) != 0 {
			t.Errorf("%d dead letters left after replay", len(dead))
		}
	})
}

// A message over the client's batch limit, and one over the topic's
// max.message.bytes, are dead-lettered at once (one attempt) while the
// other messages of the same batch, including later ones of the same key,
// go through.
func TestRelayOversizedMessage(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, _ := kafkaenv.Kafka(t, 1)
		small := kafkaenv.TopicName("small")
		kafkaenv.CreateTopicWith(t, brokers, small, 1, map[string]string{"max.message.bytes": "3000"})
		big := kafkaenv.TopicName("big")
		kafkaenv.CreateTopic(t, brokers, big, 1)

		events := []gormoutbox.Event{
			{Topic: big, Key: "k", Type: "T", Payload: strings.Repeat("a", 100)},
			{Topic: big, Key: "k", Type: "T", Payload: strings.Repeat("b", 10_000)}, // over BatchBytes
			{Topic: big, Key: "k", Type: "T", Payload: strings.Repeat("c", 100)},
			{Topic: small, Key: "s", Type: "T", Payload: strings.Repeat("d", 100)},
			{Topic: small, Key: "s", Type: "T", Payload: strings.Repeat("e", 5_000)}, // over the topic's limit
			{Topic: small, Key: "t", Type: "T", Payload: strings.Repeat("f", 100)},
			{Topic: small, Key: "s", Type: "T", Payload: strings.Repeat("g", 100)},
		}
		if err := db.Transaction(func(tx *gorm.DB) error { return gormoutbox.Publish(tx, events...) }); err != nil {
			t.Fatal(err)
		}
		cfg := fastRetry
		cfg.MaxAttempts = 5
		// The later rows of a too-large message's key go past it here
		// (by default they wait behind the dead row: TestRelayDeadRowBlocksKey
		// and TestRelayHostileRowBlocksItsKey).
		cfg.SkipDeadKeys = true
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{BatchBytes: 8192}), cfg)
		res := drainUntilEmpty(t, r, time.Minute)
		if res.Dead != 2 || res.Published != 5 || res.Retried != 0 {
			t.Fatalf("drain: %+v, want 5 published, 2 dead, no retry", res)
		}
		dead, err := r.DeadLetters(ctx, gormoutbox.DeadLetterQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 2 {
			t.Fatalf("%d dead letters, want 2", len(dead))
		}
		for _, row := range dead {
			if row.Attempts != 1 || !strings.Contains(row.LastError, "too large") {
				t.Errorf("dead row %d (%d bytes): attempts %d, last_error %q", row.ID, len(row.Payload), row.Attempts, row.LastError)
			}
			if len(row.Payload) < 5000 {
				t.Errorf("dead row %d has a %d-byte payload; only the oversized ones should die", row.ID, len(row.Payload))
			}
		}
		bigRecs := kafkaenv.ReadTopic(t, brokers, big, 2, 20*time.Second, nil)
		smallRecs := kafkaenv.ReadTopic(t, brokers, small, 3, 20*time.Second, nil)
		perKey := map[string]string{}
		for _, m := range append(bigRecs, smallRecs...) {
			perKey[string(m.Key)] += string(m.Value[:1])
		}
		if want := map[string]string{"k": "ac", "s": "dg", "t": "f"}; !reflect.DeepEqual(perKey, want) {
			t.Errorf("arrived per key %v, want %v", perKey, want)
		}
	})
}

// A relay that dies holding a claim loses nothing: until its session ends
// another relay cannot take the claimed keys; then it takes and publishes
// them. (PostgreSQL: the claim's row locks; MySQL: the shard locks.)
func TestRelayKilledMidBatch(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, p := setup(t, d, nil, gormoutbox.Config{Shards: 1})
		brokers, _ := kafkaenv.Kafka(t, 2)
		topic := kafkaenv.TopicName("killed")
		kafkaenv.CreateTopic(t, brokers, topic, 2)
		ids := writeSeqEvents(t, db, topic, 4, 5, 1, 20)
		sqlDB, _ := db.DB()

		// The doomed relay claims everything, publishes it, and dies
		// before marking.
		pass, err := p.Dialect().Open(ctx, sqlDB, mustTable(t, "outbox"), dialects.ClaimOptions{Shards: 1})
		if err != nil {
			t.Fatal(err)
		}
		rows, err := pass.Claim(ctx, time.Now(), 100)
		if err != nil || len(rows) != 20 {
			t.Fatalf("claim: %d rows, %v; want 20", len(rows), err)
		}
		pub := newPublisher(t, brokers, kafka.Config{})
		msgs := make([]gormoutbox.Message, len(rows))
		for i, row := range rows {
			msgs[i] = gormoutbox.Message{Topic: row.Topic, Key: row.Key, Value: row.Payload,
				Headers: []gormoutbox.Header{{Key: gormoutbox.HeaderEventID, Value: []byte(row.EventID)}}}
		}
		if err := pub.Publish(ctx, msgs); err != nil {
			t.Fatal(err)
		}

		// While its session lives, another relay gets nothing.
		r := newRelay(t, db, pub, gormoutbox.RelayConfig{LockWait: -1})
		if res, err := r.Drain(ctx); err != nil || res.Published != 0 {
			t.Fatalf("drain while the claim is held: %+v, %v; want nothing", res, err)
		}

		// A standby relay waits for the shard (MySQL) ...
		var (
			wg      sync.WaitGroup
			standby gormoutbox.DrainResult
			serr    error
			waited  time.Duration
		)
		if d.Name == "mysql" {
			sr := newRelay(t, db, pub, gormoutbox.RelayConfig{LockWait: 20 * time.Second})
			wg.Add(1)
			go func() {
				defer wg.Done()
				start := time.Now()
				standby, serr = sr.Drain(ctx)
				waited = time.Since(start)
			}()
		}
		time.Sleep(500 * time.Millisecond)
		// ... the doomed relay's session is killed by the server ...
		killHolder(t, d.Name, sqlDB)
		wg.Wait()
		if d.Name == "mysql" {
			if serr != nil || standby.Published != 20 {
				t.Fatalf("standby relay: %+v, %v; want the 20 rows", standby, serr)
			}
			if waited < 400*time.Millisecond {
				t.Errorf("standby relay returned after %v: it did not wait for the lock", waited)
			}
		}
		// ... and everything is published again: duplicates, none lost.
		drainUntilEmpty(t, r, 30*time.Second)
		recs := kafkaenv.ReadTopic(t, brokers, topic, 40, 30*time.Second, runIDs(ids))
		dups := checkSeqOrder(t, recs, 4, 5)
		if dups != 20 {
			t.Errorf("%d duplicates, want 20 (the dead relay's batch, sent again)", dups)
		}
		_ = pass.Close()
	})
}

func mustTable(t *testing.T, name string) dialects.Table {
	tb, err := dialects.ParseTable(name)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

// killHolder ends the server session that holds the outbox claim.
func killHolder(t *testing.T, dialect string, db *sql.DB) {
	t.Helper()
	switch dialect {
	case "postgres":
		var n int
		err := db.QueryRow(`SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'idle in transaction'
  AND application_name = current_setting('application_name')`).Scan(&n)
		if err != nil || n != 1 {
			t.Fatalf("terminate the claiming session: %d sessions, %v", n, err)
		}
	case "mysql":
		var (
			id       sql.NullInt64
			database string
		)
		if err := db.QueryRow(`SELECT DATABASE()`).Scan(&database); err != nil {
			t.Fatal(err)
		}
		if err := db.QueryRow(`SELECT IS_USED_LOCK(?)`, mysql.ShardLockName(database, mustTable(t, "outbox"), 0)).Scan(&id); err != nil {
			t.Fatal(err)
		}
		if !id.Valid {
			t.Fatal("no session holds the shard lock")
		}
		if _, err := db.Exec(`KILL ` + strconv.FormatInt(id.Int64, 10)); err != nil {
			t.Fatalf("kill %d: %v", id.Int64, err)
		}
	}
}

// The broker goes away in the middle of the backlog and comes back (same
// port, same data): the relay's passes fail and back off while it is down,
// and once it is back every event arrives, in order per key.
func TestRelayBrokerDownAndUp(t *testing.T) {
	const keys, perKey = 8, 40
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		topic := kafkaenv.TopicName("downup")
		k := newRestartableKafka(t, topic, 4)
		brokers := k.Brokers()

		ids := writeSeqEvents(t, db, topic, keys, perKey/2, 1, 40)
		cfg := fastRetry
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{MaxAttempts: 1, WriteTimeout: time.Second}), cfg)
		drainUntilEmpty(t, r, 30*time.Second)

		k.Stop() // down
		more := writeSeqEvents(t, db, topic, keys, perKey/2, 1, 40)
		for id := range more {
			ids[id] = true
		}
		ctx := context.Background()
		failed := 0
		for i := 0; i < 3; i++ {
			res, err := r.Drain(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if res.Published != 0 {
				t.Fatalf("published %d rows with the broker down", res.Published)
			}
			failed += res.Retried
			time.Sleep(50 * time.Millisecond)
		}
		if failed == 0 {
			t.Fatal("no failed attempt recorded while the broker was down")
		}
		if n := countRows(t, db, "last_error IS NOT NULL AND published_at IS NULL"); n == 0 {
			t.Fatal("no row carries the broker's error")
		}
		if n := countRows(t, db, "attempts > 0"); n != 0 {
			t.Fatalf("%d rows count attempts for the broker being down, want 0", n)
		}

		k.Start() // up again
		drainUntilEmpty(t, r, time.Minute)
		// Renumber the second half's sequence after the first: read all and
		// check per key.
		recs := kafkaenv.ReadTopic(t, brokers, topic, keys*perKey, 30*time.Second, runIDs(ids))
		dups := checkSeqOrderHalves(t, recs, keys, perKey/2)
		t.Logf("%s: broker down for 3 passes (%d failed attempts), then up: %d events in order, %d duplicates", d.Name, failed, keys*perKey, dups)
	})
}

// checkSeqOrderHalves is checkSeqOrder for two rounds of writeSeqEvents on
// the same keys: each key's sequence runs 0..n-1 twice.
func checkSeqOrderHalves(t *testing.T, recs []kafkaenv.Record, keys, n int) int {
	t.Helper()
	type pos struct{ round, seq int }
	next := map[string]pos{}
	seen := map[string]bool{}
	dups := 0
	for _, r := range recs {
		id := r.Headers[gormoutbox.HeaderEventID]
		if seen[id] {
			dups++
			continue
		}
		seen[id] = true
		var e seqEvent
		if err := json.Unmarshal(r.Value, &e); err != nil {
			t.Fatal(err)
		}
		p := next[e.Key]
		if e.Seq != p.seq {
			t.Fatalf("key %s: seq %d arrived when %d of round %d was expected", e.Key, e.Seq, p.seq, p.round)
		}
		p.seq++
		if p.seq == n {
			p = pos{round: p.round + 1}
		}
		next[e.Key] = p
	}
	if len(next) != keys {
		t.Fatalf("%d keys arrived, want %d", len(next), keys)
	}
	for k, p := range next {
		if p.round != 2 || p.seq != 0 {
			t.Fatalf("key %s: stopped at round %d seq %d, want two full rounds", k, p.round, p.seq)
		}
	}
	return dups
}

// Rows of a key written while its first row waits for a retry wait behind
// it, however long the backoff: nothing overtakes a failed row.
func TestRelayNewRowsWaitBehindFailedRow(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		brokers, c := kfakeOnly(t, 2)
		topic := kafkaenv.TopicName("behind")
		kafkaenv.CreateTopic(t, brokers, topic, 2)
		ids := writeSeqEvents(t, db, topic, 1, 5, 1, 5)
		// A failure of the message (a broker error would pause the whole
		// relay for the hour instead).
		h := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: topic, Err: kerr.InvalidRecord, Count: -1})
		r := newRelay(t, db, newPublisher(t, brokers, kafka.Config{MaxAttempts: 1}), gormoutbox.RelayConfig{
			MinBackoff: time.Hour, MaxBackoff: time.Hour, LockWait: -1})
		if res, err := r.Drain(ctx); err != nil || res.Retried != 5 {
			t.Fatalf("failing drain: %+v, %v; want 5 retried", res, err)
		}
		h.Remove()
		// Seq 5..9 of the same key (the payload's seq restarts at 0, so
		// tell them apart by id order instead).
		more := writeSeqEvents(t, db, topic, 1, 5, 1, 5)
		for i := 0; i < 3; i++ {
			if res, err := r.Drain(ctx); err != nil || res.Published != 0 {
				t.Fatalf("drain while the first rows wait: %+v, %v; want nothing published", res, err)
			}
		}
		// The hour passes.
		sqlDB, _ := db.DB()
		if _, err := sqlDB.Exec(`UPDATE outbox SET available_at = created_at WHERE published_at IS NULL`); err != nil {
			t.Fatal(err)
		}
		drainUntilEmpty(t, r, 30*time.Second)
		for id := range more {
			ids[id] = true
		}
		recs := kafkaenv.ReadTopic(t, brokers, topic, 10, 20*time.Second, runIDs(ids))
		if dups := checkSeqOrderHalves(t, recs, 1, 5); dups != 0 {
			t.Logf("%d duplicates", dups)
		}
	})
}
