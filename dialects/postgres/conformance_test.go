package postgres_test

import (
	"database/sql"
	"testing"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/dialecttest"
	"github.com/go-outbox/outbox/dialects/postgres"
	"github.com/go-outbox/outbox/internal/testenv"
)

// TestConformance runs the storage seam's conformance suite on a real
// server (see internal/testenv for how to point it at your own).
func TestConformance(t *testing.T) {
	dialecttest.Run(t, dialecttest.Harness{Dialect: postgres.New(), Open: open, IndexReads: postgres.IndexReads})
}

// TestConformanceValues runs the suite with Unnest off: Insert writes a
// multi-row VALUES list, as with drivers that do not bind arrays.
func TestConformanceValues(t *testing.T) {
	dialecttest.Run(t, dialecttest.Harness{Dialect: postgres.Dialect{}, Open: open})
}

func open(t testing.TB) *sql.DB {
	db, err := testenv.OpenPostgres(t, nil).DB()
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// LatestVersion is the version of the last step Migrate runs.
func TestLatestVersion(t *testing.T) {
	ms := postgres.New().OutboxMigrations(dialects.Table{Name: "outbox"})
	if v := ms[len(ms)-1].Version; v != postgres.LatestVersion {
		t.Fatalf("last migration is version %d, LatestVersion %d", v, postgres.LatestVersion)
	}
}
