package testenv

import (
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
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

var privilegesRE = regexp.MustCompile(`^[A-Za-z ,]+$`)

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
	switch r.dialect {
	case "postgres":
		r.base = PostgresURL(t)
		if err := db.Raw(`SELECT current_schema()`).Scan(&r.schema).Error; err != nil || r.schema == "" {
			t.Fatalf("testenv: current schema: %q, %v", r.schema, err)
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
		r.admin(t, `CREATE ROLE `+r.Name+` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '`+password+`'`)
		r.admin(t, `GRANT USAGE ON SCHEMA `+r.schema+` TO `+r.Name)
	case "mysql":
		r.base = MySQLDSN(t)
		if err := db.Raw(`SELECT DATABASE()`).Scan(&r.schema).Error; err != nil || r.schema == "" {
			t.Fatalf("testenv: current database: %q, %v", r.schema, err)
		}
		mc, err := gomysql.ParseDSN(r.base)
		if err != nil {
			t.Fatalf("testenv: %s: %v", MySQLEnv, err)
		}
		mc.User, mc.Passwd, mc.DBName, mc.ParseTime = r.Name, password, r.schema, true
		r.dsn = mc.FormatDSN()
		r.admin(t, `CREATE USER '`+r.Name+`'@'%' IDENTIFIED BY '`+password+`'`)
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
	r.admin(t, `GRANT `+r.privileges(t, privileges)+` ON `+r.table(table)+` TO `+r.grantee())
}

// Revoke revokes privileges on table from the role.
func (r *Role) Revoke(t testing.TB, privileges, table string) {
	t.Helper()
	r.admin(t, `REVOKE `+r.privileges(t, privileges)+` ON `+r.table(table)+` FROM `+r.grantee())
}

// GrantSchema grants privileges on the test's schema itself (PostgreSQL:
// "CREATE") or on every table of its database (MySQL: "CREATE, ALTER").
func (r *Role) GrantSchema(t testing.TB, privileges string) {
	t.Helper()
	on := `SCHEMA ` + r.schema
	if r.dialect == "mysql" {
		on = "`" + r.schema + "`.*"
	}
	r.admin(t, `GRANT `+r.privileges(t, privileges)+` ON `+on+` TO `+r.grantee())
}

// Admin runs stmt as the admin user of the test's server, in the test's
// schema (database).
func (r *Role) Admin(t testing.TB, stmt string) {
	t.Helper()
	r.admin(t, stmt)
}

func (r *Role) privileges(t testing.TB, p string) string {
	t.Helper()
	if !privilegesRE.MatchString(p) {
		t.Fatalf("testenv: privileges %q: want names such as \"SELECT, UPDATE\"", p)
	}
	return p
}

func (r *Role) table(name string) string {
	if r.dialect == "mysql" {
		return "`" + r.schema + "`.`" + name + "`"
	}
	return r.schema + `."` + name + `"`
}

func (r *Role) grantee() string {
	if r.dialect == "mysql" {
		return "'" + r.Name + "'@'%'"
	}
	return r.Name
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

func (r *Role) admin(t testing.TB, stmt string) {
	t.Helper()
	db, err := r.adminDB()
	if err != nil {
		t.Fatalf("testenv: admin connection: %v", err)
	}
	defer db.Close()
	if _, err := db.Exec(stmt); err != nil {
		t.Fatalf("testenv: as admin: %s: %v", stmt, err)
	}
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
	var stmts []string
	if r.dialect == "postgres" {
		stmts = []string{
			`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '` + r.Name + `'`,
			`DROP OWNED BY ` + r.Name,
			`DROP ROLE ` + r.Name,
		}
	} else {
		stmts = []string{`DROP USER IF EXISTS '` + r.Name + `'@'%'`}
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Errorf("testenv: drop role %s: %s: %v", r.Name, s, err)
			return
		}
	}
}

// String names the role for test messages.
func (r *Role) String() string { return fmt.Sprintf("%s role %s", r.dialect, r.Name) }
