package dialecttest

import (
	"sync"
	"testing"

	"github.com/go-outbox/outbox/dialects"
)

// runMigrate checks Migrate, MigrateSteps and SchemaVersion: idempotent,
// versioned, safe to run concurrently.
func runMigrate(t *testing.T, h Harness) {
	outboxCase(t, "Versioned", func(t *testing.T) {
		e := bareOutboxEnv(t, h)
		if v, err := e.d.SchemaVersion(e.ctx, e.db, e.table); err != nil || v != 0 {
			t.Fatalf("SchemaVersion before Migrate = %d, %v; want 0", v, err)
		}
		for i := 0; i < 3; i++ {
			if err := e.d.Migrate(e.ctx, e.db, e.table); err != nil {
				t.Fatalf("Migrate #%d: %v", i+1, err)
			}
		}
		latest := e.latest()
		if v, err := e.d.SchemaVersion(e.ctx, e.db, e.table); err != nil || v != latest {
			t.Fatalf("SchemaVersion after Migrate = %d, %v; want %d", v, err, latest)
		}
		if n := e.count(e.table.Sibling("_migrations"), ""); n != latest {
			t.Fatalf("%d rows in the migrations table, want %d (one per version)", n, latest)
		}
		// The table works: a row goes in and is claimed.
		e.keyed("t", "k", 1)
		if got := e.claimAll(e.now); len(got) != 1 {
			t.Fatalf("claimed %v after Migrate, want the row written", got)
		}
	})

	outboxCase(t, "StepsCutShort", func(t *testing.T) {
		// Steps whose work is done but whose versions were not recorded
		// (a migration cut short) run again without error.
		e := newOutboxEnv(t, h)
		latest := e.latest()
		e.exec(`DELETE FROM ` + e.table.Sibling("_migrations").Qualified(e.d) + ` WHERE version >= 2`)
		if v, err := e.d.SchemaVersion(e.ctx, e.db, e.table); err != nil || v != 1 {
			t.Fatalf("SchemaVersion with steps 2 and on unrecorded = %d, %v; want 1", v, err)
		}
		if err := e.d.Migrate(e.ctx, e.db, e.table); err != nil {
			t.Fatalf("Migrate after steps cut short: %v", err)
		}
		if v, err := e.d.SchemaVersion(e.ctx, e.db, e.table); err != nil || v != latest {
			t.Fatalf("SchemaVersion after re-running steps 2 and on = %d, %v; want %d", v, err, latest)
		}
		e.keyed("t", "k", 1)
		if got := e.claimAll(e.now); len(got) != 1 {
			t.Fatalf("claimed %v after the re-run, want the row written", got)
		}
	})

	outboxCase(t, "Concurrent", func(t *testing.T) {
		e := bareOutboxEnv(t, h)
		const n = 4
		var wg sync.WaitGroup
		errs := make([]error, n)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = e.d.Migrate(e.ctx, e.db, e.table)
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("concurrent Migrate #%d: %v", i+1, err)
			}
		}
		latest := e.latest()
		if v, err := e.d.SchemaVersion(e.ctx, e.db, e.table); err != nil || v != latest {
			t.Fatalf("SchemaVersion after concurrent Migrates = %d, %v; want %d", v, err, latest)
		}
		if n := e.count(e.table.Sibling("_migrations"), ""); n != latest {
			t.Fatalf("%d rows in the migrations table, want %d: a step ran twice", n, latest)
		}
	})

	outboxCase(t, "Steps", func(t *testing.T) {
		// MigrateSteps applies only the steps above the recorded version:
		// step 1 creates a table, which would fail if it ran again.
		e := bareOutboxEnv(t, h)
		tbl := dialects.Table{Name: "extra"}
		create := func(name string) string {
			return `CREATE TABLE ` + dialects.Table{Name: name}.Qualified(e.d) + ` (id INTEGER)`
		}
		steps := []dialects.Migration{{Version: 1, Statements: []string{create("extra_a")}}}
		migrate := func(steps []dialects.Migration) error {
			return e.d.MigrateSteps(e.ctx, e.db, tbl, steps)
		}
		version := func() int {
			t.Helper()
			v, err := e.d.SchemaVersion(e.ctx, e.db, tbl)
			if err != nil {
				t.Fatalf("SchemaVersion(%s): %v", tbl, err)
			}
			return v
		}
		if v := version(); v != 0 {
			t.Fatalf("SchemaVersion of a table never migrated = %d, want 0", v)
		}
		if err := migrate(steps); err != nil {
			t.Fatalf("MigrateSteps(1): %v", err)
		}
		if v := version(); v != 1 {
			t.Fatalf("SchemaVersion = %d, want 1", v)
		}
		if err := migrate(steps); err != nil {
			t.Fatalf("MigrateSteps(1) again: %v (step 1 ran twice?)", err)
		}
		steps = append(steps, dialects.Migration{Version: 2, Statements: []string{create("extra_b")}})
		if err := migrate(steps); err != nil {
			t.Fatalf("MigrateSteps(1, 2): %v (step 1 ran again?)", err)
		}
		if v := version(); v != 2 {
			t.Fatalf("SchemaVersion = %d, want 2", v)
		}
		// A failing step leaves the version where it was; once fixed it
		// runs.
		bad := append(steps, dialects.Migration{Version: 3, Statements: []string{
			`SELECT id FROM ` + dialects.Table{Name: "no_such_table"}.Qualified(e.d)}})
		if err := migrate(bad); err == nil {
			t.Fatal("MigrateSteps with a failing step 3: no error")
		}
		if v := version(); v != 2 {
			t.Fatalf("SchemaVersion after a failed step 3 = %d, want 2", v)
		}
		steps = append(steps, dialects.Migration{Version: 3, Statements: []string{create("extra_c")}})
		if err := migrate(steps); err != nil {
			t.Fatalf("MigrateSteps(1, 2, 3): %v", err)
		}
		if v := version(); v != 3 {
			t.Fatalf("SchemaVersion = %d, want 3", v)
		}
		for _, name := range []string{"extra_a", "extra_b", "extra_c"} {
			e.count(dialects.Table{Name: name}, "") // fails the test if the table is missing
		}
		// The outbox table's version is its own.
		if v, err := e.d.SchemaVersion(e.ctx, e.db, e.table); err != nil || v != 0 {
			t.Fatalf("SchemaVersion of the outbox table = %d, %v; want 0", v, err)
		}
	})
}

// latest is the version Migrate brings the outbox table to: the last of
// the dialect's steps (OutboxMigrations).
func (e *outboxEnv) latest() int {
	e.t.Helper()
	ms := e.d.OutboxMigrations(e.table)
	if len(ms) == 0 {
		e.t.Fatalf("OutboxMigrations of %s returned no step", e.table)
	}
	return ms[len(ms)-1].Version
}

// count counts the rows of tbl matching where (all when empty).
func (e *outboxEnv) count(tbl dialects.Table, where string) int {
	e.t.Helper()
	q := `SELECT COUNT(*) FROM ` + tbl.Qualified(e.d)
	if where != "" {
		q += ` WHERE ` + where
	}
	var n int
	if err := e.db.QueryRowContext(e.ctx, q).Scan(&n); err != nil {
		e.t.Fatalf("count %s: %v", tbl, err)
	}
	return n
}

// exec runs a statement of the suite's own (SQL both dialects accept).
func (e *outboxEnv) exec(stmt string, args ...any) {
	e.t.Helper()
	if _, err := e.db.ExecContext(e.ctx, stmt, args...); err != nil {
		e.t.Fatalf("%s: %v", stmt, err)
	}
}
