package gormoutbox_test

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/mysql"
	"github.com/go-outbox/outbox/dialects/postgres"
	"github.com/go-outbox/outbox/gormoutbox"
)

// recorder is a database/sql driver that records the statements Migrate
// executes on a database where no table exists, with their arguments
// written in: the statements a DDL script must hold.
type recorder struct {
	mu    sync.Mutex
	execs []string
}

var (
	recorders   = map[string]*recorder{}
	recordersMu sync.Mutex
)

func init() { sql.Register("gormoutbox-ddl-recorder", recordDriver{}) }

type recordDriver struct{}

func (recordDriver) Open(name string) (driver.Conn, error) {
	recordersMu.Lock()
	defer recordersMu.Unlock()
	r, ok := recorders[name]
	if !ok {
		return nil, fmt.Errorf("no recorder %q", name)
	}
	return recConn{r}, nil
}

type recConn struct{ r *recorder }

func (recConn) Prepare(string) (driver.Stmt, error) { return nil, errors.New("recorder: no Prepare") }
func (recConn) Close() error                        { return nil }
func (recConn) Begin() (driver.Tx, error)           { return recTx{}, nil }

type recTx struct{}

func (recTx) Commit() error   { return nil }
func (recTx) Rollback() error { return nil }

func (c recConn) ExecContext(_ context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	for i, a := range args {
		v := fmt.Sprint(a.Value)
		if strings.Contains(query, "$") {
			query = strings.Replace(query, fmt.Sprintf("$%d", i+1), v, 1)
		} else {
			query = strings.Replace(query, "?", v, 1)
		}
	}
	c.r.mu.Lock()
	c.r.execs = append(c.r.execs, query)
	c.r.mu.Unlock()
	return driver.RowsAffected(0), nil
}

// QueryContext answers the queries of Migrate: the current database, the
// migration lock (granted) and the version applied (none).
func (recConn) QueryContext(_ context.Context, query string, _ []driver.NamedValue) (driver.Rows, error) {
	switch {
	case strings.Contains(query, "DATABASE()"):
		return &recRows{v: "db"}, nil
	case strings.Contains(query, "GET_LOCK"), strings.Contains(query, "MAX(version)"):
		if strings.Contains(query, "MAX(version)") {
			return &recRows{v: int64(0)}, nil
		}
		return &recRows{v: int64(1)}, nil
	}
	return nil, fmt.Errorf("recorder: unexpected query %q", query)
}

type recRows struct {
	v    driver.Value
	done bool
}

func (*recRows) Columns() []string { return []string{"v"} }
func (*recRows) Close() error      { return nil }
func (r *recRows) Next(dest []driver.Value) error {
	if r.done {
		return io.EOF
	}
	r.done = true
	dest[0] = r.v
	return nil
}

// migrateStatements runs d.Migrate on table against the recorder and
// returns the DDL it executed (without its locking).
func migrateStatements(t *testing.T, d dialects.Dialect, table string) []string {
	t.Helper()
	r := &recorder{}
	name := t.Name() + "/" + d.Name() + "/" + table
	recordersMu.Lock()
	recorders[name] = r
	recordersMu.Unlock()
	db, err := sql.Open("gormoutbox-ddl-recorder", name)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	tb, err := dialects.ParseTable(table)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Migrate(context.Background(), db, tb); err != nil {
		t.Fatalf("%s Migrate: %v", d.Name(), err)
	}
	var out []string
	for _, s := range r.execs {
		if strings.HasPrefix(s, "SELECT pg_advisory_xact_lock") || strings.HasPrefix(s, "DO RELEASE_LOCK") {
			continue
		}
		out = append(out, s)
	}
	return out
}

// The script is what Migrate runs on a fresh database, statement for
// statement, the bookkeeping included.
func TestDDLIsWhatMigrateRuns(t *testing.T) {
	for _, tc := range []struct {
		driver string
		d      dialects.Dialect
		latest int
	}{
		{"postgres", postgres.New(), postgres.LatestVersion},
		{"mysql", mysql.New(), mysql.LatestVersion},
	} {
		for _, table := range []string{"outbox", "events.my_outbox"} {
			t.Run(tc.driver+"/"+table, func(t *testing.T) {
				script, err := gormoutbox.DDL(tc.driver, table)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, st := range script.Steps {
					got = append(got, st.Statements...)
				}
				want := migrateStatements(t, tc.d, table)
				if !slices.Equal(got, want) {
					t.Errorf("script:\n%s\n\nMigrate ran:\n%s", strings.Join(got, ";\n"), strings.Join(want, ";\n"))
				}
				if script.LatestVersion() != tc.latest || len(script.Steps) != tc.latest {
					t.Errorf("script has %d steps up to version %d; want versions 1..%d", len(script.Steps), script.LatestVersion(), tc.latest)
				}
				q := func(s string) string {
					if tc.driver == "mysql" {
						return "`" + s + "`"
					}
					return `"` + s + `"`
				}
				mt := q(table + "_migrations")
				if schema, name, ok := strings.Cut(table, "."); ok {
					mt = q(schema) + "." + q(name+"_migrations")
				}
				for i, st := range script.Steps {
					if st.Version != i+1 {
						t.Errorf("step %d has version %d", i, st.Version)
					}
					last := st.Statements[len(st.Statements)-1]
					if wantRec := fmt.Sprintf("INSERT INTO %s (version) VALUES (%d)", mt, st.Version); last != wantRec {
						t.Errorf("step %d ends with %q, want %q", st.Version, last, wantRec)
					}
				}
				if first := script.Steps[0].Statements[0]; !strings.HasPrefix(first, "CREATE TABLE IF NOT EXISTS "+mt+" ") {
					t.Errorf("script starts with %q, want the creation of %s", first, mt)
				}
				text := script.String()
				for _, s := range []string{"-- version 1\n", fmt.Sprintf("-- version %d\n", tc.latest),
					fmt.Sprintf("schema version %d", tc.latest), fmt.Sprintf("VALUES (%d);\n", tc.latest)} {
					if !strings.Contains(text, s) {
						t.Errorf("script text has no %q:\n%s", s, text)
					}
				}
				if n := strings.Count(text, ";\n"); n < len(got) {
					t.Errorf("script text ends %d statements with \";\", want at least %d", n, len(got))
				}
			})
		}
	}
}

func TestDDLErrors(t *testing.T) {
	for _, tc := range []struct {
		driver, table string
		want          error
	}{
		{"oracle", "outbox", gormoutbox.ErrUnsupportedDialect},
		{"", "outbox", gormoutbox.ErrUnsupportedDialect},
		{"sqlite", "outbox", gormoutbox.ErrUnsupportedDialect},
		{"postgres", "bad-name", gormoutbox.ErrInvalidConfig},
		{"mysql", "a.b.c", gormoutbox.ErrInvalidConfig},
		{"mysql", strings.Repeat("x", dialects.MaxTableNameLen+1), gormoutbox.ErrInvalidConfig},
		{"postgres", `out"box`, gormoutbox.ErrInvalidConfig},
	} {
		s, err := gormoutbox.DDL(tc.driver, tc.table)
		if !errors.Is(err, tc.want) || len(s.Steps) != 0 {
			t.Errorf("DDL(%q, %q) = %d steps, %v; want an error wrapping %v", tc.driver, tc.table, len(s.Steps), err, tc.want)
		}
	}
	// The driver names the plugin accepts, and the default table.
	for _, driver := range []string{"postgres", "pgx", "mysql"} {
		s, err := gormoutbox.DDL(driver, "")
		if err != nil || s.Table.String() != gormoutbox.DefaultTable || len(s.Steps) == 0 {
			t.Errorf("DDL(%q, \"\") = table %q, %d steps, %v; want the default table", driver, s.Table, len(s.Steps), err)
		}
	}
}
