package provision_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/go-outbox/outbox/dialects/dialecttest/provision"
)

// recorder is a Conn that records the statements it is given and fails
// them with err.
type recorder struct {
	stmts []string
	err   error
}

func (r *recorder) ExecContext(_ context.Context, q string, _ ...any) (sql.Result, error) {
	r.stmts = append(r.stmts, q)
	return nil, r.err
}

func (r *recorder) QueryRowContext(context.Context, string, ...any) *sql.Row {
	panic("recorder: no queries")
}

// call is one provisioning call on a Conn.
type call struct {
	name string
	do   func(ctx context.Context, c provision.Conn) error
	want []string // the statements it runs
}

func calls(schema, table, role string) []call {
	g := provision.Grant{Privileges: "SELECT, UPDATE", Schema: schema, Table: table, Role: role}
	gs := provision.Grant{Privileges: "CREATE", Schema: schema, Role: role}
	pg := func(c provision.Conn) provision.Postgres { return provision.Postgres{Conn: c} }
	my := func(c provision.Conn) provision.MySQL { return provision.MySQL{Conn: c} }
	return []call{
		{"postgres create schema", func(ctx context.Context, c provision.Conn) error { return pg(c).CreateSchema(ctx, schema) },
			[]string{`CREATE SCHEMA "` + schema + `"`}},
		{"postgres drop schema", func(ctx context.Context, c provision.Conn) error { return pg(c).DropSchema(ctx, schema) },
			[]string{`DROP SCHEMA "` + schema + `" CASCADE`}},
		{"postgres recreate schema", func(ctx context.Context, c provision.Conn) error { return pg(c).RecreateSchema(ctx, schema) },
			[]string{`DROP SCHEMA IF EXISTS "` + schema + `" CASCADE; CREATE SCHEMA "` + schema + `"`}},
		{"postgres create database", func(ctx context.Context, c provision.Conn) error { return pg(c).CreateDatabase(ctx, schema) },
			[]string{`CREATE DATABASE "` + schema + `"`}},
		{"postgres drop database", func(ctx context.Context, c provision.Conn) error { return pg(c).DropDatabase(ctx, schema) },
			[]string{`DROP DATABASE IF EXISTS "` + schema + `" WITH (FORCE)`}},
		{"postgres create role", func(ctx context.Context, c provision.Conn) error { return pg(c).CreateRole(ctx, role, "0a1b2c") },
			[]string{`CREATE ROLE "` + role + `" LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '0a1b2c'`}},
		{"postgres grant on table", func(ctx context.Context, c provision.Conn) error { return pg(c).Grant(ctx, g) },
			[]string{`GRANT SELECT, UPDATE ON "` + schema + `"."` + table + `" TO "` + role + `"`}},
		{"postgres revoke on table", func(ctx context.Context, c provision.Conn) error { return pg(c).Revoke(ctx, g) },
			[]string{`REVOKE SELECT, UPDATE ON "` + schema + `"."` + table + `" FROM "` + role + `"`}},
		{"postgres grant on schema", func(ctx context.Context, c provision.Conn) error { return pg(c).Grant(ctx, gs) },
			[]string{`GRANT CREATE ON SCHEMA "` + schema + `" TO "` + role + `"`}},
		{"postgres drop role", func(ctx context.Context, c provision.Conn) error { return pg(c).DropRole(ctx, role) },
			[]string{`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`,
				`DROP OWNED BY "` + role + `"`, `DROP ROLE "` + role + `"`}},
		{"mysql create database", func(ctx context.Context, c provision.Conn) error { return my(c).CreateDatabase(ctx, schema) },
			[]string{"CREATE DATABASE `" + schema + "` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"}},
		{"mysql drop database", func(ctx context.Context, c provision.Conn) error { return my(c).DropDatabase(ctx, schema) },
			[]string{"DROP DATABASE IF EXISTS `" + schema + "`"}},
		{"mysql recreate database", func(ctx context.Context, c provision.Conn) error { return my(c).RecreateDatabase(ctx, schema) },
			[]string{"DROP DATABASE IF EXISTS `" + schema + "`", "CREATE DATABASE `" + schema + "`"}},
		{"mysql create user", func(ctx context.Context, c provision.Conn) error { return my(c).CreateUser(ctx, role, "0a1b2c") },
			[]string{"CREATE USER '" + role + "'@'%' IDENTIFIED BY '0a1b2c'"}},
		{"mysql grant on table", func(ctx context.Context, c provision.Conn) error { return my(c).Grant(ctx, g) },
			[]string{"GRANT SELECT, UPDATE ON `" + schema + "`.`" + table + "` TO '" + role + "'@'%'"}},
		{"mysql revoke on table", func(ctx context.Context, c provision.Conn) error { return my(c).Revoke(ctx, g) },
			[]string{"REVOKE SELECT, UPDATE ON `" + schema + "`.`" + table + "` FROM '" + role + "'@'%'"}},
		{"mysql grant on database", func(ctx context.Context, c provision.Conn) error { return my(c).Grant(ctx, gs) },
			[]string{"GRANT CREATE ON `" + schema + "`.* TO '" + role + "'@'%'"}},
		{"mysql drop user", func(ctx context.Context, c provision.Conn) error { return my(c).DropUser(ctx, role) },
			[]string{"DROP USER IF EXISTS '" + role + "'@'%'"}},
	}
}

// Each call runs its statements, names quoted.
func TestStatements(t *testing.T) {
	for _, c := range calls("t_1a2b", "priv_items", "relay_3c4d") {
		t.Run(c.name, func(t *testing.T) {
			var r recorder
			if err := c.do(context.Background(), &r); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(r.stmts, c.want) {
				t.Fatalf("statements:\n got %q\nwant %q", r.stmts, c.want)
			}
		})
	}
}

// A name that is not a plain identifier is refused before anything runs,
// with an error that names it.
func TestRefusesBadNames(t *testing.T) {
	for _, bad := range []string{"", "t-1", `t"1`, "t`1", "t'1", "t 1", "1t", "t;DROP", strings.Repeat("t", 64)} {
		for i, c := range calls(bad, "items", "role") {
			if strings.Contains(c.name, "role") || strings.Contains(c.name, "user") {
				c = calls("schema", "items", bad)[i]
			}
			var r recorder
			err := c.do(context.Background(), &r)
			if !errors.Is(err, provision.ErrInvalid) {
				t.Errorf("%s with name %q: %v, want ErrInvalid", c.name, bad, err)
				continue
			}
			if len(r.stmts) > 0 {
				t.Errorf("%s with name %q ran %q", c.name, bad, r.stmts)
			}
			if !strings.Contains(err.Error(), strconv.Quote(bad)) {
				t.Errorf("%s with name %q: error %q does not name it", c.name, bad, err)
			}
		}
	}
	var r recorder
	for _, g := range []provision.Grant{
		{Privileges: "SELECT; DROP", Schema: "s", Role: "r"},
		{Privileges: "SELECT", Schema: "s", Table: "a.b", Role: "r"},
	} {
		if err := (provision.Postgres{Conn: &r}).Grant(context.Background(), g); !errors.Is(err, provision.ErrInvalid) {
			t.Errorf("Grant %+v: %v, want ErrInvalid", g, err)
		}
		if err := (provision.MySQL{Conn: &r}).Revoke(context.Background(), g); !errors.Is(err, provision.ErrInvalid) {
			t.Errorf("Revoke %+v: %v, want ErrInvalid", g, err)
		}
	}
	for _, pw := range []string{"", "a'b", `a\b`, "a b"} {
		if err := (provision.Postgres{Conn: &r}).CreateRole(context.Background(), "r", pw); !errors.Is(err, provision.ErrInvalid) {
			t.Errorf("CreateRole with password %q: %v, want ErrInvalid", pw, err)
		}
		if err := (provision.MySQL{Conn: &r}).CreateUser(context.Background(), "r", pw); !errors.Is(err, provision.ErrInvalid) {
			t.Errorf("CreateUser with password %q: %v, want ErrInvalid", pw, err)
		}
	}
	if len(r.stmts) > 0 {
		t.Errorf("ran %q", r.stmts)
	}
}

// A statement the server refuses is an *Error naming the step and the
// object, wrapping the server's error.
func TestErrorNamesObject(t *testing.T) {
	refused := errors.New("permission denied")
	r := recorder{err: refused}
	err := provision.Postgres{Conn: &r}.DropRole(context.Background(), "relay_3c4d")
	var pe *provision.Error
	if !errors.As(err, &pe) || !errors.Is(err, refused) {
		t.Fatalf("DropRole: %v, want a *provision.Error wrapping the server's", err)
	}
	if !strings.Contains(err.Error(), "relay_3c4d") || len(r.stmts) != 1 {
		t.Fatalf("DropRole: %v after %q: want the role named, and no statement after the refused one", err, r.stmts)
	}
}
