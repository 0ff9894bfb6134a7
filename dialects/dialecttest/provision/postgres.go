package provision

import (
	"context"
	"database/sql"
	"errors"
)

// Postgres provisions on a PostgreSQL server through Conn, a connection
// of a user that may create schemas, databases and roles.
type Postgres struct {
	// Conn is the connection the statements run on.
	Conn Conn
}

// pgIdent quotes a checked name as a PostgreSQL identifier. A lower-case
// name quoted names what it names unquoted.
func pgIdent(name string) string { return `"` + name + `"` }

// CreateSchema creates the schema name.
func (p Postgres) CreateSchema(ctx context.Context, name string) error {
	if err := checkName("schema", name); err != nil {
		return err
	}
	return exec(ctx, p.Conn, "create schema", object("schema", name), `CREATE SCHEMA `+pgIdent(name))
}

// DropSchema drops the schema name and everything in it (CASCADE).
func (p Postgres) DropSchema(ctx context.Context, name string) error {
	if err := checkName("schema", name); err != nil {
		return err
	}
	return exec(ctx, p.Conn, "drop schema", object("schema", name), `DROP SCHEMA `+pgIdent(name)+` CASCADE`)
}

// RecreateSchema drops the schema name with everything in it, if it
// exists, and creates it empty, in one transaction.
func (p Postgres) RecreateSchema(ctx context.Context, name string) error {
	if err := checkName("schema", name); err != nil {
		return err
	}
	q := pgIdent(name)
	return exec(ctx, p.Conn, "recreate schema", object("schema", name),
		`DROP SCHEMA IF EXISTS `+q+` CASCADE; CREATE SCHEMA `+q)
}

// CurrentSchema returns the schema Conn creates tables in: the first of
// its search_path that exists.
func (p Postgres) CurrentSchema(ctx context.Context) (string, error) {
	var s sql.NullString
	if err := p.Conn.QueryRowContext(ctx, `SELECT current_schema()`).Scan(&s); err != nil {
		return "", &Error{Op: "read", Object: "the current schema", Err: err}
	}
	if s.String == "" {
		return "", &Error{Op: "read", Object: "the current schema", Err: errors.New("no schema of the search_path exists")}
	}
	return s.String, nil
}

// CreateDatabase creates the database name.
func (p Postgres) CreateDatabase(ctx context.Context, name string) error {
	if err := checkName("database", name); err != nil {
		return err
	}
	return exec(ctx, p.Conn, "create database", object("database", name), `CREATE DATABASE `+pgIdent(name))
}

// DropDatabase drops the database name if it exists, ending the sessions
// still connected to it (WITH (FORCE): a pooler such as PgBouncer may
// hold server connections to it).
func (p Postgres) DropDatabase(ctx context.Context, name string) error {
	if err := checkName("database", name); err != nil {
		return err
	}
	return exec(ctx, p.Conn, "drop database", object("database", name),
		`DROP DATABASE IF EXISTS `+pgIdent(name)+` WITH (FORCE)`)
}

// CreateRole creates the role name, which logs in with password and holds
// no privilege: not a superuser, and it may create neither databases nor
// roles.
func (p Postgres) CreateRole(ctx context.Context, name, password string) error {
	if err := checkName("role", name); err != nil {
		return err
	}
	if err := checkPassword(name, password); err != nil {
		return err
	}
	return exec(ctx, p.Conn, "create role", object("role", name),
		`CREATE ROLE `+pgIdent(name)+` LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '`+password+`'`)
}

// Grant grants g.Privileges on g.Table of g.Schema, or on the schema
// itself when g.Table is empty, to g.Role.
func (p Postgres) Grant(ctx context.Context, g Grant) error {
	if err := checkGrant(g, "role"); err != nil {
		return err
	}
	return exec(ctx, p.Conn, "grant", g.on(), `GRANT `+g.Privileges+` ON `+pgOn(g)+` TO `+pgIdent(g.Role))
}

// Revoke revokes g.Privileges on g.Table of g.Schema, or on the schema
// itself when g.Table is empty, from g.Role.
func (p Postgres) Revoke(ctx context.Context, g Grant) error {
	if err := checkGrant(g, "role"); err != nil {
		return err
	}
	return exec(ctx, p.Conn, "revoke", g.on(), `REVOKE `+g.Privileges+` ON `+pgOn(g)+` FROM `+pgIdent(g.Role))
}

// pgOn is the object of a checked grant: a table or a schema.
func pgOn(g Grant) string {
	if g.Table == "" {
		return `SCHEMA ` + pgIdent(g.Schema)
	}
	return pgIdent(g.Schema) + `.` + pgIdent(g.Table)
}

// DropRole drops the role name: it ends the role's sessions, drops what
// it owns and its privileges in Conn's database (DROP OWNED BY), then the
// role.
func (p Postgres) DropRole(ctx context.Context, name string) error {
	if err := checkName("role", name); err != nil {
		return err
	}
	if _, err := p.Conn.ExecContext(ctx,
		`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, name); err != nil {
		return &Error{Op: "end the sessions of", Object: object("role", name), Err: err}
	}
	q := pgIdent(name)
	return exec(ctx, p.Conn, "drop role", object("role", name), `DROP OWNED BY `+q, `DROP ROLE `+q)
}
