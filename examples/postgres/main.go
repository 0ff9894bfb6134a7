// Command postgres is the inventory synchronisation on PostgreSQL, end to
// end (see inventory.Sync): a product service changes its stock through
// GORM from several goroutines, every change writes its event to the
// outbox in the same transaction, and a cron-scheduled relay publishes
// them to Kafka; an order service keeps its own copy of the inventory, fed
// through the inbox, and answers each event through its own outbox; the
// product service marks the events processed, or sends a FAILED one again.
// It ends by checking that both inventory tables are equal, and exits
// non-zero if they are not.
//
// It takes its server from -dsn, or OUTBOX_POSTGRES_URL, or
// OUTBOX_TEST_POSTGRES_URL (set by "make demo"), and works in two schemas
// of its own, <schema>_products and <schema>_orders ("outbox_demo" by
// default), recreated on every run. It takes Kafka from -brokers, or
// OUTBOX_KAFKA_BROKERS, or OUTBOX_DEMO_KAFKA_BROKERS (the kfake broker
// "make demo" starts); with none, it starts an in-process kfake cluster.
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

	"github.com/go-outbox/outbox/dialects/dialecttest/provision"
	"github.com/go-outbox/outbox/examples/internal/inventory"
)

func main() {
	dsn := flag.String("dsn", inventory.FirstEnv("OUTBOX_POSTGRES_URL", "OUTBOX_TEST_POSTGRES_URL"), "PostgreSQL URL")
	schema := flag.String("schema", "outbox_demo", "prefix of the two schemas to (re)create and work in")
	o := inventory.Flags(flag.CommandLine)
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	_, err := run(ctx, *dsn, *schema, *o)
	stop()
	if err != nil {
		slog.Error("example failed", "err", err)
		os.Exit(1)
	}
}

var ident = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func run(ctx context.Context, dsn, schema string, o inventory.Options) (inventory.Result, error) {
	if dsn == "" {
		return inventory.Result{}, fmt.Errorf("no database: pass -dsn or set OUTBOX_POSTGRES_URL (make demo does it for you)")
	}
	if !ident.MatchString(schema) {
		return inventory.Result{}, fmt.Errorf("-schema %q is not a plain lower-case identifier", schema)
	}
	admin, err := sql.Open("pgx", dsn)
	if err != nil {
		return inventory.Result{}, err
	}
	defer admin.Close()
	open := func(s string) (*gorm.DB, error) {
		if err := (provision.Postgres{Conn: admin}).RecreateSchema(ctx, s); err != nil {
			return nil, err
		}
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, err
		}
		q := u.Query()
		q.Set("search_path", s)
		u.RawQuery = q.Encode()
		db, err := gorm.Open(postgres.Open(u.String()), &gorm.Config{Logger: logger.Discard})
		if err != nil {
			return nil, err
		}
		// Keep connections open between transactions (database/sql keeps
		// 2 by default; each new PostgreSQL connection is a process).
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.SetMaxIdleConns(32)
		}
		return db, nil
	}
	if o.Products, err = open(schema + "_products"); err != nil {
		return inventory.Result{}, err
	}
	if o.Orders, err = open(schema + "_orders"); err != nil {
		return inventory.Result{}, err
	}
	defer closeDB(o.Products)
	defer closeDB(o.Orders)
	o.Title = fmt.Sprintf("PostgreSQL (schemas %s_products and %s_orders)", schema, schema)
	return inventory.Sync(ctx, o)
}

func closeDB(db *gorm.DB) {
	if sqlDB, err := db.DB(); err == nil {
		sqlDB.Close()
	}
}
