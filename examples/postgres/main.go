// Command postgres is the inventory example on PostgreSQL, end to end: the
// product service changes its stock through GORM and every change lands in
// the outbox table in the same transaction; a relay, scheduled every
// second, publishes the events to Kafka, where a consumer prints them; at
// the end it checks that every committed change arrived, in order per key
// (see inventory.Demo). It exits non-zero if anything is missing.
//
// It takes its database from -dsn, or OUTBOX_POSTGRES_URL, or
// OUTBOX_TEST_POSTGRES_URL (set by "make demo"), and works in a schema of
// its own ("outbox_demo" by default), recreated on every run. It takes
// Kafka from -brokers, or OUTBOX_KAFKA_BROKERS, or OUTBOX_DEMO_KAFKA_BROKERS
// (the kfake broker "make demo" starts); with none, it starts an in-process
// kfake cluster.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"os/signal"
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
	brokers := inventory.BrokersFlag()
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, *dsn, *schema, *brokers)
	stop()
	if err != nil {
		slog.Error("example failed", "err", err)
		os.Exit(1)
	}
}

var ident = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func run(ctx context.Context, dsn, schema, brokers string) error {
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
	return inventory.Demo(ctx, db, inventory.Options{Title: "PostgreSQL, schema " + schema, Brokers: brokers})
}
