package gormoutbox

import (
	"fmt"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/pick"
)

// Script is the DDL of a table of the library, version by version: see
// DDL.
type Script = dialects.Script

// DDL returns the SQL that Migrate runs to create the outbox table named
// table ("table" or "schema.table", as in Config.Table; "" is
// DefaultTable) on driver
// ("postgres" or "mysql"), without a database: for migration tools such
// as goose or golang-migrate, and for DBAs who create the table themselves
// and leave the service only the privileges it needs (README,
// "Privileges").
//
// The script holds the statements of every schema version (Script.Steps,
// one migration file each if you like) followed by the statement that
// records the version in the table's migrations table, which the first
// version creates: once all of it is applied, Migrate finds nothing to do.
// script.String() is the whole of it as SQL text:
//
//	script, err := gormoutbox.DDL("postgres", "outbox")
//	if err != nil {
//		return err
//	}
//	fmt.Print(script) // or one file per script.Steps[i]
//
// The PostgreSQL script creates the NOTIFY trigger enabled, as Migrate does
// with Config.DisableNotify false (Migrate applies DisableNotify).
//
// An unknown driver is an error wrapping ErrUnsupportedDialect; a table
// name that is not a plain identifier, optionally schema-qualified, wraps
// ErrInvalidConfig.
func DDL(driver, table string) (Script, error) {
	if table == "" {
		table = DefaultTable
	}
	d, err := scripter(driver)
	if err != nil {
		return Script{}, err
	}
	t, err := dialects.ParseTable(table)
	if err != nil {
		return Script{}, fmt.Errorf("%w: table: %w", ErrInvalidConfig, err)
	}
	return dialects.NewScript(d, "outbox", t, d.OutboxMigrations(t)), nil
}

// scripter returns the dialect of driver, which writes out its DDL.
func scripter(driver string) (dialects.Dialect, error) {
	d, err := pick.For(driver, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnsupportedDialect, err)
	}
	return d, nil
}
