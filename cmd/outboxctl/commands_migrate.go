package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/pick"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/inbox"
)

// ---- migrate

func cmdMigrate(ctx context.Context, c *cli, args []string) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	printOnly := fs.Bool("print", false, "print the DDL instead of running it: no database is needed, -driver names it")
	inboxTable := fs.String("inbox-table", "", `also the inbox table of package inbox, "table" or "schema.table" (default: none)`)
	if err := c.parse("migrate", fs, args); err != nil {
		return err
	}
	if err := noArgs(fs); err != nil {
		return err
	}
	var inboxT dialects.Table
	if *inboxTable != "" {
		t, err := dialects.ParseTable(*inboxTable)
		if err != nil {
			return usagef("-inbox-table: %v", err)
		}
		inboxT = t
	}
	if *printOnly {
		return printDDL(c, inboxT)
	}
	db, err := c.connect(ctx)
	if err != nil {
		return err
	}
	defer db.Close()
	if err := db.plugin.Migrate(ctx); err != nil {
		return err
	}
	v, err := db.d.SchemaVersion(ctx, db.sqlDB, db.table)
	if err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "outbox table %s on %s is migrated (schema version %d)\n", db.table, db.driver, v)
	if inboxT.Name == "" {
		return nil
	}
	if err := inbox.MigrateTable(ctx, db.db, inboxT.String()); err != nil {
		return err
	}
	if v, err = db.d.SchemaVersion(ctx, db.sqlDB, inboxT); err != nil {
		return err
	}
	fmt.Fprintf(c.stdout, "inbox table %s on %s is migrated (schema version %d)\n", inboxT, db.driver, v)
	return nil
}

// printDDL writes the DDL of the outbox table, and of the inbox table
// when inboxT is set, without a database.
func printDDL(c *cli, inboxT dialects.Table) error {
	driver, table, err := c.g.checkOffline()
	if err != nil {
		return err
	}
	scripts := make([]dialects.Script, 0, 2)
	s, err := gormoutbox.DDL(driver, table.String())
	if err != nil {
		return usagef("%v", err)
	}
	scripts = append(scripts, s)
	if inboxT.Name != "" {
		s, err := inbox.DDL(driver, inboxT.String())
		if err != nil {
			return usagef("%v", err)
		}
		scripts = append(scripts, s)
	}
	fmt.Fprintf(c.stdout, "-- Printed by outboxctl migrate -print -driver %s. Apply it to a database without\n", driver)
	fmt.Fprintln(c.stdout, "-- these tables; \"outboxctl migrate\" and Migrate then find nothing to do.")
	if d, err := pick.For(driver, nil); err == nil && d.Capabilities().TransactionalDDL {
		fmt.Fprintln(c.stdout, "-- In one transaction: psql -v ON_ERROR_STOP=1 -1 -f FILE")
	} else {
		fmt.Fprintln(c.stdout, "-- MySQL commits each DDL statement: if one fails, drop what it created before the next try.")
	}
	for _, s := range scripts {
		fmt.Fprintf(c.stdout, "\n%s", s)
	}
	return nil
}
