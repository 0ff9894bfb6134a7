package testenv

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"os"
	"testing"

	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects/dialecttest/provision"
)

// PgBouncerEnv names a PgBouncer in transaction pooling mode in front of
// the server of OUTBOX_TEST_POSTGRES_URL, e.g.
// postgres://u:p@127.0.0.1:6432/db?sslmode=disable. It must forward any
// database name to the database of that name on that server (a wildcard
// "* = host=… port=…" entry in its [databases] section), since every test
// gets a database of its own. When both variables are unset, testenv starts
// the project's PgBouncer (scripts/servers.sh up pgbouncer).
const PgBouncerEnv = "OUTBOX_TEST_PGBOUNCER_URL"

// PgBouncerURLs are the two ways to the database OpenPgBouncer created.
type PgBouncerURLs struct {
	// Pooled goes through PgBouncer, as the *gorm.DB does
	// (default_query_exec_mode=exec unless the PgBouncer URL sets one).
	Pooled string
	// Direct is the same database on the PostgreSQL server itself: what
	// LISTEN needs.
	Direct string
}

// OpenPgBouncer returns a *gorm.DB that reaches a fresh database through
// PgBouncer in transaction pooling mode, and the URLs of that database
// through PgBouncer and on the server itself (for LISTEN). The database is
// dropped when the test ends.
//
// Why a database and not a schema, as OpenPostgres makes: a transaction
// pooler keeps no session state, so PgBouncer refuses the search_path
// startup parameter ("unsupported startup parameter: search_path"; its
// ignore_startup_parameters would only drop it silently, and the
// track_extra_parameters of later versions only tracks parameters the
// server reports to clients, which search_path is not on PostgreSQL 15),
// and a SET search_path would hold only until the end of the transaction.
// application_name is one of the parameters PgBouncer tracks and sets on
// each server connection it hands out, so sessions can still be told apart
// in pg_stat_activity.
//
// pgx prepares and caches every statement on the server connection by
// default (default_query_exec_mode=cache_statement). Behind PgBouncer
// before 1.21 (or with max_prepared_statements = 0) a statement prepared in
// one transaction is looked for on whichever server connection the next
// gets ("prepared statement … does not exist"), or another client's
// statement of the same name is found there ("already exists"). The
// *gorm.DB therefore uses default_query_exec_mode=exec: the extended
// protocol with the unnamed statement, one round trip, nothing that
// outlives a transaction.
//
// It skips the test when OUTBOX_TEST_POSTGRES_URL names a server of your
// own and OUTBOX_TEST_PGBOUNCER_URL is unset (the project's PgBouncer
// stands in front of the project's server, not yours).
func OpenPgBouncer(t testing.TB, cfg *gorm.Config) (*gorm.DB, PgBouncerURLs) {
	t.Helper()
	if os.Getenv(PgBouncerEnv) == "" && os.Getenv(PostgresEnv) != "" {
		t.Skipf("%s is set and %s is not: no PgBouncer in front of that server", PostgresEnv, PgBouncerEnv)
	}
	if os.Getenv(PgBouncerEnv) != "" && os.Getenv(PostgresEnv) == "" {
		t.Fatalf("testenv: %s is set: set %s to the PostgreSQL server behind it too", PgBouncerEnv, PostgresEnv)
	}
	pooledBase, err := lookupServer(PgBouncerEnv, "pgbouncer")
	if err != nil {
		t.Fatal(err)
	}
	directBase := PostgresURL(t)

	admin, err := sql.Open("pgx", directBase)
	if err != nil {
		t.Fatalf("testenv: open %s: %v", PostgresEnv, err)
	}
	defer admin.Close()
	name := randomName("t_")
	if err := (provision.Postgres{Conn: admin}).CreateDatabase(context.Background(), name); err != nil {
		t.Fatalf("testenv: on the PostgreSQL of %s: %v", PostgresEnv, err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", directBase)
		if err != nil {
			return
		}
		defer admin.Close()
		// Forced: PgBouncer may still hold server connections to it.
		if err := (provision.Postgres{Conn: admin}).DropDatabase(context.Background(), name); err != nil {
			t.Logf("testenv: %v", err)
		}
	})

	var urls PgBouncerURLs
	if urls.Direct, err = withDatabase(directBase, name, nil); err != nil {
		t.Fatalf("testenv: %s: %v", PostgresEnv, err)
	}
	if urls.Pooled, err = withDatabase(pooledBase, name, map[string]string{"default_query_exec_mode": "exec"}); err != nil {
		t.Fatalf("testenv: %s: %v", PgBouncerEnv, err)
	}
	db, err := gorm.Open(postgres.Open(urls.Pooled), gormConfig(cfg))
	if err != nil {
		t.Fatalf("testenv: gorm.Open through PgBouncer (%s): %v", PgBouncerEnv, err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
	})
	return db, urls
}

// PgBouncerSessionURL is the PgBouncer database "outbox_session": the
// database of OUTBOX_TEST_POSTGRES_URL in pool_mode = session, where LISTEN
// works. The project's PgBouncer has it; the test is skipped when the
// PgBouncer of OUTBOX_TEST_PGBOUNCER_URL does not.
func PgBouncerSessionURL(t testing.TB) string {
	t.Helper()
	if os.Getenv(PgBouncerEnv) == "" && os.Getenv(PostgresEnv) != "" {
		t.Skipf("%s is set and %s is not: no PgBouncer in front of that server", PostgresEnv, PgBouncerEnv)
	}
	base, err := lookupServer(PgBouncerEnv, "pgbouncer")
	if err != nil {
		t.Fatal(err)
	}
	u, err := withDatabase(base, "outbox_session", nil)
	if err != nil {
		t.Fatalf("testenv: %s: %v", PgBouncerEnv, err)
	}
	db, err := sql.Open("pgx", u)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Ping(); err != nil {
		t.Skipf("the PgBouncer of %s has no database outbox_session (pool_mode = session): %v", PgBouncerEnv, err)
	}
	return u
}

// withDatabase returns the URL base with database name, application_name
// name (this test's sessions in pg_stat_activity) and the parameters of
// set that base does not set already.
func withDatabase(base, name string, set map[string]string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", fmt.Errorf("not a URL: %v", err)
	}
	u.Path = "/" + name
	q := u.Query()
	q.Set("application_name", name)
	for k, v := range set {
		if q.Get(k) == "" {
			q.Set(k, v)
		}
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
