package inbox

import (
	"context"
	"fmt"

	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects"
)

// defaultTable is Config.Table's default.
const defaultTable = "inbox"

// DDL returns the SQL that Consumer.Migrate runs to create the inbox table
// named table ("table" or "schema.table", as in Config.Table; "" is
// "inbox") on driver
// ("postgres" or "mysql"), without a database: for migration tools and
// DBAs (see gormoutbox.DDL, which does the same for the outbox table). The
// script ends by recording each version in the table's migrations table,
// so that Migrate then finds nothing to do:
//
//	script, err := inbox.DDL("mysql", "inbox")
//	if err != nil {
//		return err
//	}
//	fmt.Print(script)
//
// An unknown driver or a bad table name is an error wrapping
// ErrInvalidConfig.
func DDL(driver, table string) (dialects.Script, error) {
	if table == "" {
		table = defaultTable
	}
	s, err := newStoreFor(driver, nil, table)
	if err != nil {
		return dialects.Script{}, err
	}
	return dialects.NewScript(s.d, "inbox", s.table, s.migrations()), nil
}

// MigrateTable creates or upgrades the inbox table named table ("" is
// "inbox") on db, as
// Consumer.Migrate does, without a Consumer (for tools such as
// outboxctl). It is idempotent and safe to run from several processes at
// once.
func MigrateTable(ctx context.Context, db *gorm.DB, table string) error {
	if db == nil {
		return fmt.Errorf("%w: nil *gorm.DB", ErrInvalidConfig)
	}
	if table == "" {
		table = defaultTable
	}
	s, err := newStore(db, table)
	if err != nil {
		return err
	}
	sqlDB, err := db.DB()
	if err != nil {
		return fmt.Errorf("inbox: migrate: %w", err)
	}
	if err := s.d.MigrateSteps(ctx, sqlDB, s.table, s.migrations()); err != nil {
		return fmt.Errorf("inbox: %w", err)
	}
	return nil
}
