package mysql_test

import (
	"context"
	"database/sql"
	"testing"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/dialecttest"
	"github.com/go-outbox/outbox/dialects/mysql"
	"github.com/go-outbox/outbox/internal/testenv"
)

// TestConformance runs the storage seam's conformance suite on a real
// server (see internal/testenv for how to point it at your own).
func TestConformance(t *testing.T) {
	dialecttest.Run(t, dialecttest.Harness{
		Dialect: mysql.New(),
		Open: func(t testing.TB) *sql.DB {
			db, err := testenv.OpenMySQL(t, nil).DB()
			if err != nil {
				t.Fatal(err)
			}
			return db
		},
		IndexReads: mysql.IndexReads,
	})
}

// LatestVersion is the version of the last step Migrate runs.
func TestLatestVersion(t *testing.T) {
	ms := mysql.New().OutboxMigrations(dialects.Table{Name: "outbox"})
	if v := ms[len(ms)-1].Version; v != mysql.LatestVersion {
		t.Fatalf("last migration is version %d, LatestVersion %d", v, mysql.LatestVersion)
	}
}

// Step 2 replaces the pending indexes with the claim and key indexes, and
// step 5 the claim index with the due index, also when they run again after
// being cut short (their versions unrecorded).
func TestMigrateStepsCutShortIndexes(t *testing.T) {
	ctx := context.Background()
	gdb := testenv.OpenMySQL(t, nil)
	db, err := gdb.DB()
	if err != nil {
		t.Fatal(err)
	}
	d, tbl := mysql.New(), dialects.Table{Name: "events_outbox"}
	if err := d.Migrate(ctx, db, tbl); err != nil {
		t.Fatal(err)
	}
	if _, err := db.ExecContext(ctx, "DELETE FROM events_outbox_migrations WHERE version >= 2"); err != nil {
		t.Fatal(err)
	}
	if err := d.Migrate(ctx, db, tbl); err != nil {
		t.Fatalf("Migrate after steps cut short: %v", err)
	}
	m := gdb.Migrator()
	for idx, want := range map[string]bool{"events_outbox_due_idx": true, "events_outbox_claim_idx": false, "events_outbox_key_idx": true,
		"events_outbox_pending_idx": false, "events_outbox_pending_key_idx": false} {
		if got := m.HasIndex("events_outbox", idx); got != want {
			t.Errorf("index %s exists: %v, want %v", idx, got, want)
		}
	}
}
