// Command mysql is the inventory example on MySQL (MariaDB stands in for it
// here), end to end: the product service changes its stock through GORM
// and every change lands in the outbox table in the same transaction; a
// relay, scheduled every second, publishes the events to Kafka, where a
// consumer prints them; at the end it checks that every committed change
// arrived, in order per key (see inventory.Demo). It exits non-zero if
// anything is missing.
//
// It takes its server from -dsn, or OUTBOX_MYSQL_DSN, or
// OUTBOX_TEST_MYSQL_DSN (set by "make demo-mysql"), and works in a database
// of its own ("outbox_demo" by default), recreated on every run. It takes
// Kafka from -brokers, or OUTBOX_KAFKA_BROKERS, or OUTBOX_DEMO_KAFKA_BROKERS
// (the kfake broker "make demo-mysql" starts); with none, it starts an
// in-process kfake cluster.
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

	"github.com/go-outbox/outbox/examples/internal/inventory"
)

func main() {
	dsn := flag.String("dsn", inventory.FirstEnv("OUTBOX_MYSQL_DSN", "OUTBOX_TEST_MYSQL_DSN"), "MySQL DSN (go-sql-driver format)")
	database := flag.String("database", "outbox_demo", "database to (re)create and work in")
	brokers := inventory.BrokersFlag()
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := run(ctx, *dsn, *database, *brokers)
	stop()
	if err != nil {
		slog.Error("example failed", "err", err)
		os.Exit(1)
	}
}

var ident = regexp.MustCompile(`^[a-z_][a-z0-9_]*$`)

func run(ctx context.Context, dsn, database, brokers string) error {
	if dsn == "" {
		return fmt.Errorf("no database: pass -dsn or set OUTBOX_MYSQL_DSN (make demo-mysql does it for you)")
	}
	if !ident.MatchString(database) {
		return fmt.Errorf("-database %q is not a plain lower-case identifier", database)
	}
	cfg, err := gomysql.ParseDSN(dsn)
	if err != nil {
		return fmt.Errorf("-dsn: %w", err)
	}
	cfg.ParseTime = true
	cfg.DBName = ""
	admin, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return err
	}
	defer admin.Close()
	for _, s := range []string{`DROP DATABASE IF EXISTS ` + database, `CREATE DATABASE ` + database} {
		if _, err := admin.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("recreate database %s: %w", database, err)
		}
	}
	cfg.DBName = database
	// DisableWithReturning: MariaDB has RETURNING, MySQL 8 has not; the
	// example behaves as on MySQL.
	db, err := gorm.Open(mysql.New(mysql.Config{DSN: cfg.FormatDSN(), DisableWithReturning: true}),
		&gorm.Config{Logger: logger.Discard})
	if err != nil {
		return err
	}
	return inventory.Demo(ctx, db, inventory.Options{Title: "MySQL, database " + database, Brokers: brokers})
}
