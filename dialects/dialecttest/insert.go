package dialecttest

import (
	"bytes"
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

// runInsert checks that Insert keeps every field and the order of the
// records.
func runInsert(t *testing.T, h Harness) {
	outboxCase(t, "RoundTrip", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		binary := make([]byte, 256)
		for i := range binary {
			binary[i] = byte(i)
		}
		full := e.rec("orders", []byte("order-1"))
		full.EventType, full.AggregateType, full.AggregateID = "OrderPlaced", "Order", "42"
		full.Payload = binary
		full.Headers = map[string]string{"content-type": "application/octet-stream", "trace": "ünï \"q\""}
		full.AckTopic = "orders-acks"
		full.CreatedAt = e.now.Add(-time.Hour).Add(123 * time.Microsecond)
		full.AvailableAt = e.now.Add(time.Hour).Add(456 * time.Microsecond)
		noKey := e.rec("orders", nil)
		noKey.Shard = 3
		emptyKey := e.rec("orders", []byte{})
		emptyKey.Payload = []byte{}
		recs := []dialects.Record{full, noKey, emptyKey}

		// In a transaction, as capture writes them.
		tx, err := e.db.BeginTx(e.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.d.Insert(e.ctx, tx, e.table, recs); err != nil {
			_ = tx.Rollback()
			t.Fatalf("Insert: %v", err)
		}
		if err := tx.Commit(); err != nil {
			t.Fatal(err)
		}
		got := e.rows()
		if len(got) != len(recs) {
			t.Fatalf("%d rows, want %d", len(got), len(recs))
		}
		for i, want := range recs {
			checkRecord(t, got[i], want)
		}
		if got[1].Key != nil {
			t.Errorf("record without a key read back with key %q, want nil", got[1].Key)
		}
		if got[2].Key == nil {
			t.Error("record with an empty key read back without a key, want an empty one")
		}
	})

	outboxCase(t, "Rollback", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		tx, err := e.db.BeginTx(e.ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.d.Insert(e.ctx, tx, e.table, []dialects.Record{e.rec("t", []byte("k"))}); err != nil {
			t.Fatalf("Insert: %v", err)
		}
		if err := tx.Rollback(); err != nil {
			t.Fatal(err)
		}
		if got := e.rows(); len(got) != 0 {
			t.Fatalf("%d rows after the transaction rolled back, want 0", len(got))
		}
	})

	outboxCase(t, "ManyInOrder", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		n := dialects.MaxInsertRows*2 + 7
		recs := make([]dialects.Record, n)
		for i := range recs {
			recs[i] = e.rec("bulk", []byte(fmt.Sprint("k", i%13)))
			recs[i].Payload = []byte(fmt.Sprint(i))
		}
		if err := e.d.Insert(e.ctx, e.db, e.table, recs); err != nil {
			t.Fatalf("Insert of %d records: %v", n, err)
		}
		got := e.rows()
		if len(got) != n {
			t.Fatalf("%d rows, want %d", len(got), n)
		}
		for i := range got {
			if got[i].EventID != recs[i].EventID || string(got[i].Payload) != fmt.Sprint(i) {
				t.Fatalf("row %d (id %d) is record %s (payload %q): out of order", i, got[i].ID, got[i].EventID, got[i].Payload)
			}
		}
	})

	outboxCase(t, "DuplicateEventID", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		r := e.rec("t", []byte("k"))
		e.insert(r)
		if err := e.d.Insert(e.ctx, e.db, e.table, []dialects.Record{r}); err == nil {
			t.Fatal("a second row with the same event id was accepted")
		}
	})
}

// checkRecord compares a row read back with the record written.
func checkRecord(t *testing.T, got outboxRow, want dialects.Record) {
	t.Helper()
	if got.EventID != want.EventID || got.Topic != want.Topic || got.EventType != want.EventType ||
		got.AggregateType != want.AggregateType || got.AggregateID != want.AggregateID || got.Shard != want.Shard {
		t.Errorf("row %d: %s %s %s %s/%s shard %d; want %s %s %s %s/%s shard %d", got.ID,
			got.EventID, got.Topic, got.EventType, got.AggregateType, got.AggregateID, got.Shard,
			want.EventID, want.Topic, want.EventType, want.AggregateType, want.AggregateID, want.Shard)
	}
	if !bytes.Equal(got.Key, want.Key) || (got.Key == nil) != (want.Key == nil) {
		t.Errorf("row %d: key %q (nil %v), want %q (nil %v)", got.ID, got.Key, got.Key == nil, want.Key, want.Key == nil)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("row %d: payload %x, want %x", got.ID, got.Payload, want.Payload)
	}
	if !maps.Equal(got.Headers, want.Headers) {
		t.Errorf("row %d: headers %v, want %v", got.ID, got.Headers, want.Headers)
	}
	if got.AckTopic != want.AckTopic {
		t.Errorf("row %d: ack topic %q, want %q", got.ID, got.AckTopic, want.AckTopic)
	}
	if !sameTime(got.CreatedAt, want.CreatedAt) || !sameTime(got.AvailableAt, want.AvailableAt) {
		t.Errorf("row %d: created %v, available %v; want %v, %v", got.ID, got.CreatedAt, got.AvailableAt, want.CreatedAt, want.AvailableAt)
	}
	if got.Attempts != 0 || got.LastError != "" || got.PublishedAt != nil || got.DeadAt != nil ||
		got.ProcessAttempts != 1 || got.FailedAt != nil || got.ProcessedAt != nil {
		t.Errorf("row %d: relay state %+v, want a fresh row (process attempt 1)", got.ID, got)
	}
}
