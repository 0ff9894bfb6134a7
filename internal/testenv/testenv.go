// Package testenv gives tests real PostgreSQL and MySQL databases.
//
// The servers come from the environment, so that the suite runs against
// your own servers:
//
//	OUTBOX_TEST_POSTGRES_URL  e.g. postgres://u:p@127.0.0.1:5432/db?sslmode=disable
//	OUTBOX_TEST_MYSQL_DSN     e.g. u:p@tcp(127.0.0.1:3306)/db?parseTime=true
//
// When a variable is unset, testenv starts the project's own throwaway
// server with scripts/servers.sh (idempotent, state outside the checkout)
// and reads its address from there.
//
// Every Open gives the test a database of its own: a fresh schema on
// PostgreSQL, a fresh database on MySQL, dropped when the test ends. The
// user behind the DSN needs the right to create them.
package testenv

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	gomysql "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/go-outbox/outbox/dialects/dialecttest/provision"
)

// Environment variables read by testenv.
const (
	PostgresEnv = "OUTBOX_TEST_POSTGRES_URL"
	MySQLEnv    = "OUTBOX_TEST_MYSQL_DSN"
)

// Dialect names a database the tests run on.
type Dialect struct {
	Name string
	// Open returns a *gorm.DB on a fresh, empty database of this kind.
	Open func(t testing.TB, cfg *gorm.Config) *gorm.DB
}

// Dialects returns PostgreSQL and MySQL, for table-driven tests.
func Dialects() []Dialect {
	return []Dialect{{"postgres", OpenPostgres}, {"mysql", OpenMySQL}}
}

// CaptureDialects is Dialects plus MySQL opened as gorm.io/driver/mysql
// opens it by default ("mysql-returning"): on MariaDB ≥ 10.5 GORM then
// writes with RETURNING, which changes what a create reports.
func CaptureDialects() []Dialect {
	return []Dialect{{"postgres", OpenPostgres}, {"mysql", OpenMySQL}, {"mysql-returning", OpenMySQLReturning}}
}

var (
	startMu sync.Mutex
	started = map[string]map[string]string{}
)

// RepoRoot returns the root of the checkout: the directory above the
// working directory that holds scripts/servers.sh (the tests and examples
// are modules of their own, with go.mod files of their own, below it).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "scripts", "servers.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("scripts/servers.sh not found above the working directory")
		}
		dir = parent
	}
}

// serverEnv returns the value of key, starting the project's server for
// it when the variable is unset.
func serverEnv(t testing.TB, key, server string) string {
	t.Helper()
	v, err := lookupServer(key, server)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func lookupServer(key, server string) (string, error) {
	if v := os.Getenv(key); v != "" {
		return v, nil
	}
	startMu.Lock()
	defer startMu.Unlock()
	if env, ok := started[server]; ok {
		return env[key], nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", fmt.Errorf("testenv: %v", err)
	}
	script := filepath.Join(root, "scripts", "servers.sh")
	var out bytes.Buffer
	cmd := exec.Command("bash", script, "up", server)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("testenv: %s is unset and starting the project's %s server failed (%v):\n%s", key, server, err, out.String())
	}
	envOut, err := exec.Command("bash", script, "env").Output()
	if err != nil {
		return "", fmt.Errorf("testenv: %s env: %v", script, err)
	}
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(envOut))
	for sc.Scan() {
		line := strings.TrimPrefix(strings.TrimSpace(sc.Text()), "export ")
		if k, v, ok := strings.Cut(line, "="); ok {
			env[k] = strings.Trim(v, `"'`)
		}
	}
	started[server] = env
	if env[key] == "" {
		return "", fmt.Errorf("testenv: %s env printed no %s", script, key)
	}
	return env[key], nil
}

func randomName(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

func gormConfig(cfg *gorm.Config) *gorm.Config {
	if cfg == nil {
		cfg = &gorm.Config{}
	}
	if cfg.Logger == nil {
		level := logger.Silent
		if os.Getenv("OUTBOX_TEST_SQL_LOG") != "" {
			level = logger.Info
		}
		cfg.Logger = logger.Default.LogMode(level)
	}
	return cfg
}

// PostgresURL returns the base server URL (no per-test schema).
func PostgresURL(t testing.TB) string {
	return serverEnv(t, PostgresEnv, "postgres")
}

// MySQLDSN returns the base server DSN (no per-test database).
func MySQLDSN(t testing.TB) string {
	return serverEnv(t, MySQLEnv, "mysql")
}

// OpenPostgres returns a *gorm.DB whose search_path is a fresh schema,
// dropped with everything in it when the test ends.
func OpenPostgres(t testing.TB, cfg *gorm.Config) *gorm.DB {
	t.Helper()
	db, cleanup, err := NewPostgres(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cleanup)
	return db
}

// NewPostgres is OpenPostgres for code without a testing.TB (Example
// functions): the caller runs cleanup when done.
func NewPostgres(cfg *gorm.Config) (*gorm.DB, func(), error) {
	base, err := lookupServer(PostgresEnv, "postgres")
	if err != nil {
		return nil, nil, err
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		return nil, nil, fmt.Errorf("testenv: open %s: %v", PostgresEnv, err)
	}
	defer admin.Close()
	schemaName := randomName("t_")
	if err := (provision.Postgres{Conn: admin}).CreateSchema(context.Background(), schemaName); err != nil {
		return nil, nil, fmt.Errorf("testenv: on the PostgreSQL of %s: %w", PostgresEnv, err)
	}
	u, err := url.Parse(base)
	if err != nil {
		return nil, nil, fmt.Errorf("testenv: %s is not a URL: %v", PostgresEnv, err)
	}
	q := u.Query()
	q.Set("search_path", schemaName)
	q.Set("application_name", schemaName) // tells this test's sessions apart in pg_stat_activity
	u.RawQuery = q.Encode()
	db, err := gorm.Open(postgres.Open(u.String()), gormConfig(cfg))
	if err != nil {
		return nil, nil, fmt.Errorf("testenv: gorm.Open postgres: %v", err)
	}
	return db, func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
		admin, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer admin.Close()
		_ = provision.Postgres{Conn: admin}.DropSchema(context.Background(), schemaName)
	}, nil
}

// OpenMySQL returns a *gorm.DB on a fresh database, dropped when the test
// ends. It opens MariaDB with DisableWithReturning so that it behaves like
// MySQL 8, which has no RETURNING.
func OpenMySQL(t testing.TB, cfg *gorm.Config) *gorm.DB {
	t.Helper()
	return openMySQL(t, cfg, true)
}

// OpenMySQLReturning is OpenMySQL with the driver's defaults: on MariaDB
// ≥ 10.5 GORM adds RETURNING to creates.
func OpenMySQLReturning(t testing.TB, cfg *gorm.Config) *gorm.DB {
	t.Helper()
	return openMySQL(t, cfg, false)
}

func openMySQL(t testing.TB, cfg *gorm.Config, disableReturning bool) *gorm.DB {
	t.Helper()
	base := MySQLDSN(t)
	mc, err := gomysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("testenv: %s: %v", MySQLEnv, err)
	}
	mc.ParseTime = true
	admin, err := sql.Open("mysql", mc.FormatDSN())
	if err != nil {
		t.Fatalf("testenv: open %s: %v", MySQLEnv, err)
	}
	defer admin.Close()
	dbName := randomName("t_")
	if err := (provision.MySQL{Conn: admin}).CreateDatabase(context.Background(), dbName); err != nil {
		t.Fatalf("testenv: on the MySQL of %s: %v", MySQLEnv, err)
	}
	mc.DBName = dbName
	db, err := gorm.Open(mysql.New(mysql.Config{DSN: mc.FormatDSN(), DisableWithReturning: disableReturning}), gormConfig(cfg))
	if err != nil {
		t.Fatalf("testenv: gorm.Open mysql: %v", err)
	}
	t.Cleanup(func() {
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.Close()
		}
		mc.DBName = ""
		admin, err := sql.Open("mysql", mc.FormatDSN())
		if err != nil {
			return
		}
		defer admin.Close()
		_ = provision.MySQL{Conn: admin}.DropDatabase(context.Background(), dbName)
	})
	return db
}
