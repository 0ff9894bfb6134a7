// Package pick chooses the outbox dialect for a database. The plugin, the
// relay, the inbox, the DDL writers and outboxctl all call [For], so that a
// name one of them accepts every one of them accepts.
package pick

import (
	"database/sql"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/mysql"
	"github.com/go-outbox/outbox/dialects/postgres"
)

// ErrUnsupported reports a database that has no dialect.
var ErrUnsupported = errors.New("pick: unsupported database")

// For returns the dialect for name — a GORM dialector name ("postgres",
// "mysql") or a database/sql driver name ("pgx", "postgresql" for
// PostgreSQL). db, when not nil, is the pool the dialect will run on: its
// driver decides whether PostgreSQL batches may be bound as arrays (pgx
// binds Go slices, other drivers may not). With a nil db the dialect
// assumes pgx, GORM's default driver.
//
// An unknown name is an error wrapping [ErrUnsupported] that names it.
func For(name string, db *sql.DB) (dialects.Dialect, error) {
	switch name {
	case "postgres", "postgresql", "pgx":
		d := postgres.New()
		if db != nil {
			d.Unnest = isPgx(db)
		}
		return d, nil
	case "mysql":
		return mysql.New(), nil
	}
	return nil, fmt.Errorf("%w %q (supported: postgres, mysql)", ErrUnsupported, name)
}

// isPgx reports whether db runs on pgx's database/sql driver (its stdlib
// package), which binds Go slices as PostgreSQL arrays.
func isPgx(db *sql.DB) bool {
	return strings.Contains(reflect.TypeOf(db.Driver()).String(), "stdlib")
}
