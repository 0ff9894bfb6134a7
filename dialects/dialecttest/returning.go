package dialecttest

import (
	"context"
	"strings"
	"testing"

	"github.com/go-outbox/outbox/dialects"
)

// runUpdateReturning checks dialects.UpdateReturner, for a dialect that
// implements it: the statement written around an UPDATE returns the rows
// written, every column, in key order, and writes none when more rows
// match than its limit.
func runUpdateReturning(t *testing.T, h Harness) {
	u, ok := h.Dialect.(dialects.UpdateReturner)
	if !ok {
		t.Skipf("%s does not implement dialects.UpdateReturner", h.Dialect.Name())
	}
	ctx := context.Background()
	db := h.Open(t)
	for _, s := range []string{
		`CREATE TABLE ret_rows (id INT PRIMARY KEY, v INT NOT NULL)`,
		`INSERT INTO ret_rows (id, v) VALUES (5, 50), (4, 40), (3, 30), (2, 20), (1, 10)`,
	} {
		if _, err := db.ExecContext(ctx, s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	update := func(limit int) string {
		var b strings.Builder
		p := dialects.ReturningUpdate{
			W:     &b,
			Table: func() { b.WriteString("ret_rows") },
			Where: func() { b.WriteString("v >= 20") },
			Keys:  []string{"id"},
			Limit: limit,
		}
		u.WriteUpdateReturning(dialects.PartLock, p)
		b.WriteString(" UPDATE ret_rows SET v = v + 1 WHERE v >= 20 AND ")
		u.WriteUpdateReturning(dialects.PartRestrict, p)
		b.WriteString(" ")
		u.WriteUpdateReturning(dialects.PartReturn, p)
		return b.String()
	}
	read := func(q string) [][2]int {
		t.Helper()
		rows, err := db.QueryContext(ctx, q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		defer rows.Close()
		var out [][2]int
		for rows.Next() {
			var r [2]int
			if err := rows.Scan(&r[0], &r[1]); err != nil {
				t.Fatal(err)
			}
			out = append(out, r)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return out
	}
	if got := read(update(3)); len(got) != 0 {
		t.Fatalf("limit 3, 4 rows matching: returned %v, want none", got)
	}
	if got := read(`SELECT id, v FROM ret_rows WHERE v >= 20 ORDER BY id`); len(got) != 4 || got[0] != [2]int{2, 20} || got[3] != [2]int{5, 50} {
		t.Fatalf("limit 3, 4 rows matching: rows now %v, want them unchanged", got)
	}
	got := read(update(4))
	want := [][2]int{{2, 21}, {3, 31}, {4, 41}, {5, 51}}
	if len(got) != len(want) {
		t.Fatalf("returned %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("returned %v, want %v (the rows as written, in key order)", got, want)
		}
	}
}
