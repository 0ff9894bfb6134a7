package dialecttest

import (
	"context"
	"database/sql"
	"maps"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/go-outbox/outbox/dialects"
)

// runInboxHostile runs the cases of hostile messages: the classification
// of the database's errors (InboxClassifier) and the parking of content
// that is not valid text.
func runInboxHostile(t *testing.T, h Harness) {
	t.Run("ClassifyData", func(t *testing.T) { inboxClassifyData(t, h) })
	t.Run("ClassifyRolledBack", func(t *testing.T) { inboxClassifyRolledBack(t, h) })
	t.Run("ParkHostile", func(t *testing.T) { inboxParkHostile(t, h) })
}

// inboxHostileIDs are event ids a column may refuse: a NUL, invalid
// UTF-8, over the inbox's 191 bytes.
var inboxHostileIDs = map[string]string{
	"NUL":          "a\x00b",
	"invalid UTF8": "a\xff\xfeb",
	"300 bytes":    strings.Repeat("x", 300),
}

// ClassifyData: recording an event id the database refuses fails with an
// error the dialect classifies as InboxErrorData (or the id is stored
// and found again as it was); an error that is not about data (a missing
// table, a closed connection) is InboxErrorOther.
func inboxClassifyData(t *testing.T, h Harness) {
	if _, ok := h.Dialect.(dialects.InboxClassifier); !ok {
		t.Skip("the dialect is not an InboxClassifier")
	}
	e := newInboxEnv(t, h)
	for name, id := range inboxHostileIDs {
		t.Run(name, func(t *testing.T) {
			tx, err := e.db.BeginTx(e.ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback()
			fresh, err := e.d.InboxRecord(e.ctx, tx, dialects.InboxRecordParams{Table: e.table, Consumer: "c1",
				Messages: inboxMsgs(id), Now: inboxT0()})
			if err != nil {
				if c := dialects.ClassifyInboxError(e.d, err); c != dialects.InboxErrorData {
					t.Fatalf("record %q: %v classified %v, want %v", id, err, c, dialects.InboxErrorData)
				}
				return
			}
			if !fresh[id] {
				t.Fatalf("record %q: fresh %v, want the id", id, fresh)
			}
			if err := tx.Commit(); err != nil {
				t.Fatal(err)
			}
			if got := e.record(t, "c1", inboxT0(), id); len(got) != 0 {
				t.Errorf("%q stored but recorded again: fresh %q", id, got)
			}
		})
	}
	missing := dialects.Table{Name: "no_such_inbox"}
	_, err := e.d.InboxRecord(e.ctx, e.db, dialects.InboxRecordParams{Table: missing, Consumer: "c1",
		Messages: inboxMsgs("x"), Now: inboxT0()})
	if c := dialects.ClassifyInboxError(e.d, err); err == nil || c != dialects.InboxErrorOther {
		t.Errorf("record into a missing table: %v classified %v, want an error of class %v", err, c, dialects.InboxErrorOther)
	}
	db := h.Open(t)
	db.Close()
	err = e.d.InboxUnrecord(e.ctx, db, dialects.InboxUnrecordParams{Table: e.table, Consumer: "c1", EventIDs: []string{"x"}})
	if c := dialects.ClassifyInboxError(e.d, err); err == nil || c != dialects.InboxErrorOther {
		t.Errorf("on a closed pool: %v classified %v, want an error of class %v", err, c, dialects.InboxErrorOther)
	}
	if c := dialects.ClassifyInboxError(e.d, nil); c != dialects.InboxErrorOther {
		t.Errorf("nil classified %v", c)
	}
}

// ClassifyRolledBack: two transactions that lock two records in opposite
// orders deadlock; the loser's error is InboxErrorRolledBack.
func inboxClassifyRolledBack(t *testing.T, h Harness) {
	if _, ok := h.Dialect.(dialects.InboxClassifier); !ok {
		t.Skip("the dialect is not an InboxClassifier")
	}
	e := newInboxEnv(t, h)
	e.record(t, "c1", inboxT0(), "a", "b")
	ctx, cancel := context.WithTimeout(e.ctx, 30*time.Second)
	defer cancel()
	unrecord := func(tx *sql.Tx, id string) error {
		return e.d.InboxUnrecord(ctx, tx, dialects.InboxUnrecordParams{Table: e.table, Consumer: "c1", EventIDs: []string{id}})
	}
	tx1, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx1.Rollback()
	tx2, err := e.db.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx2.Rollback()
	if err := unrecord(tx1, "a"); err != nil {
		t.Fatal(err)
	}
	if err := unrecord(tx2, "b"); err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { errs <- unrecord(tx1, "b") }() // waits for tx2
	time.Sleep(200 * time.Millisecond)
	go func() { errs <- unrecord(tx2, "a") }() // closes the cycle
	var deadlock error
	for range 2 {
		err := <-errs
		if err != nil {
			deadlock = err
			// The loser ends; the winner goes on.
			tx1.Rollback()
			tx2.Rollback()
		}
	}
	if deadlock == nil {
		t.Fatal("no deadlock between two transactions locking a and b in opposite orders")
	}
	if c := dialects.ClassifyInboxError(e.d, deadlock); c != dialects.InboxErrorRolledBack {
		t.Errorf("deadlock %v classified %v, want %v", deadlock, c, dialects.InboxErrorRolledBack)
	}
}

// ParkHostile: a message whose key, value, headers (names and values) and
// last error hold NULs and invalid UTF-8 is parked, and its key, value and
// headers come back byte for byte (a header whose name looks encoded
// too); the last error comes back as valid text.
func inboxParkHostile(t *testing.T, h Harness) {
	e := newInboxEnv(t, h)
	dl := inboxLetter("c1", "hostile", inboxT0())
	dl.Key = []byte("k\x00\xff")
	dl.Value = []byte("\xff\xfe{not json\x00")
	dl.Headers = map[string]string{
		"event-id":        "a\x00b",
		"bad-value":       "\xff\xfe",
		"name\xff":        "ok",
		"base64:aGk=":     "looks encoded",
		"plain":           "plain",
		"nul-in-name\x00": "",
	}
	dl.LastError = "decode \xff failed\x00 here"
	e.park(t, dl)
	got := e.dead(t, "c1", 10, "hostile")
	if len(got) != 1 {
		t.Fatalf("dead letters %v, want hostile", deadIDs(got))
	}
	g := got[0]
	if string(g.Key) != string(dl.Key) || string(g.Value) != string(dl.Value) {
		t.Errorf("key %q value %q, want %q %q", g.Key, g.Value, dl.Key, dl.Value)
	}
	if !maps.Equal(g.Headers, dl.Headers) {
		t.Errorf("headers %q, want %q", g.Headers, dl.Headers)
	}
	if !utf8.ValidString(g.LastError) || strings.IndexByte(g.LastError, 0) >= 0 ||
		!strings.HasPrefix(g.LastError, "decode ") || !strings.HasSuffix(g.LastError, " here") {
		t.Errorf("last error %q: want valid text of %q", g.LastError, dl.LastError)
	}
}
