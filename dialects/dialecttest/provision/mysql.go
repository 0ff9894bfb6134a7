package provision

import (
	"context"
	"database/sql"
	"errors"
)

// MySQL provisions on a MySQL (MariaDB) server through Conn, a connection
// of a user that may create and drop databases and users and grant
// privileges.
type MySQL struct {
	// Conn is the connection the statements run on.
	Conn Conn
}

// myIdent quotes a checked name as a MySQL identifier.
func myIdent(name string) string { return "`" + name + "`" }

// myUser names the checked user name at any host: 'name'@'%'.
func myUser(name string) string { return `'` + name + `'@'%'` }

// CreateDatabase creates the database name in utf8mb4 with the binary
// collation, so that text compares byte for byte, as on PostgreSQL.
func (m MySQL) CreateDatabase(ctx context.Context, name string) error {
	if err := checkName("database", name); err != nil {
		return err
	}
	return exec(ctx, m.Conn, "create database", object("database", name),
		`CREATE DATABASE `+myIdent(name)+` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`)
}

// DropDatabase drops the database name, if it exists.
func (m MySQL) DropDatabase(ctx context.Context, name string) error {
	if err := checkName("database", name); err != nil {
		return err
	}
	return exec(ctx, m.Conn, "drop database", object("database", name), `DROP DATABASE IF EXISTS `+myIdent(name))
}

// RecreateDatabase drops the database name, if it exists, and creates it
// empty, with the server's default character set and collation.
func (m MySQL) RecreateDatabase(ctx context.Context, name string) error {
	if err := checkName("database", name); err != nil {
		return err
	}
	q := myIdent(name)
	return exec(ctx, m.Conn, "recreate database", object("database", name),
		`DROP DATABASE IF EXISTS `+q, `CREATE DATABASE `+q)
}

// CurrentDatabase returns the database Conn works in.
func (m MySQL) CurrentDatabase(ctx context.Context) (string, error) {
	var s sql.NullString
	if err := m.Conn.QueryRowContext(ctx, `SELECT DATABASE()`).Scan(&s); err != nil {
		return "", &Error{Op: "read", Object: "the current database", Err: err}
	}
	if s.String == "" {
		return "", &Error{Op: "read", Object: "the current database", Err: errors.New("the connection has no database")}
	}
	return s.String, nil
}

// CreateUser creates the user name at any host ('name'@'%'), who logs in
// with password and holds no privilege.
func (m MySQL) CreateUser(ctx context.Context, name, password string) error {
	if err := checkName("user", name); err != nil {
		return err
	}
	if err := checkPassword(name, password); err != nil {
		return err
	}
	return exec(ctx, m.Conn, "create user", object("user", name),
		`CREATE USER `+myUser(name)+` IDENTIFIED BY '`+password+`'`)
}

// Grant grants g.Privileges on g.Table of the database g.Schema, or on
// every table of it when g.Table is empty, to the user g.Role.
func (m MySQL) Grant(ctx context.Context, g Grant) error {
	if err := checkGrant(g, "user"); err != nil {
		return err
	}
	return exec(ctx, m.Conn, "grant", g.on(), `GRANT `+g.Privileges+` ON `+myOn(g)+` TO `+myUser(g.Role))
}

// Revoke revokes g.Privileges on g.Table of the database g.Schema, or on
// every table of it when g.Table is empty, from the user g.Role.
func (m MySQL) Revoke(ctx context.Context, g Grant) error {
	if err := checkGrant(g, "user"); err != nil {
		return err
	}
	return exec(ctx, m.Conn, "revoke", g.on(), `REVOKE `+g.Privileges+` ON `+myOn(g)+` FROM `+myUser(g.Role))
}

// myOn is the object of a checked grant: a table or every table of a
// database.
func myOn(g Grant) string {
	if g.Table == "" {
		return myIdent(g.Schema) + `.*`
	}
	return myIdent(g.Schema) + `.` + myIdent(g.Table)
}

// DropUser drops the user name ('name'@'%') with its privileges, if it
// exists.
func (m MySQL) DropUser(ctx context.Context, name string) error {
	if err := checkName("user", name); err != nil {
		return err
	}
	return exec(ctx, m.Conn, "drop user", object("user", name), `DROP USER IF EXISTS `+myUser(name))
}
