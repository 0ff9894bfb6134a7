package main

import (
	"context"
	"database/sql"
	"encoding/hex"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	gomysql "github.com/go-sql-driver/mysql"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/dialects/mysql"
	"github.com/go-outbox/outbox/dialects/postgres"
	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/inbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// applyAsAdmin runs the SQL text script on o's schema (database) in one
// call, as a DBA would with psql -f or mysql < file: the statements are
// not split here.
func (o *outbox) applyAsAdmin(t *testing.T, driver, script string) {
	t.Helper()
	var (
		db  *sql.DB
		err error
	)
	if driver == "mysql" {
		mc, perr := gomysql.ParseDSN(o.dsn)
		if perr != nil {
			t.Fatal(perr)
		}
		mc.MultiStatements = true
		db, err = sql.Open("mysql", mc.FormatDSN())
	} else {
		db, err = sql.Open("pgx", o.dsn) // no arguments: the simple protocol, which takes many statements
	}
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Exec(script); err != nil {
		t.Fatalf("apply the printed DDL: %v", err)
	}
}

// describe returns the definition of every table, index, constraint,
// trigger and function of o's schema (database), names of the schema
// left out, so that two schemas can be compared.
func (o *outbox) describe(t *testing.T, driver string) string {
	t.Helper()
	var lines []string
	add := func(q string) {
		t.Helper()
		var rows []string
		if err := o.db.Raw(q).Scan(&rows).Error; err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		lines = append(lines, rows...)
	}
	if driver == "mysql" {
		var tables []string
		if err := o.db.Raw(`SELECT table_name FROM information_schema.tables WHERE table_schema = DATABASE() ORDER BY table_name`).
			Scan(&tables).Error; err != nil {
			t.Fatal(err)
		}
		for _, tb := range tables {
			var name, def string
			if err := o.db.Raw("SHOW CREATE TABLE `"+tb+"`").Row().Scan(&name, &def); err != nil {
				t.Fatal(err)
			}
			lines = append(lines, def)
		}
		return strings.Join(lines, "\n")
	}
	var schema string
	if err := o.db.Raw(`SELECT current_schema()`).Scan(&schema).Error; err != nil {
		t.Fatal(err)
	}
	add(`SELECT table_name || '.' || column_name || ' ' || data_type || ' ' || is_nullable || ' ' ||
	COALESCE(column_default, '') || ' ' || is_identity || ' ' || COALESCE(identity_generation, '')
FROM information_schema.columns WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position`)
	add(`SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY indexname`)
	add(`SELECT conname || ' ' || pg_get_constraintdef(oid) FROM pg_constraint
WHERE connamespace = current_schema()::regnamespace ORDER BY conname`)
	add(`SELECT tgname || ' ' || tgenabled::text || ' ' || pg_get_triggerdef(oid) FROM pg_trigger
WHERE NOT tgisinternal AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace = current_schema()::regnamespace) ORDER BY tgname`)
	add(`SELECT proname || ' ' || prosrc FROM pg_proc WHERE pronamespace = current_schema()::regnamespace ORDER BY proname`)
	return strings.ReplaceAll(strings.Join(lines, "\n"), schema+".", "")
}

type versionRow struct {
	Version   int
	AppliedAt time.Time
}

func (o *outbox) versions(t *testing.T, table string) []versionRow {
	t.Helper()
	var rows []versionRow
	if err := o.db.Raw(`SELECT version, applied_at FROM ` + table + ` ORDER BY version`).Scan(&rows).Error; err != nil {
		t.Fatalf("read %s: %v", table, err)
	}
	return rows
}

// The printed DDL, applied by an admin, gives the tables Migrate creates,
// with their versions recorded: Migrate and outboxctl migrate then do
// nothing, and the plugin works on them.
func TestMigratePrintApplied(t *testing.T) {
	forDialects(t, func(t *testing.T, o *outbox) {
		driver := "postgres"
		if o.db.Dialector.Name() == "mysql" {
			driver = "mysql"
		}
		// No DSN: the DDL comes without a database.
		r := ctl(t, "", "migrate", "-print", "-driver", driver, "-inbox-table", "inbox")
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("migrate -print: %s", r)
		}
		for _, s := range []string{"-- version 1", "-- version 3", "outbox_migrations", "inbox_migrations",
			"INSERT INTO", "CREATE TABLE IF NOT EXISTS"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("printed DDL has no %q", s)
			}
		}
		o.applyAsAdmin(t, driver, r.stdout)

		before := o.describe(t, driver)
		outboxV, inboxV := o.versions(t, "outbox_migrations"), o.versions(t, "inbox_migrations")
		latest := mysql.LatestVersion
		if driver == "postgres" {
			latest = postgres.LatestVersion
		}
		if len(outboxV) != latest || outboxV[latest-1].Version != latest || len(inboxV) != 1 || inboxV[0].Version != 1 {
			t.Fatalf("versions recorded by the DDL: outbox %+v, inbox %+v", outboxV, inboxV)
		}

		// Migrate, through the library and through outboxctl: nothing to do.
		p := o.db.Config.Plugins[gormoutbox.PluginName].(*gormoutbox.Plugin)
		if err := p.Migrate(context.Background()); err != nil {
			t.Fatalf("Migrate after the DDL: %v", err)
		}
		if err := inbox.MigrateTable(context.Background(), o.db, "inbox"); err != nil {
			t.Fatalf("inbox.MigrateTable after the DDL: %v", err)
		}
		r = o.mustCtl(t, 0, "migrate", "-inbox-table", "inbox")
		if !strings.Contains(r.stdout, fmt.Sprintf("outbox table outbox on %s is migrated (schema version %d)", driver, latest)) ||
			!strings.Contains(r.stdout, "inbox table inbox on "+driver+" is migrated (schema version 1)") {
			t.Errorf("migrate after the DDL: %s", r)
		}
		if after := o.describe(t, driver); after != before {
			t.Errorf("Migrate changed the tables the DDL made:\nbefore:\n%s\nafter:\n%s", before, after)
		}
		if v := o.versions(t, "outbox_migrations"); !slices.Equal(v, outboxV) {
			t.Errorf("outbox versions after Migrate %+v, want %+v as the DDL recorded them", v, outboxV)
		}
		if v := o.versions(t, "inbox_migrations"); !slices.Equal(v, inboxV) {
			t.Errorf("inbox versions after Migrate %+v, want %+v as the DDL recorded them", v, inboxV)
		}

		// The same tables as Migrate makes in a database of its own.
		ref := openOutbox(t, testenv.Dialects()[slices.IndexFunc(testenv.Dialects(), func(d testenv.Dialect) bool {
			return d.Name == driver
		})])
		ref.mustCtl(t, 0, "migrate", "-inbox-table", "inbox")
		if want := ref.describe(t, driver); before != want {
			t.Errorf("tables from the DDL:\n%s\n\ntables from Migrate:\n%s", before, want)
		}

		// The plugin works on them.
		ids := o.write(t, "orders", 3)
		o.kill(t, ids[0])
		rep := decode[statusReport](t, o.mustCtl(t, 0, "status", "-json"))
		if rep.Pending != 2 || rep.Dead != 1 {
			t.Errorf("status on the tables from the DDL: %+v", rep)
		}
		o.mustCtl(t, 0, "replay", strconv.FormatInt(ids[0], 10))
	})
}

func TestMigratePrintUsage(t *testing.T) {
	t.Parallel()
	// A DSN nothing listens on: -print must not connect.
	const pw = "pw-not-to-print"
	mysqlDSN := "u:" + pw + "@tcp(127.0.0.1:1)/db"
	for _, tc := range []struct {
		dsn  string
		args []string
		code int
		want []string // in stdout (exit 0) or stderr
		not  []string
	}{
		{"", []string{"migrate", "-print", "-driver", "postgres"}, 0,
			[]string{`CREATE TABLE IF NOT EXISTS "outbox" (`, `"outbox_migrations"`, "VALUES (3);", "psql", "$$;"},
			[]string{"inbox", "`"}},
		{"", []string{"-driver", "pgx", "migrate", "-print"}, 0, []string{`"outbox"`}, nil},
		{"", []string{"migrate", "-print", "-driver", "mysql", "-table", "events.outbox", "-inbox-table", "events.consumed"}, 0,
			[]string{"CREATE TABLE IF NOT EXISTS `events`.`outbox` (", "`events`.`outbox_migrations`",
				"CREATE TABLE IF NOT EXISTS `events`.`consumed` (", "INSERT INTO `events`.`consumed_migrations` (version) VALUES (1);",
				"MySQL commits each DDL statement"},
			[]string{`"events"`, `"outbox"`, "psql"}},
		// The driver guessed from a DSN, which is never used.
		{mysqlDSN, []string{"migrate", "-print"}, 0, []string{"ENGINE=InnoDB"}, []string{pw}},
		{"", []string{"migrate", "-print"}, 2, []string{"-driver postgres or -driver mysql"}, nil},
		{"", []string{"migrate", "-print", "-driver", "oracle"}, 2, []string{`-driver "oracle": want postgres or mysql`}, nil},
		{"", []string{"migrate", "-print", "-driver", "postgres", "-table", "bad-name"}, 2, []string{"-table", "bad-name"}, nil},
		{"", []string{"migrate", "-print", "-driver", "mysql", "-inbox-table", "a.b.c"}, 2, []string{"-inbox-table", "a.b.c"}, nil},
		{"", []string{"migrate", "-print", "-driver", "mysql", "extra"}, 2, []string{`"extra"`}, nil},
		{"", []string{"migrate", "-print=maybe", "-driver", "mysql"}, 2, []string{"-print"}, nil},
		{mysqlDSN, []string{"migrate", "-inbox-table", "bad-name"}, 2, []string{"-inbox-table"}, []string{pw}},
		{"", []string{"migrate", "-inbox-table", "inbox"}, 2, []string{DSNEnv}, nil},
	} {
		r := ctl(t, tc.dsn, tc.args...)
		out := r.stdout
		if tc.code != 0 {
			out = r.stderr
			if r.stdout != "" || !strings.Contains(r.stderr, "outboxctl help migrate") {
				t.Errorf("%v: want nothing on stdout and a pointer to the help, got %s", tc.args, r)
			}
		}
		if r.code != tc.code {
			t.Errorf("%v: want exit %d, got %s", tc.args, tc.code, r)
			continue
		}
		for _, s := range tc.want {
			if !strings.Contains(out, s) {
				t.Errorf("%v: no %q in\n%s", tc.args, s, out)
			}
		}
		for _, s := range tc.not {
			if strings.Contains(r.stdout+r.stderr, s) {
				t.Errorf("%v: %q printed:\n%s", tc.args, s, r)
			}
		}
	}
	// What -print prints is the library's DDL.
	want, err := gormoutbox.DDL("postgres", "outbox")
	if err != nil {
		t.Fatal(err)
	}
	if r := ctl(t, "", "migrate", "-print", "-driver", "postgres"); !strings.HasSuffix(r.stdout, "\n"+want.String()) {
		t.Errorf("migrate -print does not end with gormoutbox.DDL's script:\n%s", r.stdout)
	}
	r := ctl(t, "", "help", "migrate")
	for _, s := range []string{"-print", "-inbox-table", "goose", "no DSN"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("help migrate does not mention %q:\n%s", s, r.stdout)
		}
	}
}

// dead show prints at most 4 KB of a payload unless -full is given, and
// says how much it left out; empty fields read "(none)".
func TestDeadShowLongPayload(t *testing.T) {
	forDialects(t, func(t *testing.T, o *outbox) {
		o.migrate(t)
		// Text with three-byte characters across the 4096-byte mark.
		text := strings.Repeat("a", 4094) + strings.Repeat("€", 10) + "THE-END"
		bin := make([]byte, 10000)
		for i := range bin {
			bin[i] = byte(i)
		}
		if err := o.db.Transaction(func(tx *gorm.DB) error {
			return gormoutbox.Publish(tx,
				gormoutbox.Event{Topic: "big", Key: "text", Type: "Big", Payload: text},
				gormoutbox.Event{Topic: "big", Key: "bin", Type: "Big", Payload: bin},
				gormoutbox.Event{Topic: "big", Type: "Small", Payload: "small"})
		}); err != nil {
			t.Fatal(err)
		}
		var ids []int64
		if err := o.db.Raw(`SELECT id FROM outbox WHERE topic = 'big' ORDER BY id`).Scan(&ids).Error; err != nil || len(ids) != 3 {
			t.Fatalf("ids %v, %v", ids, err)
		}
		o.kill(t, ids...)
		id := func(i int) string { return strconv.FormatInt(ids[i], 10) }

		r := o.mustCtl(t, 0, "dead", "show", id(0))
		shown := 4094 + 0 // the "a"s; the next "€" would end past 4096
		if !strings.Contains(r.stdout, fmt.Sprintf("payload (%d bytes, the first %d shown):\n", len(text), shown)) ||
			!strings.Contains(r.stdout, fmt.Sprintf("… %d more bytes not shown: outboxctl dead show -full %s", len(text)-shown, id(0))) ||
			strings.Contains(r.stdout, "THE-END") || strings.Contains(r.stdout, "€") {
			t.Errorf("dead show of a %d-byte text payload:\n%s", len(text), r.stdout)
		}
		if !utf8.ValidString(r.stdout) {
			t.Errorf("dead show cut a character in two")
		}
		for _, s := range []string{"aggregate type: (none)", "aggregate id:   (none)"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("dead show: no %q in\n%s", s, r.stdout)
			}
		}
		r = o.mustCtl(t, 0, "dead", "show", "-full", id(0))
		if !strings.Contains(r.stdout, fmt.Sprintf("payload (%d bytes):\n%s\n", len(text), text)) || strings.Contains(r.stdout, "not shown") {
			t.Errorf("dead show -full: want the whole payload:\n%.300s…", r.stdout)
		}

		r = o.mustCtl(t, 0, "dead", "show", id(1))
		if !strings.Contains(r.stdout, "payload (10000 bytes, the first 4096 shown, binary, hex):\n"+hex.EncodeToString(bin[:4096])+"\n") ||
			!strings.Contains(r.stdout, "… 5904 more bytes not shown") {
			t.Errorf("dead show of a binary payload:\n%.500s", r.stdout)
		}
		r = o.mustCtl(t, 0, "dead", "show", "-full", id(1))
		if !strings.Contains(r.stdout, hex.EncodeToString(bin)+"\n") {
			t.Errorf("dead show -full of a binary payload: not all of it")
		}

		// JSON says so too.
		d := decode[deadLetter](t, o.mustCtl(t, 0, "dead", "show", "-json", id(0)))
		if d.Payload == nil || len(*d.Payload) != shown || !d.PayloadTruncated || d.PayloadBytes != len(text) {
			t.Errorf("dead show -json: payload of %d bytes, truncated %v, payload_bytes %d", len(deref(d.Payload)), d.PayloadTruncated, d.PayloadBytes)
		}
		d = decode[deadLetter](t, o.mustCtl(t, 0, "dead", "show", "-json", "-full", id(0)))
		if d.Payload == nil || *d.Payload != text || d.PayloadTruncated || d.PayloadBytes != len(text) {
			t.Errorf("dead show -json -full: truncated %v, payload_bytes %d", d.PayloadTruncated, d.PayloadBytes)
		}

		// A small payload, no key: nothing is cut, and the empty fields say so.
		r = o.mustCtl(t, 0, "dead", "show", id(2))
		for _, s := range []string{"key:            (none)", "payload (5 bytes):\nsmall\n", "aggregate type: (none)"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("dead show of a small event: no %q in\n%s", s, r.stdout)
			}
		}
		if strings.Contains(r.stdout, "not shown") {
			t.Errorf("dead show of a small payload says something was cut:\n%s", r.stdout)
		}
	})
}

func deref(s *string) string {
	if s == nil {
		return ""
	}
	return *s
}

// outboxctl under roles with only the privileges the README lists: the
// reading commands need SELECT; replay, resend and purge UPDATE and
// DELETE as well; migrate needs more.
func TestLeastPrivilegeCommands(t *testing.T) {
	forDialects(t, func(t *testing.T, o *outbox) {
		o.migrate(t)
		ids := o.write(t, "orders", 4)
		o.kill(t, ids[0], ids[1])
		now := time.Now().UTC()
		o.exec(t, `UPDATE outbox SET published_at = ? WHERE id = ?`, now.Add(-48*time.Hour), ids[3])

		reader := testenv.NewRole(t, o.db, "ctl_reader")
		reader.Grant(t, "SELECT", "outbox")
		for _, args := range [][]string{{"status", "-all"}, {"dead", "list"}, {"dead", "show", strconv.FormatInt(ids[0], 10)}, {"failed", "list"}} {
			if r := ctl(t, reader.DSN(), args...); r.code != 0 {
				t.Errorf("%v with SELECT: %s", args, r)
			}
		}
		for _, args := range [][]string{{"replay", "-all"}, {"purge", "-older-than", "24h"}, {"migrate"}} {
			if r := ctl(t, reader.DSN(), args...); r.code != 1 || !strings.Contains(strings.ToLower(r.stderr), "denied") {
				t.Errorf("%v with SELECT only: want exit 1, permission denied; got %s", args, r)
			}
		}

		operator := testenv.NewRole(t, o.db, "ctl_operator")
		// replay draws new x-sequence numbers from the id sequence through
		// placeholder rows it inserts and deletes
		operator.Grant(t, "SELECT, INSERT, UPDATE, DELETE", "outbox")
		if r := ctl(t, operator.DSN(), "replay", strconv.FormatInt(ids[0], 10)); r.code != 0 || !strings.Contains(r.stdout, "replayed 1 of 1") {
			t.Errorf("replay with SELECT, INSERT, UPDATE, DELETE: %s", r)
		}
		if r := ctl(t, operator.DSN(), "resend", "-all"); r.code != 0 {
			t.Errorf("resend with SELECT, UPDATE: %s", r)
		}
		if r := ctl(t, operator.DSN(), "purge", "-older-than", "24h"); r.code != 0 || !strings.Contains(r.stdout, "purged 1 rows") {
			t.Errorf("purge with SELECT, DELETE: %s", r)
		}
		if r := ctl(t, operator.DSN(), "migrate"); r.code != 1 {
			t.Errorf("migrate without CREATE: want exit 1, got %s", r)
		}
		if st := o.states(t); len(st) != 3 || st[ids[0]].Dead != 0 || st[ids[1]].Dead != 1 {
			t.Errorf("rows after replay and purge: %+v", st)
		}
	})
}
