package postgres

import (
	"strconv"
	"strings"

	"github.com/go-outbox/outbox/dialects"
)

// The names of the statement's own parts: the rows locked, the rows
// written.
const (
	lockedCTE  = `"gormoutbox_locked"`
	writtenCTE = `"gormoutbox_written"`
)

// WriteUpdateReturning implements dialects.UpdateReturner:
//
//	WITH gormoutbox_locked AS (SELECT keys FROM t WHERE cond ORDER BY keys
//	    LIMIT limit+1 FOR UPDATE),
//	gormoutbox_written AS (UPDATE t SET … WHERE cond
//	    AND (SELECT count(*) FROM gormoutbox_locked) <= limit
//	    RETURNING *)
//	SELECT * FROM gormoutbox_written ORDER BY keys
//
// The count is a one-time filter, taken before the UPDATE scans a row: the
// locking read has then emitted the rows in key order and locked each as
// it did (two such updates cannot deadlock on their rows), and a write
// matching more than limit rows writes none. The UPDATE is not joined to
// the rows locked: both see the statement's snapshot, so it matches the
// rows locked (with PostgreSQL's generic plan of a prepared statement, a
// join to the CTE was a nested loop rescanning it per row, 2–3.6 ms for
// 100 rows against 0.23 ms); a row that changes twice under concurrent
// commits in between may be written without the lock in order, and is
// still returned (RETURNING returns every row written).
func (d Dialect) WriteUpdateReturning(part dialects.ReturningPart, p dialects.ReturningUpdate) {
	w := p.W
	keys := make([]string, len(p.Keys))
	for i, k := range p.Keys {
		keys[i] = d.Quote(k)
	}
	list := strings.Join(keys, ", ")
	switch part {
	case dialects.PartLock:
		_, _ = w.WriteString("WITH " + lockedCTE + " AS (SELECT " + list + " FROM ")
		p.Table()
		if p.Where != nil {
			_, _ = w.WriteString(" WHERE ")
			p.Where()
		}
		_, _ = w.WriteString(" ORDER BY " + list + " LIMIT " + strconv.Itoa(p.Limit+1) + " FOR UPDATE), " + writtenCTE + " AS (")
	case dialects.PartRestrict:
		_, _ = w.WriteString("(SELECT count(*) FROM " + lockedCTE + ") <= " + strconv.Itoa(p.Limit))
	case dialects.PartReturn:
		if p.Plain {
			_, _ = w.WriteString("RETURNING *")
			return
		}
		_, _ = w.WriteString("RETURNING *) SELECT * FROM " + writtenCTE + " ORDER BY " + list)
	}
}
