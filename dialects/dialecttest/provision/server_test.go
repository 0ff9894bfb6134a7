package provision_test

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/go-outbox/outbox/dialects/dialecttest/provision"
	"github.com/go-outbox/outbox/internal/testenv"
)

// On a real PostgreSQL: a schema recreated empty, the current schema, a
// role created, granted, revoked and dropped.
func TestPostgresServer(t *testing.T) {
	ctx := context.Background()
	gdb := testenv.OpenPostgres(t, nil)
	db, err := gdb.DB()
	if err != nil {
		t.Fatal(err)
	}
	pg := provision.Postgres{Conn: db}
	schema, err := pg.CurrentSchema(ctx)
	if err != nil || !strings.HasPrefix(schema, "t_") {
		t.Fatalf("CurrentSchema: %q, %v; want the test's schema", schema, err)
	}

	other := schema + "_x"
	t.Cleanup(func() { _ = pg.DropSchema(context.Background(), other) })
	must(t, pg.RecreateSchema(ctx, other))
	must(t, exec(ctx, db, `CREATE TABLE `+other+`.gone (id int)`))
	must(t, pg.RecreateSchema(ctx, other))
	if n := count(t, db, `SELECT count(*) FROM pg_tables WHERE schemaname = $1`, other); n != 0 {
		t.Fatalf("RecreateSchema left %d tables", n)
	}

	must(t, exec(ctx, db, `CREATE TABLE items (id int)`))
	role := "prov_" + strings.TrimPrefix(schema, "t_")
	must(t, pg.CreateRole(ctx, role, "0a1b2c"))
	t.Cleanup(func() { _ = pg.DropRole(context.Background(), role) })
	g := provision.Grant{Privileges: "SELECT", Schema: schema, Table: "items", Role: role}
	has := func() int {
		return count(t, db, `SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE n.nspname = $1 AND c.relname = 'items' AND has_table_privilege($2, c.oid, 'SELECT')`, schema, role)
	}
	if has() != 0 {
		t.Fatal("a new role may read the table")
	}
	must(t, pg.Grant(ctx, g))
	if has() != 1 {
		t.Fatal("Grant: the role may not read the table")
	}
	must(t, pg.Revoke(ctx, g))
	if has() != 0 {
		t.Fatal("Revoke: the role may still read the table")
	}
	must(t, pg.Grant(ctx, provision.Grant{Privileges: "CREATE", Schema: schema, Role: role}))
	must(t, pg.DropRole(ctx, role))
	if n := count(t, db, `SELECT count(*) FROM pg_roles WHERE rolname = $1`, role); n != 0 {
		t.Fatal("DropRole: the role is still there")
	}
}

// On a real MariaDB: the current database, a user created, granted,
// revoked and dropped.
func TestMySQLServer(t *testing.T) {
	ctx := context.Background()
	gdb := testenv.OpenMySQL(t, nil)
	db, err := gdb.DB()
	if err != nil {
		t.Fatal(err)
	}
	my := provision.MySQL{Conn: db}
	schema, err := my.CurrentDatabase(ctx)
	if err != nil || !strings.HasPrefix(schema, "t_") {
		t.Fatalf("CurrentDatabase: %q, %v; want the test's database", schema, err)
	}
	must(t, exec(ctx, db, `CREATE TABLE items (id int)`))
	user := "prov_" + strings.TrimPrefix(schema, "t_")
	must(t, my.CreateUser(ctx, user, "0a1b2c"))
	t.Cleanup(func() { _ = my.DropUser(context.Background(), user) })
	g := provision.Grant{Privileges: "SELECT", Schema: schema, Table: "items", Role: user}
	has := func() int {
		return count(t, db, `SELECT count(*) FROM information_schema.table_privileges
			WHERE grantee = ? AND table_schema = ? AND table_name = 'items' AND privilege_type = 'SELECT'`,
			"'"+user+"'@'%'", schema)
	}
	must(t, my.Grant(ctx, g))
	if has() != 1 {
		t.Fatal("Grant: the user may not read the table")
	}
	must(t, my.Revoke(ctx, g))
	if has() != 0 {
		t.Fatal("Revoke: the user may still read the table")
	}
	must(t, my.Grant(ctx, provision.Grant{Privileges: "CREATE, ALTER", Schema: schema, Role: user}))
	must(t, my.DropUser(ctx, user))
	if n := count(t, db, `SELECT count(*) FROM mysql.user WHERE user = ?`, user); n != 0 {
		t.Fatal("DropUser: the user is still there")
	}
	other := schema + "_x"
	t.Cleanup(func() { _ = my.DropDatabase(context.Background(), other) })
	must(t, my.RecreateDatabase(ctx, other))
	must(t, exec(ctx, db, "CREATE TABLE `"+other+"`.gone (id int)"))
	must(t, my.RecreateDatabase(ctx, other))
	if n := count(t, db, `SELECT count(*) FROM information_schema.tables WHERE table_schema = ?`, other); n != 0 {
		t.Fatalf("RecreateDatabase left %d tables", n)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func exec(ctx context.Context, db *sql.DB, q string) error {
	_, err := db.ExecContext(ctx, q)
	return err
}

func count(t *testing.T, db *sql.DB, q string, args ...any) int {
	t.Helper()
	var n int
	if err := db.QueryRow(q, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	return n
}
