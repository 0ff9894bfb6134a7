// Package provision makes and removes, on a real server, what the tests,
// the examples and the conformance suite work in: throwaway PostgreSQL
// schemas and databases, MySQL databases, and least-privilege roles (MySQL
// users) that get exactly the privileges a test documents. It holds the
// SQL of that provisioning, so that no code outside dialects/ writes SQL;
// it is no part of the storage seam and the library never calls it.
//
// Each database has a small type over a connection (Postgres, MySQL),
// logged in as a user with the rights the call needs: CREATE on the
// database and CREATEROLE on PostgreSQL; CREATE, DROP, CREATE USER and
// GRANT OPTION on MySQL.
//
// Names are checked before they reach the server: a schema, database, role
// or table name must be a plain identifier (a letter or underscore, then
// letters, digits and underscores, at most 63 characters), and it is
// quoted, so that it names exactly that object. A bad name, privilege list
// or password is an error wrapping ErrInvalid that names it; a statement
// the server refuses is an *Error naming the step and the object.
package provision

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
)

// ErrInvalid is wrapped by the errors for a name, privilege list or
// password that provision refuses to put into a statement.
var ErrInvalid = errors.New("provision: invalid argument")

// Conn is what provision runs its statements on: a *sql.DB, *sql.Conn or
// *sql.Tx, or the ConnPool of a *gorm.DB.
type Conn interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// Grant names privileges on a schema (a MySQL database) or on one of its
// tables, and the role (MySQL user) that gets or loses them.
type Grant struct {
	// Privileges are privilege names, e.g. "SELECT, UPDATE", "USAGE".
	Privileges string
	// Schema is the PostgreSQL schema or the MySQL database.
	Schema string
	// Table is a table of Schema. Empty, the privileges are on the schema
	// itself on PostgreSQL (ON SCHEMA: "USAGE", "CREATE") and on every
	// table of the database on MySQL (ON `db`.*: "CREATE, ALTER").
	Table string
	// Role is the PostgreSQL role or the MySQL user (at host '%').
	Role string
}

// Error is a provisioning statement the server refused.
type Error struct {
	// Op is the step, e.g. "create schema", "grant", "drop role".
	Op string
	// Object names what the step was on, e.g. `schema "t_1a2b"`.
	Object string
	// Err is the server's (driver's) error.
	Err error
}

// Error reports the step, the object and the server's error.
func (e *Error) Error() string {
	return "provision: " + e.Op + " " + e.Object + ": " + e.Err.Error()
}

// Unwrap returns the server's error.
func (e *Error) Unwrap() error { return e.Err }

var (
	identRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]{0,62}$`)
	privilegesRE = regexp.MustCompile(`^[A-Za-z ,]+$`)
	passwordRE   = regexp.MustCompile(`^[A-Za-z0-9_.,:;!?@#%^&*()+=~-]{1,128}$`)
)

// checkName returns an error wrapping ErrInvalid unless name is a plain
// identifier; kind says what it names ("schema", "role").
func checkName(kind, name string) error {
	if !identRE.MatchString(name) {
		return fmt.Errorf("%w: %s name %q: want a letter or underscore, then letters, digits and underscores, at most 63 characters", ErrInvalid, kind, name)
	}
	return nil
}

// checkPrivileges returns an error wrapping ErrInvalid unless p is a list
// of privilege names ("SELECT, UPDATE").
func checkPrivileges(p string) error {
	if !privilegesRE.MatchString(p) {
		return fmt.Errorf("%w: privileges %q: want names such as \"SELECT, UPDATE\"", ErrInvalid, p)
	}
	return nil
}

// checkPassword returns an error wrapping ErrInvalid unless password can
// be written as a string literal as it is, on either server (no quote, no
// backslash, no space or control character).
func checkPassword(role, password string) error {
	if !passwordRE.MatchString(password) {
		return fmt.Errorf("%w: password of role %q: want 1 to 128 letters, digits or punctuation other than quotes and backslashes", ErrInvalid, role)
	}
	return nil
}

// checkGrant checks every part of g; kind names its role ("role", "user").
func checkGrant(g Grant, kind string) error {
	if err := checkPrivileges(g.Privileges); err != nil {
		return err
	}
	if err := checkName("schema", g.Schema); err != nil {
		return err
	}
	if g.Table != "" {
		if err := checkName("table", g.Table); err != nil {
			return err
		}
	}
	return checkName(kind, g.Role)
}

// exec runs the statements in order, stopping at the first refused: an
// *Error for op on object.
func exec(ctx context.Context, c Conn, op, object string, stmts ...string) error {
	for _, s := range stmts {
		if _, err := c.ExecContext(ctx, s); err != nil {
			return &Error{Op: op, Object: object, Err: err}
		}
	}
	return nil
}

// object names an object of kind for an *Error: schema "t_1a2b".
func object(kind, name string) string { return fmt.Sprintf("%s %q", kind, name) }

// on names the object of a grant for an *Error.
func (g Grant) on() string {
	if g.Table != "" {
		return fmt.Sprintf("%q on %s.%s to %s", g.Privileges, g.Schema, g.Table, g.Role)
	}
	return fmt.Sprintf("%q on %s to %s", g.Privileges, g.Schema, g.Role)
}
