package dialecttest

import (
	"bytes"
	"fmt"
	"strings"
	"testing"

	"github.com/go-outbox/outbox/dialects"
)

// runHostile checks that rows the relay cannot publish as stored (written
// by hand, by an older version, by another program) are read, not failed
// on: each comes back with Row.Invalid naming it and its column, every
// other row as usual, in the claim and in DeadLetters.
func runHostile(t *testing.T, h Harness) {
	outboxCase(t, "RowsReadWithTheirProblem", func(t *testing.T) {
		e := newOutboxEnv(t, h)
		type hostile struct {
			id     int64
			column string
		}
		var bad []hostile
		// set rewrites one column of row id with a literal both
		// databases accept (the JSON columns validate JSON at insert,
		// so the headers are valid JSON of the wrong shape).
		set := func(id int64, column, literal string) {
			t.Helper()
			if _, err := e.db.ExecContext(e.ctx, fmt.Sprintf(`UPDATE %s SET %s = %s WHERE id = %d`,
				e.table.Qualified(e.d), column, literal, id)); err != nil {
				t.Fatalf("set %s of row %d to %s: %v", column, id, literal, err)
			}
		}
		var good []int64
		// The first row in id order is hostile: it must not fail the claim.
		for i, hv := range []string{`'[1]'`, `'{"a": 1}'`, `'"text"'`, `'null'`, `'{"a": {"b": "c"}}'`} {
			ids := e.keyed("t", fmt.Sprint("k", i%2), 2)
			set(ids[0], "headers", hv)
			bad = append(bad, hostile{ids[0], "headers"})
			good = append(good, ids[1])
		}
		for _, topic := range []string{`''`, `'bad topic!'`, `'..'`, `'t/x'`} {
			ids := e.keyed("t", "k0", 2)
			set(ids[0], "topic", topic)
			bad = append(bad, hostile{ids[0], "topic"})
			good = append(good, ids[1])
		}
		// A key over the limit, where the table can hold one (the MySQL
		// column cannot).
		long := e.rec("t", bytes.Repeat([]byte("k"), 1025))
		if err := e.d.Insert(e.ctx, e.db, e.table, []dialects.Record{long}); err == nil {
			bad = append(bad, hostile{e.maxID(), "msg_key"})
		}
		// Rows that are fine: empty payload, no key, headers of strings.
		empty := e.rec("t", nil)
		empty.Payload = []byte{}
		withHeaders := e.rec("t.x_y-z", []byte("k1"))
		withHeaders.Headers = map[string]string{"a": "b", "schema-version": "2"}
		good = append(good, e.insert(empty, withHeaders)...)

		p := e.open(dialects.ClaimOptions{})
		got, err := p.Claim(e.ctx, e.now, 1000)
		if err != nil {
			t.Fatalf("Claim over hostile rows: %v, want the rows with their problem", err)
		}
		byID := map[int64]dialects.Row{}
		for _, r := range got {
			byID[r.ID] = r
		}
		check := func(who string, rows map[int64]dialects.Row, want []hostile) {
			t.Helper()
			for _, b := range want {
				r, ok := rows[b.id]
				if !ok {
					t.Errorf("%s: hostile row %d (%s) missing", who, b.id, b.column)
					continue
				}
				prefix := fmt.Sprintf("outbox row %d: column %s: ", b.id, b.column)
				if r.Invalid == nil || !strings.HasPrefix(r.Invalid.Error(), prefix) {
					t.Errorf("%s: row %d Invalid = %v, want an error starting %q", who, b.id, r.Invalid, prefix)
				}
			}
		}
		check("Claim", byID, bad)
		for _, id := range good {
			r, ok := byID[id]
			if !ok {
				t.Errorf("Claim: good row %d missing", id)
				continue
			}
			if r.Invalid != nil {
				t.Errorf("Claim: good row %d Invalid = %v, want nil", id, r.Invalid)
			}
		}
		if r := byID[good[len(good)-1]]; r.Headers["a"] != "b" || r.Headers["schema-version"] != "2" {
			t.Errorf("Claim: row %d headers = %v, want a=b schema-version=2", r.ID, r.Headers)
		}
		if r := byID[good[len(good)-2]]; r.Payload == nil {
			t.Errorf("Claim: row %d with an empty payload read as NULL", r.ID)
		}
		// Dead-letter the hostile rows: DeadLetters reads them too.
		out := dialects.Outcome{Now: e.now, Published: good}
		for _, b := range bad {
			out.Retries = append(out.Retries, dialects.Retry{ID: b.id, Attempts: 1, Dead: true, Error: byID[b.id].Invalid.Error()})
		}
		if err := p.Finish(e.ctx, out); err != nil {
			t.Fatalf("Finish: %v", err)
		}
		dead, err := e.d.DeadLetters(e.ctx, e.db, e.table, dialects.DeadQuery{Limit: 1000})
		if err != nil {
			t.Fatalf("DeadLetters over hostile rows: %v", err)
		}
		deadBy := map[int64]dialects.Row{}
		for _, r := range dead {
			deadBy[r.ID] = r
		}
		if len(dead) != len(bad) {
			t.Errorf("DeadLetters = %v, want the %d hostile rows", idsOf(dead), len(bad))
		}
		check("DeadLetters", deadBy, bad)
	})
}
