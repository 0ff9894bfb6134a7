package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
	"github.com/go-outbox/outbox/kafka"
)

// recordingPublisher keeps every message it is given, per key in the order
// given, and the size of every call.
type recordingPublisher struct {
	mu    sync.Mutex
	byKey map[string][]string // key -> payloads
	calls []int
	bytes []int
}

func (p *recordingPublisher) Publish(_ context.Context, msgs []gormoutbox.Message) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.byKey == nil {
		p.byKey = map[string][]string{}
	}
	n := 0
	for _, m := range msgs {
		p.byKey[string(m.Key)] = append(p.byKey[string(m.Key)], string(m.Value))
		n += len(m.Value)
	}
	p.calls = append(p.calls, len(msgs))
	p.bytes = append(p.bytes, n)
	return nil
}

func (p *recordingPublisher) Close() error { return nil }

// lastID returns the id of the newest outbox row.
func lastID(t *testing.T, db *gorm.DB) int64 {
	t.Helper()
	var id int64
	if err := db.Raw(`SELECT MAX(id) FROM outbox`).Scan(&id).Error; err != nil {
		t.Fatal(err)
	}
	return id
}

// Rows the relay cannot publish as stored — written by hand, by an older
// version or by another program — are dead-lettered at once, each alone,
// with an error naming the row and the column; every other row is
// published, in order per key, the first row in id order being hostile
// included, in one Drain of one-row batches.
func TestRelayHostileRowsDeadLetteredAlone(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		type hostile struct {
			id     int64
			column string
		}
		var bad []hostile
		want := map[string][]string{}
		// Each hostile row is made from a good one by a raw UPDATE. The
		// JSON columns of both databases refuse invalid JSON, so headers
		// are valid JSON of the wrong shape.
		spoil := map[int]func(id int64) string{
			0: func(id int64) string { return setColumn(t, db, id, "headers", `[1]`) }, // the first row in id order
			5: func(id int64) string { return setColumn(t, db, id, "headers", `{"a": 1}`) },
			9: func(id int64) string { return setColumn(t, db, id, "headers", `"text"`) },
			12: func(id int64) string {
				return setColumn(t, db, id, "topic", "")
			},
			17: func(id int64) string { return setColumn(t, db, id, "topic", "bad topic!") },
			22: func(id int64) string {
				if d.Name != "postgres" {
					// The MySQL column cannot hold a key over the limit.
					if err := db.Exec(`UPDATE outbox SET msg_key = ? WHERE id = ?`, []byte(strings.Repeat("k", 1100)), id).Error; err == nil {
						t.Errorf("MySQL stored a 1,100-byte key")
					}
					return ""
				}
				return setColumn(t, db, id, "msg_key", []byte(strings.Repeat("k", 1100)))
			},
		}
		for i := 0; i < 30; i++ {
			key := fmt.Sprint("k", i%3)
			payload := fmt.Sprintf(`{"i":%d}`, i)
			if err := db.Transaction(func(tx *gorm.DB) error {
				return gormoutbox.Publish(tx, gormoutbox.Event{Topic: "hostile", Key: key, Type: "T", Payload: json.RawMessage(payload)})
			}); err != nil {
				t.Fatal(err)
			}
			if f, ok := spoil[i]; ok {
				if col := f(lastID(t, db)); col != "" {
					bad = append(bad, hostile{lastID(t, db), col})
					continue
				}
			}
			want[key] = append(want[key], payload)
		}
		// The schema keeps what it declares: a NULL payload cannot be stored.
		if err := db.Exec(`UPDATE outbox SET payload = NULL WHERE id = ?`, lastID(t, db)).Error; err == nil {
			t.Errorf("the outbox table stored a NULL payload")
		}

		pub := &recordingPublisher{}
		// Every key here has a hostile row: with SkipDeadKeys the later
		// rows of those keys go past their dead row (by default they wait
		// behind it: TestRelayHostileRowBlocksItsKey).
		r := newRelay(t, db, pub, gormoutbox.RelayConfig{BatchSize: 1, Workers: 1, LockWait: -1, SkipDeadKeys: true})
		res, err := r.Drain(ctx)
		if err != nil {
			t.Fatalf("Drain over hostile rows: %v", err)
		}
		if res.Dead != len(bad) || res.Published != 30-len(bad) {
			t.Errorf("one Drain: %+v, want %d published and %d dead", res, 30-len(bad), len(bad))
		}
		for k, w := range want {
			if got := pub.byKey[k]; !slices.Equal(got, w) {
				t.Errorf("key %s published %v, want %v", k, got, w)
			}
		}
		dead, err := r.DeadLetters(ctx, gormoutbox.DeadLetterQuery{})
		if err != nil {
			t.Fatalf("DeadLetters: %v", err)
		}
		if len(dead) != len(bad) {
			t.Fatalf("%d dead letters, want the %d hostile rows", len(dead), len(bad))
		}
		for i, b := range bad {
			prefix := fmt.Sprintf("outbox row %d: column %s: ", b.id, b.column)
			if dead[i].ID != b.id || dead[i].Attempts != 1 || !strings.HasPrefix(dead[i].LastError, prefix) {
				t.Errorf("dead letter %d: row %d, attempts %d, last_error %q; want row %d, 1 attempt, an error starting %q",
					i, dead[i].ID, dead[i].Attempts, dead[i].LastError, b.id, prefix)
			}
		}
		if !strings.Contains(dead[0].LastError, "not a JSON object of strings") {
			t.Errorf("dead letter of row %d: %q, want it to say the headers are not a JSON object of strings", bad[0].id, dead[0].LastError)
		}
		// Later passes go on.
		if err := db.Transaction(func(tx *gorm.DB) error {
			return gormoutbox.Publish(tx, gormoutbox.Event{Topic: "hostile", Key: "k0", Type: "T", Payload: json.RawMessage(`{"i":30}`)})
		}); err != nil {
			t.Fatal(err)
		}
		if res, err := r.Drain(ctx); err != nil || res.Published != 1 {
			t.Fatalf("a later Drain: %+v, %v; want the new row published", res, err)
		}
	})
}

// With the default dead-row policy a hostile row, dead-lettered, blocks the
// later rows of its key (counted as blocked) while every other key flows.
func TestRelayHostileRowBlocksItsKey(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		for i := 0; i < 6; i++ {
			key := []string{"a", "b"}[i%2]
			if err := db.Transaction(func(tx *gorm.DB) error {
				return gormoutbox.Publish(tx, gormoutbox.Event{Topic: "hostile", Key: key, Type: "T", Payload: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
			}); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				setColumn(t, db, lastID(t, db), "headers", `[1]`)
			}
		}
		pub := &recordingPublisher{}
		r := newRelay(t, db, pub, gormoutbox.RelayConfig{Workers: 1, LockWait: -1})
		res, err := r.Drain(ctx)
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
		if res.Dead != 1 || res.Published != 3 {
			t.Errorf("Drain: %+v, want key b's 3 rows published and the hostile row dead", res)
		}
		if got := pub.byKey["b"]; !slices.Equal(got, []string{`{"i":1}`, `{"i":3}`, `{"i":5}`}) {
			t.Errorf("key b published %v, want its 3 rows in order", got)
		}
		if got := pub.byKey["a"]; len(got) != 0 {
			t.Errorf("key a published %v behind its dead row, want nothing", got)
		}
		st, err := r.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if st.Blocked != 2 || st.Dead != 1 {
			t.Errorf("Stats: %+v, want 2 blocked behind 1 dead", st)
		}
		// A relay that lets rows pass dead ones counts none as blocked.
		skip := newRelay(t, db, pub, gormoutbox.RelayConfig{Workers: 1, LockWait: -1, SkipDeadKeys: true})
		if st, err := skip.Stats(ctx); err != nil || st.Blocked != 0 || st.Pending != 2 {
			t.Errorf("Stats with SkipDeadKeys: %+v, %v; want 2 pending, none blocked", st, err)
		}
		if ts, err := skip.TopicStats(ctx); err != nil || ts["hostile"].Blocked != 0 {
			t.Errorf("TopicStats with SkipDeadKeys: %+v, %v; want none blocked", ts, err)
		}
	})
}

// Deleting a dead row releases the rows its key blocked at the next look,
// RelayConfig.BlockedRecheck later.
func TestRelayDeletedDeadRowReleasesKey(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		ctx := context.Background()
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		for i := 0; i < 3; i++ {
			if err := db.Transaction(func(tx *gorm.DB) error {
				return gormoutbox.Publish(tx, gormoutbox.Event{Topic: "hostile", Key: "a", Type: "T", Payload: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
			}); err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				setColumn(t, db, lastID(t, db), "headers", `[1]`)
			}
		}
		pub := &recordingPublisher{}
		// A recheck long enough that the second Drain comes before it on a
		// loaded machine (200 ms was not: seen failing under parallel tests).
		const recheck = 2 * time.Second
		r := newRelay(t, db, pub, gormoutbox.RelayConfig{Workers: 1, LockWait: -1, BlockedRecheck: recheck})
		if res, err := r.Drain(ctx); err != nil || res.Dead != 1 || res.Published != 0 {
			t.Fatalf("Drain: %+v, %v; want the hostile row dead and its key blocked", res, err)
		}
		if err := db.Exec(`DELETE FROM outbox WHERE dead_at IS NOT NULL`).Error; err != nil {
			t.Fatal(err)
		}
		if res, err := r.Drain(ctx); err != nil || res.Published != 0 {
			t.Fatalf("Drain at once: %+v, %v; want nothing yet (the blocked rows wait BlockedRecheck)", res, err)
		}
		time.Sleep(recheck + 100*time.Millisecond)
		if res, err := r.Drain(ctx); err != nil || res.Published != 2 {
			t.Fatalf("Drain after BlockedRecheck: %+v, %v; want the 2 released rows", res, err)
		}
		if got := pub.byKey["a"]; !slices.Equal(got, []string{`{"i":1}`, `{"i":2}`}) {
			t.Errorf("key a published %v, want its 2 later rows in order", got)
		}
	})
}

// setColumn rewrites one column of outbox row id by raw SQL and returns the
// column's name.
func setColumn(t *testing.T, db *gorm.DB, id int64, column string, v any) string {
	t.Helper()
	if err := db.Exec(`UPDATE outbox SET `+column+` = ? WHERE id = ?`, v, id).Error; err != nil {
		t.Fatalf("set %s of row %d: %v", column, id, err)
	}
	return column
}

// BigDoc is an event source whose payload can be made large.
type BigDoc struct {
	gormoutbox.Source `outbox:"topic:docs"`
	ID                uint `gorm:"primaryKey"`
	Body              string
}

// A payload over Config.MaxPayloadBytes is refused in the caller's
// transaction — a captured create or update, an explicit Publish — with an
// error naming the model (or event) and the size, and nothing is written.
func TestPayloadOverMaxPayloadBytesRefused(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		db, _ := setup(t, d, nil, gormoutbox.Config{MaxPayloadBytes: 4096}, &BigDoc{})
		var outboxRows = func() int64 {
			var n int64
			if err := db.Raw(`SELECT COUNT(*) FROM outbox`).Scan(&n).Error; err != nil {
				t.Fatal(err)
			}
			return n
		}
		checkErr := func(who string, err error, model, event string) {
			t.Helper()
			var pe *gormoutbox.PayloadTooLargeError
			if !errors.Is(err, gormoutbox.ErrPayloadTooLarge) || !errors.As(err, &pe) {
				t.Fatalf("%s: %v, want a *PayloadTooLargeError", who, err)
			}
			if pe.Model != model || !strings.Contains(pe.Event, event) || pe.Size < 5000 || pe.Limit != 4096 {
				t.Errorf("%s: %+v, want model %q, event %q, size of 5000 or more, limit 4096", who, pe, model, event)
			}
			if msg := err.Error(); !strings.Contains(msg, fmt.Sprint(pe.Size)) || !strings.Contains(msg, "MaxPayloadBytes") ||
				(model != "" && !strings.Contains(msg, "model "+model)) {
				t.Errorf("%s: %q, want the model, the size and the limit named", who, msg)
			}
		}
		big := strings.Repeat("x", 5000)
		checkErr("Create", db.Create(&BigDoc{Body: big}).Error, "BigDoc", "row")
		err := db.Transaction(func(tx *gorm.DB) error { return tx.Create(&BigDoc{Body: big}).Error })
		checkErr("Create in a transaction", err, "BigDoc", "row")
		if n := count(t, db, &BigDoc{}); n != 0 || outboxRows() != 0 {
			t.Fatalf("after refused creates: %d docs, %d outbox rows; want none", n, outboxRows())
		}
		doc := BigDoc{Body: "small"}
		if err := db.Create(&doc).Error; err != nil {
			t.Fatal(err)
		}
		checkErr("Update", db.Model(&doc).Update("body", big).Error, "BigDoc", fmt.Sprint("row ", doc.ID))
		var back BigDoc
		if err := db.First(&back, doc.ID).Error; err != nil || back.Body != "small" || outboxRows() != 1 {
			t.Fatalf("after a refused update: body %q (%v), %d outbox rows; want the row unchanged and one event", back.Body, err, outboxRows())
		}
		err = db.Transaction(func(tx *gorm.DB) error {
			err := gormoutbox.Publish(tx,
				gormoutbox.Event{Topic: "docs", Type: "Small", Payload: "ok"},
				gormoutbox.Event{Topic: "docs", Type: "Big", Payload: []byte(big)})
			checkErr("Publish", err, "", `event 1 (type "Big", topic "docs")`)
			return nil // commit anyway: Publish wrote nothing
		})
		if err != nil || outboxRows() != 1 {
			t.Fatalf("after a refused Publish: %v, %d outbox rows; want nothing written", err, outboxRows())
		}
	})
}

// MaxPayloadBytes defaults to the kafka Publisher's default BatchBytes; a
// negative or absurd value is a config error naming the field.
func TestMaxPayloadBytesConfig(t *testing.T) {
	if gormoutbox.DefaultMaxPayloadBytes != kafka.DefaultBatchBytes {
		t.Errorf("DefaultMaxPayloadBytes = %d, kafka.DefaultBatchBytes = %d: want them equal",
			gormoutbox.DefaultMaxPayloadBytes, kafka.DefaultBatchBytes)
	}
	d := testenv.Dialects()[0]
	for _, v := range []int{-1, 2 << 30} {
		db := d.Open(t, nil)
		err := db.Use(gormoutbox.New(gormoutbox.Config{MaxPayloadBytes: v}))
		if !errors.Is(err, gormoutbox.ErrInvalidConfig) || !strings.Contains(err.Error(), "MaxPayloadBytes") {
			t.Errorf("MaxPayloadBytes %d: db.Use = %v, want ErrInvalidConfig naming MaxPayloadBytes", v, err)
		}
	}
}

// Claims are bounded by bytes as well as rows: a backlog of large rows is
// read a few at a time (RelayConfig.BatchBytes), and all of it arrives.
func TestRelayClaimsBoundedByBytes(t *testing.T) {
	forEachDialect(t, func(t *testing.T, d testenv.Dialect) {
		const (
			rows = 120
			size = 256 << 10
			per  = 10
		)
		db, _ := setup(t, d, nil, gormoutbox.Config{})
		payload := strings.Repeat("p", size-8)
		for i := 0; i < rows; i += per {
			if err := db.Transaction(func(tx *gorm.DB) error {
				for j := i; j < i+per; j++ {
					if err := gormoutbox.Publish(tx, gormoutbox.Event{Topic: "large", Key: fmt.Sprint("k", j%4), Type: "T",
						Payload: fmt.Sprintf("%08d", j) + payload}); err != nil {
						return err
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
		pub := &recordingPublisher{}
		r := newRelay(t, db, pub, gormoutbox.RelayConfig{BatchBytes: per * size, LockWait: -1})
		res := drainUntilEmpty(t, r, 2*time.Minute)
		if res.Published != rows {
			t.Fatalf("drain: %+v, want %d published", res, rows)
		}
		for i, n := range pub.calls {
			if n > per || pub.bytes[i] > per*size {
				t.Errorf("Publish call %d: %d messages, %d bytes; want at most %d and %d (BatchBytes)", i, n, pub.bytes[i], per, per*size)
			}
		}
		if len(pub.calls) < rows/per {
			t.Errorf("%d Publish calls, want at least %d", len(pub.calls), rows/per)
		}
		for k, got := range pub.byKey {
			for i := 1; i < len(got); i++ {
				if got[i][:8] <= got[i-1][:8] {
					t.Fatalf("key %s: %s after %s", k, got[i][:8], got[i-1][:8])
				}
			}
		}
	})
}
