package testenv

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects/dialecttest/provision"
)

// Role is a login of its own on the server of a test database — a
// PostgreSQL role, a MySQL user — that starts with no privilege on the
// test's schema or database beyond reaching it (USAGE on the schema on
// PostgreSQL; nothing on MySQL), so that a test can grant it exactly what
// it documents and watch the rest be refused. It needs an admin user that
// may create roles (CREATEROLE, or CREATE USER and GRANT OPTION).
type Role struct {
	// Name is the role's (user's) name.
	Name string

	dialect string // "postgres" or "mysql"
	base    string // the admin's server DSN
	schema  string // the test's PostgreSQL schema or MySQL database
	dsn     string

	mu  sync.Mutex
	dbs []*gorm.DB
}

// NewRole creates a role named after purpose ("relay", "capture") on the
// server of db, a *gorm.DB from OpenPostgres or OpenMySQL, able to log in
// and reach db's schema (database) and nothing more. The role, its
// privileges and what it owns are dropped when the test ends, after the
// connections opened with Open are closed.
func NewRole(t testing.TB, db *gorm.DB, purpose string) *Role {
	t.Helper()
	if len(purpose) > 12 {
		purpose = purpose[:12]
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	var pw [12]byte
	_, _ = rand.Read(pw[:])
	r := &Role{Name: strings.ToLower(purpose) + "_" + hex.EncodeToString(b[:]), dialect: db.Dialector.Name()}
	password := hex.EncodeToString(pw[:])
	ctx := context.Background()
	switch r.dialect {
	case "postgres":
		r.base = PostgresURL(t)
		var err error
		if r.schema, err = (provision.Postgres{Conn: db.Statement.ConnPool}).CurrentSchema(ctx); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		u, err := url.Parse(r.base)
		if err != nil {
			t.Fatalf("testenv: %s: %v", PostgresEnv, err)
		}
		u.User = url.UserPassword(r.Name, password)
		q := u.Query()
		q.Set("search_path", r.schema)
		q.Set("application_name", r.Name)
		u.RawQuery = q.Encode()
		r.dsn = u.String()
		r.asAdmin(t, func(ctx context.Context, db *sql.DB) error {
			pg := provision.Postgres{Conn: db}
			if err := pg.CreateRole(ctx, r.Name, password); err != nil {
				return err
			}
			return pg.Grant(ctx, provision.Grant{Privileges: "USAGE", Schema: r.schema, Role: r.Name})
		})
	case "mysql":
		r.base = MySQLDSN(t)
		var err error
		if r.schema, err = (provision.MySQL{Conn: db.Statement.ConnPool}).CurrentDatabase(ctx); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		mc, err := gomysql.ParseDSN(r.base)
		if err != nil {
			t.Fatalf("testenv: %s: %v", MySQLEnv, err)
		}
		mc.User, mc.Passwd, mc.DBName, mc.ParseTime = r.Name, password, r.schema, true
		r.dsn = mc.FormatDSN()
		r.asAdmin(t, func(ctx context.Context, db *sql.DB) error {
			return provision.MySQL{Conn: db}.CreateUser(ctx, r.Name, password)
		})
	default:
		t.Fatalf("testenv: NewRole: unknown dialect %q", r.dialect)
	}
	t.Cleanup(func() { r.drop(t) })
	return r
}

// DSN is the role's DSN: the test's server and schema (database), logged
// in as the role.
func (r *Role) DSN() string { return r.dsn }

// Schema is the test's PostgreSQL schema or MySQL database.
func (r *Role) Schema() string { return r.schema }

// Open returns a *gorm.DB logged in as the role, on the test's schema
// (database), opened as OpenPostgres and OpenMySQL do. It is closed before
// the role is dropped.
func (r *Role) Open(t testing.TB, cfg *gorm.Config) *gorm.DB {
	t.Helper()
	var dial gorm.Dialector
	if r.dialect == "postgres" {
		dial = postgres.Open(r.dsn)
	} else {
		dial = mysql.New(mysql.Config{DSN: r.dsn, DisableWithReturning: true})
	}
	db, err := gorm.Open(dial, gormConfig(cfg))
	if err != nil {
		t.Fatalf("testenv: open as %s: %v", r.Name, err)
	}
	r.mu.Lock()
	r.dbs = append(r.dbs, db)
	r.mu.Unlock()
	return db
}

// Grant grants privileges ("SELECT, UPDATE") on table, a table of the
// test's schema (database), to the role.
func (r *Role) Grant(t testing.TB, privileges, table string) {
	t.Helper()
	g := provision.Grant{Privileges: privileges, Schema: r.schema, Table: table, Role: r.Name}
	r.asAdmin(t, func(ctx context.Context, db *sql.DB) error { return r.provisioner(db).Grant(ctx, g) })
}

// Revoke revokes privileges on table from the role.
func (r *Role) Revoke(t testing.TB, privileges, table string) {
	t.Helper()
	g := provision.Grant{Privileges: privileges, Schema: r.schema, Table: table, Role: r.Name}
	r.asAdmin(t, func(ctx context.Context, db *sql.DB) error { return r.provisioner(db).Revoke(ctx, g) })
}

// GrantSchema grants privileges on the test's schema itself (PostgreSQL:
// "CREATE") or on every table of its database (MySQL: "CREATE, ALTER").
func (r *Role) GrantSchema(t testing.TB, privileges string) {
	t.Helper()
	g := provision.Grant{Privileges: privileges, Schema: r.schema, Role: r.Name}
	r.asAdmin(t, func(ctx context.Context, db *sql.DB) error { return r.provisioner(db).Grant(ctx, g) })
}

// Admin runs stmt as the admin user of the test's server, in the test's
// schema (database).
func (r *Role) Admin(t testing.TB, stmt string) {
	t.Helper()
	r.asAdmin(t, func(ctx context.Context, db *sql.DB) error {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return fmt.Errorf("%s: %w", stmt, err)
		}
		return nil
	})
}

// adminDB opens the admin's connection to the server, in the test's
// schema (database).
func (r *Role) adminDB() (*sql.DB, error) {
	if r.dialect == "mysql" {
		mc, err := gomysql.ParseDSN(r.base)
		if err != nil {
			return nil, err
		}
		mc.DBName = r.schema
		return sql.Open("mysql", mc.FormatDSN())
	}
	u, err := url.Parse(r.base)
	if err != nil {
		return nil, err
	}
	q := u.Query()
	q.Set("search_path", r.schema)
	u.RawQuery = q.Encode()
	return sql.Open("pgx", u.String())
}

// asAdmin runs f on the admin's connection to the server, in the test's
// schema (database), and fails the test with f's error.
func (r *Role) asAdmin(t testing.TB, f func(ctx context.Context, db *sql.DB) error) {
	t.Helper()
	db, err := r.adminDB()
	if err != nil {
		t.Fatalf("testenv: admin connection: %v", err)
	}
	defer db.Close()
	if err := f(context.Background(), db); err != nil {
		t.Fatalf("testenv: as admin: %v", err)
	}
}

// provisioner is what Role asks of provision.Postgres and provision.MySQL
// alike.
type provisioner interface {
	Grant(ctx context.Context, g provision.Grant) error
	Revoke(ctx context.Context, g provision.Grant) error
}

// provisioner returns the provisioning of the role's server on db.
func (r *Role) provisioner(db *sql.DB) provisioner {
	if r.dialect == "mysql" {
		return provision.MySQL{Conn: db}
	}
	return provision.Postgres{Conn: db}
}

// drop closes the role's connections and drops it with its privileges
// (and, on PostgreSQL, what it owns).
func (r *Role) drop(t testing.TB) {
	r.mu.Lock()
	for _, db := range r.dbs {
		if sqlDB, err := db.DB(); err == nil {
			_ = sqlDB.Close()
		}
	}
	r.dbs = nil
	r.mu.Unlock()
	db, err := r.adminDB()
	if err != nil {
		t.Errorf("testenv: drop role %s: %v", r.Name, err)
		return
	}
	defer db.Close()
	ctx := context.Background()
	if r.dialect == "postgres" {
		err = provision.Postgres{Conn: db}.DropRole(ctx, r.Name)
	} else {
		err = provision.MySQL{Conn: db}.DropUser(ctx, r.Name)
	}
	if err != nil {
		t.Errorf("testenv: %v", err)
	}
}

// String names the role for test messages.
func (r *Role) String() string { return fmt.Sprintf("%s role %s", r.dialect, r.Name) }
