package postgres

import (
	"context"
	"testing"

	"github.com/go-outbox/outbox/dialects"
)

// IndexReads returns the index entries read by p's open claim transaction
// so far, over every index of its table (0 without an open claim): the
// transaction's own statistics, pg_stat_get_xact_tuples_returned.
func IndexReads(t testing.TB, p dialects.Pass) int64 {
	t.Helper()
	ps := p.(*pass)
	if ps.tx == nil {
		return 0
	}
	var n int64
	if err := ps.tx.QueryRowContext(context.Background(), `SELECT COALESCE(sum(pg_stat_get_xact_tuples_returned(indexrelid)), 0)::bigint
FROM pg_index WHERE indrelid = $1::regclass`, ps.t.Qualified(ps.d)).Scan(&n); err != nil {
		t.Fatalf("index reads: %v", err)
	}
	return n
}
