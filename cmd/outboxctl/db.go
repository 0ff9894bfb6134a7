package main

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"
	"regexp"
	"strings"

	gomysql "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/gormoutbox"
)

// mysqlDSN matches the go-sql-driver form: [user[:pass]@]proto(addr)/db.
var mysqlDSN = regexp.MustCompile(`^([^@]*@)?[a-z0-9]+\([^)]*\)/`)

// guessDriver names the driver a DSN is for, "" when it cannot tell.
func guessDriver(dsn string) string {
	lower := strings.ToLower(dsn)
	switch {
	case strings.HasPrefix(lower, "postgres://"), strings.HasPrefix(lower, "postgresql://"):
		return "postgres"
	case mysqlDSN.MatchString(dsn):
		return "mysql"
	case strings.Contains(dsn, "=") && !strings.Contains(dsn, "://"):
		return "postgres" // host=... user=... dbname=...
	}
	return ""
}

// pgKeyValues parses a libpq key=value connection string (values may be
// single-quoted).
func pgKeyValues(dsn string) map[string]string {
	kv := map[string]string{}
	s := strings.TrimSpace(dsn)
	for s != "" {
		k, rest, ok := strings.Cut(s, "=")
		if !ok {
			break
		}
		k = strings.TrimSpace(k)
		rest = strings.TrimLeft(rest, " ")
		var v string
		if strings.HasPrefix(rest, "'") {
			var b strings.Builder
			i := 1
			for ; i < len(rest); i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
					b.WriteByte(rest[i])
					continue
				}
				if rest[i] == '\'' {
					break
				}
				b.WriteByte(rest[i])
			}
			v, s = b.String(), strings.TrimSpace(rest[min(i+1, len(rest)):])
		} else {
			v, s, _ = strings.Cut(rest, " ")
			s = strings.TrimSpace(s)
		}
		kv[k] = v
	}
	return kv
}

// target describes where a DSN points, without credentials: "host:port".
func target(driver, dsn string) string {
	switch driver {
	case "mysql":
		if cfg, err := gomysql.ParseDSN(dsn); err == nil {
			return cfg.Addr
		}
	case "postgres":
		if strings.Contains(dsn, "://") {
			if u, err := url.Parse(dsn); err == nil && u.Host != "" {
				return u.Host
			}
			return "?"
		}
		kv := pgKeyValues(dsn)
		h := kv["host"]
		if h == "" {
			h = "localhost"
		}
		if p := kv["port"]; p != "" {
			h += ":" + p
		}
		return h
	}
	return "?"
}

// secrets returns the strings of dsn that must never be printed: the DSN
// itself and its password, in the forms it may appear in.
func secrets(dsn string) []string {
	if dsn == "" {
		return nil
	}
	out := []string{dsn}
	var pw string
	if u, err := url.Parse(dsn); err == nil && u.User != nil {
		pw, _ = u.User.Password()
	}
	if pw == "" {
		if cfg, err := gomysql.ParseDSN(dsn); err == nil {
			pw = cfg.Passwd
		}
	}
	if pw == "" {
		pw = pgKeyValues(dsn)["password"]
	}
	// The password is scrubbed where credentials are written (user:pw@,
	// password=pw), not everywhere: it may be a word such as the table name.
	if pw != "" {
		for _, p := range []string{pw, url.QueryEscape(pw), url.PathEscape(pw)} {
			out = append(out, ":"+p+"@", "password="+p, "password='"+p+"'")
		}
	}
	return out
}

// scrubber returns a function that replaces the DSN and its password in
// a text.
func scrubber(dsn string) func(string) string {
	sec := secrets(dsn)
	return func(s string) string {
		for _, x := range sec {
			if x != "" {
				s = strings.ReplaceAll(s, x, mask(x))
			}
		}
		return s
	}
}

// mask is the replacement of a secret: its credential syntax is kept.
func mask(secret string) string {
	switch {
	case strings.HasPrefix(secret, ":"):
		return ":xxxxx@"
	case strings.HasPrefix(secret, "password='"):
		return "password='xxxxx'"
	case strings.HasPrefix(secret, "password="):
		return "password=xxxxx"
	}
	return "<dsn>"
}

// conn is an open outbox.
type conn struct {
	driver string
	where  string // host:port, for messages
	db     *gorm.DB
	sqlDB  *sql.DB
	plugin *gormoutbox.Plugin
	admin  *gormoutbox.Admin
	d      dialects.Dialect
	table  dialects.Table
}

func (c *conn) Close() error { return c.sqlDB.Close() }

// check validates the global flags (usage errors).
func (g *globals) check() (driver string, table dialects.Table, err error) {
	if g.dsn == "" {
		return "", table, usagef("no database given: set -dsn or $%s", DSNEnv)
	}
	return g.checkOffline()
}

// checkOffline validates the global flags of a command that needs no
// database (migrate -print): the driver comes from -driver, or from the
// DSN when one is set.
func (g *globals) checkOffline() (driver string, table dialects.Table, err error) {
	driver = g.driver
	switch driver {
	case "postgres", "mysql":
	case "postgresql", "pgx":
		driver = "postgres"
	case "":
		if g.dsn == "" {
			return "", table, usagef("which database? pass -driver postgres or -driver mysql")
		}
		driver = guessDriver(g.dsn)
		if driver == "" {
			return "", table, usagef("cannot tell the database from the DSN: pass -driver postgres or -driver mysql")
		}
	default:
		return "", table, usagef("-driver %q: want postgres or mysql", g.driver)
	}
	table, err = dialects.ParseTable(g.table)
	if err != nil {
		return "", table, usagef("-table: %v", err)
	}
	if g.shards < 1 || g.shards > 1<<16 {
		return "", table, usagef("-shards %d: want 1..65536", g.shards)
	}
	if g.timeout < 0 {
		return "", table, usagef("-timeout %v: must not be negative", g.timeout)
	}
	return driver, table, nil
}

// connect opens and pings the database and sets up the plugin and the
// Admin of its table.
func (c *cli) connect(ctx context.Context) (*conn, error) {
	driver, table, err := c.g.check()
	if err != nil {
		return nil, err
	}
	where := target(driver, c.g.dsn)
	var dial gorm.Dialector
	if driver == "mysql" {
		dial = mysql.New(mysql.Config{DSN: c.g.dsn, DisableWithReturning: true, SkipInitializeWithVersion: true})
	} else {
		dial = postgres.Open(c.g.dsn)
	}
	db, err := gorm.Open(dial, &gorm.Config{Logger: logger.Discard, DisableAutomaticPing: true})
	if err != nil {
		return nil, fmt.Errorf("bad %s DSN (%s): %v", driver, where, err)
	}
	sqlDB, err := db.DB()
	if err != nil {
		return nil, fmt.Errorf("open %s at %s: %v", driver, where, err)
	}
	sqlDB.SetMaxOpenConns(4)
	if err := sqlDB.PingContext(ctx); err != nil {
		sqlDB.Close()
		return nil, fmt.Errorf("cannot connect to %s at %s: %v", driver, where, err)
	}
	p := gormoutbox.New(gormoutbox.Config{Table: c.g.table, Shards: c.g.shards})
	if err := db.Use(p); err != nil {
		sqlDB.Close()
		return nil, err
	}
	admin, err := gormoutbox.NewAdmin(db, gormoutbox.AdminConfig{Table: c.g.table})
	if err != nil {
		sqlDB.Close()
		return nil, err
	}
	return &conn{driver: driver, where: where, db: db, sqlDB: sqlDB, plugin: p, admin: admin, d: p.Dialect(), table: table}, nil
}

// explain adds a hint to a database error when the outbox table has never
// been migrated.
func (c *conn) explain(ctx context.Context, err error) error {
	if err == nil || ctx.Err() != nil {
		return err
	}
	if v, verr := c.d.SchemaVersion(ctx, c.sqlDB, c.table); verr == nil && v == 0 {
		return fmt.Errorf("outbox table %s does not exist on %s at %s: run 'outboxctl migrate' first (%v)",
			c.table, c.driver, c.where, err)
	}
	return err
}
