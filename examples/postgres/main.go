// Command postgres is the inventory example on PostgreSQL: the product
// service changes its stock through GORM and every change lands in the
// outbox table in the same transaction.
//
// It takes its database from -dsn, or OUTBOX_POSTGRES_URL, or
// OUTBOX_TEST_POSTGRES_URL (set by "make demo"), and works in a schema of
// its own ("outbox_demo" by default), recreated on every run.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"regexp"

	_ "github.com/jackc/pgx/v5/stdlib"
	"gorm.io/driver/postgres"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/go-outbox/outbox/examples/internal/inventory"
)

func main() {
	dsn := flag.String("dsn", inventory.FirstEnv("OUTBOX_POSTGRES_URL", "OUTBOX_TEST_POSTGRES_URL"), "PostgreSQL URL")
	schema := flag.String("schema", "outbox_demo", "schema to (re)create and work in")
	flag.Parse()
	if err := run(context.Background(), *dsn, *schema); err != nil {
		slog.Error("example failed", "err", err)
		os.Exit(1)
	}
}

var ident = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func run(ctx context.Context, dsn, schema string) error {
	if dsn == "" {
		return fmt.Errorf("no database: pass -dsn or set OUTBOX_POSTGRES_URL (make demo does it for you)")
	}
	if !ident.MatchString(schema) {
		return fmt.Errorf("-schema %q is not a plain lower-case identifier", schema)
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		return err
	}
	defer admin.Close()
	if _, err := admin.ExecContext(ctx, `DROP SCHEMA IF EXISTS `+schema+` CASCADE; CREATE SCHEMA `+schema); err != nil {
		return fmt.Errorf("recreate schema %s: %w", schema, err)
	}
	u, err := url.Parse(dsn)
	if err != nil {
		return err
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	db, err := gorm.Open(postgres.Open(u.String()), &gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	return inventory.Demo(ctx, db, os.Stdout, fmt.Sprintf("PostgreSQL, schema %s", schema))
}
