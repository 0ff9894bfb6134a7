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
//	    AND (keys) IN (SELECT keys FROM gormoutbox_locked)
//	    AND (SELECT count(*) FROM gormoutbox_locked) <= limit
//	    RETURNING *)
//	SELECT * FROM gormoutbox_written ORDER BY keys
//
// The locking read emits the rows in key order and locks each as it does
// (two such updates cannot deadlock on their rows); the count is taken
// before any row is written, so a write matching more than limit rows
// writes none.
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
		_, _ = w.WriteString("(" + list + ") IN (SELECT " + list + " FROM " + lockedCTE + ") AND (SELECT count(*) FROM " +
			lockedCTE + ") <= " + strconv.Itoa(p.Limit))
	case dialects.PartReturn:
		if p.Plain {
			_, _ = w.WriteString("RETURNING *")
			return
		}
		_, _ = w.WriteString("RETURNING *) SELECT * FROM " + writtenCTE + " ORDER BY " + list)
	}
}
