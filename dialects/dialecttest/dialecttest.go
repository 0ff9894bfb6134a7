// Package dialecttest is the conformance suite of the storage seam: every
// dialect runs it, on a real server, from its own package's tests
// (dialects/postgres, dialects/mysql). It exercises the whole contract a
// dialect signs in package dialects — the outbox (migrate, insert, claim
// with the per-key guard, finish, replay, dead letters, cleanup, stats,
// acknowledgements) and the inbox (record, skip, park, replay, cleanup,
// savepoints) — through the dialect's methods only, so that a new database
// is supported once the suite passes on it.
package dialecttest

import (
	"database/sql"
	"testing"

	"github.com/go-outbox/outbox/dialects"
)

// Harness gives the suite the dialect under test and its databases.
type Harness struct {
	// Dialect is the dialect under test.
	Dialect dialects.Dialect
	// Open returns a fresh, empty database (or schema) of the dialect's
	// server for one test; it is dropped when the test ends.
	Open func(t testing.TB) *sql.DB
	// IndexReads, when set, returns a count that grows by the index
	// entries a pass's claims read (PostgreSQL: those of the pass's open
	// claim transaction, 0 without one; MySQL: the pass's session's
	// Handler_read counters). The case Claim/DelayedNotScanned uses it to
	// check that a claim does not read the rows that are not due.
	IndexReads func(t testing.TB, p dialects.Pass) int64
}

// Run runs the whole suite.
func Run(t *testing.T, h Harness) {
	t.Run("Outbox", func(t *testing.T) { runOutbox(t, h) })
	t.Run("Inbox", func(t *testing.T) { runInbox(t, h) })
}
