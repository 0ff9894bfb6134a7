package mysql

import (
	"context"
	"testing"

	"github.com/go-outbox/outbox/dialects"
)

// IndexReads returns the index reads of p's session so far: the sum of its
// Handler_read_first, _key, _last, _next and _prev counters.
func IndexReads(t testing.TB, p dialects.Pass) int64 {
	t.Helper()
	rows, err := p.(*pass).conn.QueryContext(context.Background(), `SHOW SESSION STATUS WHERE Variable_name IN
('Handler_read_first', 'Handler_read_key', 'Handler_read_last', 'Handler_read_next', 'Handler_read_prev')`)
	if err != nil {
		t.Fatalf("index reads: %v", err)
	}
	defer rows.Close()
	var sum int64
	for rows.Next() {
		var (
			name string
			v    int64
		)
		if err := rows.Scan(&name, &v); err != nil {
			t.Fatalf("index reads: %v", err)
		}
		sum += v
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("index reads: %v", err)
	}
	return sum
}
