// Command mysql is the inventory synchronisation on MySQL (MariaDB here,
// opened so that it behaves like MySQL 8), end to end (see inventory.Sync):
// a product service changes its stock through GORM from several
// goroutines, every change writes its event to the outbox in the same
// transaction, and a cron-scheduled relay publishes them to Kafka; an order
// service keeps its own copy of the inventory, fed through the inbox, and
// answers each event through its own outbox; the product service marks the
// events processed, or sends a FAILED one again. It ends by checking that
// both inventory tables are equal, and exits non-zero if they are not.
//
// It takes its server from -dsn, or OUTBOX_MYSQL_DSN, or
// OUTBOX_TEST_MYSQL_DSN (set by "make demo-mysql"), and works in two
// databases of its own, <database>_products and <database>_orders
// ("outbox_demo" by default), recreated on every run. It takes Kafka from
// -brokers, or OUTBOX_KAFKA_BROKERS, or OUTBOX_DEMO_KAFKA_BROKERS; with
// none, it starts an in-process kfake cluster.
package main

import (
	"context"
	"database/sql"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"regexp"

	gomysql "github.com/go-sql-driver/mysql"
	"gorm.io/driver/mysql"
	"gorm.io/gorm"
	"gorm.io/gorm/logger"

	"github.com/go-outbox/outbox/dialects/dialecttest/provision"
	"github.com/go-outbox/outbox/examples/internal/inventory"
)

func main() {
	dsn := flag.String("dsn", inventory.FirstEnv("OUTBOX_MYSQL_DSN", "OUTBOX_TEST_MYSQL_DSN"), "MySQL DSN (go-sql-driver format)")
	database := flag.String("database", "outbox_demo", "prefix of the two databases to (re)create and work in")
	o := inventory.Flags(flag.CommandLine)
	flag.Parse()
	// The driver logs connections it drops ("invalid connection": a query
	// cancelled when the services stop) on its own global logger; here
	// they go to slog at debug level.
	_ = gomysql.SetLogger(driverLog{})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	_, err := run(ctx, *dsn, *database, *o)
	stop()
	if err != nil {
		slog.Error("example failed", "err", err)
		os.Exit(1)
	}
}

var ident = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func run(ctx context.Context, dsn, database string, o inventory.Options) (inventory.Result, error) {
	if dsn == "" {
		return inventory.Result{}, fmt.Errorf("no database: pass -dsn or set OUTBOX_MYSQL_DSN (make demo-mysql does it for you)")
	}
	if !ident.MatchString(database) {
		return inventory.Result{}, fmt.Errorf("-database %q is not a plain lower-case identifier", database)
	}
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return inventory.Result{}, fmt.Errorf("-dsn: %w", err)
	}
	cfg.ParseTime = true
	cfg.DBName = ""
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return inventory.Result{}, err
	}
	defer admin.Close()
	open := func(name string) (*gorm.DB, error) {
		if err := (provision.MySQL{Conn: admin}).RecreateDatabase(ctx, name); err != nil {
			return nil, err
		}
		c := *cfg
		c.DBName = name
		// DisableWithReturning: MariaDB has RETURNING, MySQL 8 has not;
		// the example behaves as on MySQL.
		db, err := gorm.Open(mysql.New(mysql.Config{DSN: c.FormatDSN(), DisableWithReturning: true}),
			&gorm.Config{Logger: logger.Discard})
		if err != nil {
			return nil, err
		}
		if sqlDB, err := db.DB(); err == nil {
			sqlDB.SetMaxIdleConns(32)
		}
		return db, nil
	}
	if o.Products, err = open(database + "_products"); err != nil {
		return inventory.Result{}, err
	}
	if o.Orders, err = open(database + "_orders"); err != nil {
		return inventory.Result{}, err
	}
	defer closeDB(o.Products)
	defer closeDB(o.Orders)
	o.Title = fmt.Sprintf("MySQL (databases %s_products and %s_orders)", database, database)
	return inventory.Sync(ctx, o)
}

func closeDB(db *gorm.DB) {
	if sqlDB, err := db.DB(); err == nil {
		sqlDB.Close()
	}
}

// driverLog sends go-sql-driver's log lines to slog at debug level.
type driverLog struct{}

func (driverLog) Print(v ...any) { slog.Debug(fmt.Sprint(v...), "source", "go-sql-driver/mysql") }
