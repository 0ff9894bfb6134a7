package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/inbox"
	"github.com/go-outbox/outbox/internal/eventid"
	"github.com/go-outbox/outbox/internal/testenv"
)

// hashID is the inbox's replacement of an event id it cannot store.
func hashID(raw string) string {
	sum := sha256.Sum256([]byte(raw))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// syncBuffer is a log sink for tests.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Hostile messages among good ones on one partition: event ids that are
// missing, empty, 300 bytes, hold a NUL or invalid UTF-8 are handled once
// under their documented replacement ids (and again skipped when the
// topic is read anew); headers that are not text do not disturb anything;
// a value the handler cannot decode is parked after MaxAttempts with the
// handler's reason and its headers byte for byte, and Replay runs it. Every
// good message is handled once and in order, in bounded time.
func TestInboxHostileMessages(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 1)
		var ids eventid.Generator
		badHeaders := []kafkago.Header{{Key: "x-bad\xff", Value: []byte("v\xfe\x00")}, {Key: "x-nul", Value: []byte("a\x00b")},
			{Key: "base64:eA==", Value: []byte("looks encoded")}}
		type hostile struct {
			label   string
			headers []kafkago.Header // nil: no event-id header
			wantID  func(offset int64) string
		}
		offsetID := func(o int64) string { return e.topic + "/0/" + strconv.FormatInt(o, 10) }
		long := strings.Repeat("x", 300)
		hostiles := []hostile{
			{"missing", nil, offsetID},
			{"empty", []kafkago.Header{{Key: "event-id"}}, offsetID},
			{"300 bytes", []kafkago.Header{{Key: "event-id", Value: []byte(long)}}, func(int64) string { return hashID(long) }},
			{"NUL", []kafkago.Header{{Key: "event-id", Value: []byte("id\x00nul")}}, func(int64) string { return hashID("id\x00nul") }},
			{"invalid UTF-8", []kafkago.Header{{Key: "event-id", Value: []byte("id\xff\xfe")}}, func(int64) string { return hashID("id\xff\xfe") }},
		}
		// MySQL's PAD SPACE collations compare "x " equal to "x": an id
		// with a trailing space would meet its twin's record.
		twinID := ids.New()
		hostiles = append(hostiles,
			hostile{"twin", []kafkago.Header{{Key: "event-id", Value: []byte(twinID)}}, func(int64) string { return twinID }},
			hostile{"trailing space", []kafkago.Header{{Key: "event-id", Value: []byte(twinID + " ")}}, func(int64) string { return hashID(twinID + " ") }})
		badHeadersID := ids.New()
		hostiles = append(hostiles, hostile{"bad headers", append([]kafkago.Header{{Key: "event-id", Value: []byte(badHeadersID)}}, badHeaders...),
			func(int64) string { return badHeadersID }})

		// Good messages on keys k000..k002, a hostile one after every
		// third (key "h", in order too), and the undecodable one.
		var kms []kafkago.Message
		var want []inboxMsg
		wantIDs := map[string]string{} // label → inbox id
		seq := map[string]int{}
		add := func(m inboxMsg, headers []kafkago.Header) {
			v, _ := json.Marshal(m)
			kms = append(kms, kafkago.Message{Topic: e.topic, Key: []byte(m.Key), Value: v, Headers: headers})
			want = append(want, m)
		}
		undecodableID := ids.New()
		for i := 0; i < 30; i++ {
			k := fmt.Sprintf("k%03d", i%3)
			seq[k]++
			m := inboxMsg{EventID: ids.New(), Key: k, Seq: seq[k]}
			add(m, []kafkago.Header{{Key: "event-id", Value: []byte(m.EventID)}})
			if i%3 == 2 && len(hostiles) > 0 {
				h := hostiles[0]
				hostiles = hostiles[1:]
				seq["h"]++
				wantIDs[h.label] = h.wantID(int64(len(kms)))
				add(inboxMsg{EventID: h.label, Key: "h", Seq: seq["h"]}, h.headers)
			}
			if i == 20 {
				kms = append(kms, kafkago.Message{Topic: e.topic, Key: []byte("u"), Value: []byte("\xff not json"),
					Headers: append([]kafkago.Header{{Key: "event-id", Value: []byte(undecodableID)}}, badHeaders...)})
			}
		}
		if len(hostiles) != 0 {
			t.Fatalf("%d hostile messages not placed", len(hostiles))
		}
		writeKafka(t, e.brokers, kms...)

		var broken atomic.Bool
		broken.Store(true)
		var mu sync.Mutex
		seenID := map[string]string{} // label → m.EventID
		var replayed *inbox.Message
		h := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			var im inboxMsg
			if err := json.Unmarshal(m.Value, &im); err != nil {
				if broken.Load() {
					return fmt.Errorf("decode the value of %s: %w", m.EventID, err)
				}
				im = inboxMsg{EventID: "undecodable", Key: "u", Seq: 1}
				mu.Lock()
				replayed = m
				mu.Unlock()
			}
			mu.Lock()
			seenID[im.EventID] = m.EventID
			mu.Unlock()
			return tx.Create(&applied{EventID: im.EventID, K: im.Key, Seq: im.Seq}).Error
		}
		c := e.consumer(t, h, func(c *inbox.Config) { c.MaxAttempts = 3; c.BatchSize = 8 })
		stop := start(t, c)
		waitFor(t, 60*time.Second, "every message handled or parked", func() bool {
			s := c.Stats()
			return s.Handled+s.Parked >= int64(len(kms))
		})
		stop()
		if s := c.Stats(); s.Parked != 1 || s.Handled != int64(len(want)) || s.TxFailures != 0 {
			t.Errorf("stats %+v: want %d handled, 1 parked, no failed transaction", s, len(want))
		}
		checkApplied(t, e.db, want)
		for label, id := range wantIDs {
			if got := seenID[label]; got != id {
				t.Errorf("%s: handled under event id %q, want %q", label, got, id)
			}
			var n int64
			e.db.Table("inbox").Where("event_id = ? AND status = 'done'", id).Count(&n)
			if n != 1 {
				t.Errorf("%s: %d done inbox records of %q, want 1", label, n, id)
			}
		}

		dead, err := c.DeadLetters(context.Background(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 1 || dead[0].EventID != undecodableID || dead[0].Attempts != 3 ||
			!strings.Contains(dead[0].LastError, "decode the value") || string(dead[0].Value) != "\xff not json" {
			t.Fatalf("dead letters %+v, want %s after 3 attempts, its reason and its value", dead, undecodableID)
		}
		for _, hd := range badHeaders {
			if got, ok := dead[0].Headers[hd.Key]; !ok || got != string(hd.Value) {
				t.Errorf("dead letter header %q = %q, want %q", hd.Key, got, hd.Value)
			}
		}

		// Read anew: the replacement ids are stable, everything is a
		// duplicate.
		resetOffsets(t, e.brokers, e.group, e.topic, 1)
		c2 := e.consumer(t, h, func(c *inbox.Config) { c.MaxAttempts = 3; c.BatchSize = 8 })
		stop2 := start(t, c2)
		waitFor(t, 60*time.Second, "every message skipped", func() bool {
			return c2.Stats().Duplicates >= int64(len(kms))
		})
		stop2()
		if s := c2.Stats(); s.Handled != 0 || s.Parked != 0 {
			t.Errorf("read anew: stats %+v, want only duplicates", s)
		}

		broken.Store(false)
		if n, err := c.Replay(context.Background(), undecodableID); err != nil || n != 1 {
			t.Fatalf("Replay = %d, %v; want 1", n, err)
		}
		if n := inboxCount(t, e.db, "dead"); n != 0 {
			t.Errorf("%d dead rows after replay, want 0", n)
		}
		if replayed == nil || replayed.Header("x-nul") != "a\x00b" || replayed.Header("x-bad\xff") != "v\xfe\x00" {
			t.Errorf("replayed message %+v: want its headers as produced", replayed)
		}
		checkApplied(t, e.db, append(want, inboxMsg{EventID: "undecodable", Key: "u", Seq: 1}))
	})
}

// A message whose record the database refuses (a data error: here an
// event id longer than an operator's narrower event_id column) is parked
// at once with the database's reason, under the hash of its id; the
// batch's other messages are handled once and in order, and Replay of the
// parked one works.
func TestInboxDataErrorParks(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 1)
		c := e.consumer(t, applyHandler, nil)
		alter := `ALTER TABLE inbox ALTER COLUMN event_id TYPE VARCHAR(80)`
		if d.Name == "mysql" {
			alter = `ALTER TABLE inbox MODIFY event_id VARCHAR(80) NOT NULL`
		}
		if err := e.db.Exec(alter).Error; err != nil {
			t.Fatal(err)
		}
		var ids eventid.Generator
		var want []inboxMsg
		var kms []kafkago.Message
		raw := strings.Repeat("y", 100) // fits MaxIDLen, not the column
		for i := 0; i < 20; i++ {
			m := inboxMsg{EventID: ids.New(), Key: fmt.Sprintf("k%d", i%2), Seq: i/2 + 1}
			if i == 7 {
				m.EventID = raw
			} else {
				want = append(want, m)
			}
			kms = append(kms, inMsg(e.topic, m))
		}
		writeKafka(t, e.brokers, kms...)
		stop := start(t, c)
		waitFor(t, 60*time.Second, "every message handled or parked", func() bool {
			s := c.Stats()
			return s.Handled+s.Parked >= int64(len(kms))
		})
		stop()
		if s := c.Stats(); s.Parked != 1 || s.Handled != int64(len(want)) {
			t.Errorf("stats %+v: want %d handled, 1 parked", s, len(want))
		}
		checkApplied(t, e.db, want)
		dead, err := c.DeadLetters(context.Background(), 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(dead) != 1 || dead[0].EventID != hashID(raw) || dead[0].Headers["event-id"] != raw ||
			!strings.Contains(dead[0].LastError, "cannot store the record") {
			t.Fatalf("dead letters %+v, want %s parked with the database's reason", dead, hashID(raw))
		}
		if n, err := c.Replay(context.Background(), dead[0].EventID); err != nil || n != 1 {
			t.Fatalf("Replay = %d, %v; want 1", n, err)
		}
		var n int64
		e.db.Model(&applied{}).Where("event_id = ?", raw).Count(&n)
		if n != 1 {
			t.Errorf("replayed message applied %d times, want 1", n)
		}
	})
}

// lockRow and fillerRow are the tables the deadlock test locks.
type lockRow struct {
	ID uint `gorm:"primaryKey;autoIncrement:false"`
	N  int
}

type fillerRow struct {
	ID uint `gorm:"primaryKey"`
	N  int
}

// A handler's statement that deadlocks with another transaction (the
// database rolls the inbox's transaction back: InnoDB the whole of it,
// savepoints included) makes the inbox retry the whole batch: no attempt
// is counted against the message, every message is applied once, and the
// log names the deadlock, not a missing savepoint.
func TestInboxDeadlockRetriesBatch(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		e := newInboxEnv(t, d, 1)
		if err := e.db.AutoMigrate(&lockRow{}, &fillerRow{}); err != nil {
			t.Fatal(err)
		}
		e.db.Create(&[]lockRow{{ID: 1}, {ID: 2}})
		fill := make([]fillerRow, 2000)
		if err := e.db.CreateInBatches(&fill, 500).Error; err != nil {
			t.Fatal(err)
		}
		if d.Name == "postgres" {
			// The other transaction waits longer before it looks for a
			// deadlock, so that the handler's transaction is the victim.
			err := e.db.Transaction(func(tx *gorm.DB) error { return tx.Exec(`SET LOCAL deadlock_timeout = '20s'`).Error })
			if err != nil {
				t.Skipf("cannot set deadlock_timeout: %v", err)
			}
		}
		want := produceInbox(t, e.brokers, e.topic, 20, 3)
		target := want[5].EventID
		var provoked atomic.Bool
		other := make(chan error, 1)
		h := func(ctx context.Context, tx *gorm.DB, m *inbox.Message) error {
			if m.EventID == target && !provoked.Swap(true) {
				if err := tx.Exec(`UPDATE lock_rows SET n = n + 1 WHERE id = 1`).Error; err != nil {
					return err
				}
				ready := make(chan error, 1)
				go func() { other <- heavyOpposite(e.db, d.Name, ready) }()
				if err := <-ready; err != nil {
					return err
				}
				time.Sleep(300 * time.Millisecond) // the other transaction waits for row 1
				if err := tx.Exec(`UPDATE lock_rows SET n = n + 1 WHERE id = 2`).Error; err != nil {
					return err // the deadlock
				}
			}
			return applyHandler(ctx, tx, m)
		}
		var logs syncBuffer
		c := e.consumer(t, h, func(c *inbox.Config) {
			c.Logger = slog.New(slog.NewTextHandler(&logs, nil))
			c.BatchSize = 10
		})
		stop := start(t, c)
		waitFor(t, 60*time.Second, "every message handled", func() bool { return c.Stats().Handled >= int64(len(want)) })
		stop()
		if err := <-other; err != nil {
			t.Fatalf("the other transaction: %v", err)
		}
		checkApplied(t, e.db, want)
		s := c.Stats()
		if s.Retries != 0 || s.Parked != 0 || s.TxFailures < 1 {
			t.Errorf("stats %+v: want the batch retried (a failed transaction), no handler retry, nothing parked", s)
		}
		l := logs.String()
		deadlock := "Deadlock found"
		if d.Name == "postgres" {
			deadlock = "deadlock detected"
		}
		if !strings.Contains(l, deadlock) || !strings.Contains(l, "rolled the batch's transaction back") {
			t.Errorf("log does not name the deadlock (%q):\n%s", deadlock, l)
		}
		if strings.Contains(l, "does not exist") {
			t.Errorf("log names a missing savepoint:\n%s", l)
		}
	})
}

// heavyOpposite locks row 2 of lock_rows after many filler rows (so that
// InnoDB picks the other, lighter transaction as the deadlock's victim),
// says so on ready, then waits for row 1 and commits.
func heavyOpposite(db *gorm.DB, dialect string, ready chan<- error) error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	sqlDB, err := db.DB()
	if err != nil {
		ready <- err
		return err
	}
	tx, err := sqlDB.BeginTx(ctx, nil)
	if err != nil {
		ready <- err
		return err
	}
	defer tx.Rollback()
	stmts := []string{`UPDATE filler_rows SET n = n + 1`, `UPDATE lock_rows SET n = n + 1 WHERE id = 2`}
	if dialect == "postgres" {
		stmts = append([]string{`SET LOCAL deadlock_timeout = '20s'`}, stmts...)
	}
	for _, s := range stmts {
		if _, err := tx.ExecContext(ctx, s); err != nil {
			ready <- err
			return err
		}
	}
	ready <- nil
	if _, err := tx.ExecContext(ctx, `UPDATE lock_rows SET n = n + 1 WHERE id = 1`); err != nil {
		return fmt.Errorf("lock row 1: %w", err)
	}
	return tx.Commit()
}
