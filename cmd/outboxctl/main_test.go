package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	gomysql "github.com/go-sql-driver/mysql"
	"gorm.io/gorm"

	"github.com/go-outbox/outbox/gormoutbox"
	"github.com/go-outbox/outbox/internal/testenv"
)

// outbox is a fresh database with the plugin registered, and the DSN
// outboxctl reaches it with.
type outbox struct {
	db  *gorm.DB
	dsn string
}

func openOutbox(t *testing.T, d testenv.Dialect) *outbox {
	t.Helper()
	db := d.Open(t, nil)
	var dsn string
	switch d.Name {
	case "postgres":
		var schema string
		if err := db.Raw(`SELECT current_schema()`).Scan(&schema).Error; err != nil || schema == "" {
			t.Fatalf("current schema: %q, %v", schema, err)
		}
		u, err := url.Parse(testenv.PostgresURL(t))
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("search_path", schema)
		u.RawQuery = q.Encode()
		dsn = u.String()
	case "mysql":
		var name string
		if err := db.Raw(`SELECT DATABASE()`).Scan(&name).Error; err != nil || name == "" {
			t.Fatalf("current database: %q, %v", name, err)
		}
		mc, err := gomysql.ParseDSN(testenv.MySQLDSN(t))
		if err != nil {
			t.Fatal(err)
		}
		mc.DBName = name
		dsn = mc.FormatDSN()
	default:
		t.Fatalf("unknown dialect %s", d.Name)
	}
	if err := db.Use(gormoutbox.New(gormoutbox.Config{})); err != nil {
		t.Fatal(err)
	}
	return &outbox{db: db, dsn: dsn}
}

type result struct {
	code           int
	stdout, stderr string
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
}

// ctl runs outboxctl in-process with $OUTBOX_DSN set to dsn.
func ctl(t *testing.T, dsn string, args ...string) result {
	t.Helper()
	var out, errb bytes.Buffer
	env := func(k string) string {
		if k == DSNEnv {
			return dsn
		}
		return ""
	}
	code := run(context.Background(), args, env, &out, &errb)
	return result{code, out.String(), errb.String()}
}

// mustCtl runs outboxctl and fails the test unless it exits with want.
func (o *outbox) mustCtl(t *testing.T, want int, args ...string) result {
	t.Helper()
	r := ctl(t, o.dsn, args...)
	if r.code != want {
		t.Fatalf("outboxctl %s: want exit %d, got %s", strings.Join(args, " "), want, r)
	}
	return r
}

// migrate migrates the outbox through outboxctl.
func (o *outbox) migrate(t *testing.T) {
	t.Helper()
	r := o.mustCtl(t, 0, "migrate")
	if !strings.Contains(r.stdout, "schema version") {
		t.Fatalf("migrate printed %q", r.stdout)
	}
}

// write publishes n events to topic and returns their outbox ids.
func (o *outbox) write(t *testing.T, topic string, n int) []int64 {
	t.Helper()
	evs := make([]gormoutbox.Event, n)
	for i := range evs {
		evs[i] = gormoutbox.Event{
			Topic: topic, Key: fmt.Sprintf("key-%d", i), Type: "ThingHappened",
			AggregateType: "thing", AggregateID: strconv.Itoa(i),
			Payload: map[string]any{"n": i, "topic": topic},
			Headers: map[string]string{"x-test": "yes"},
		}
	}
	if err := o.db.Transaction(func(tx *gorm.DB) error { return gormoutbox.Publish(tx, evs...) }); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	var ids []int64
	if err := o.db.Raw(`SELECT id FROM outbox WHERE topic = ? ORDER BY id`, topic).Scan(&ids).Error; err != nil {
		t.Fatal(err)
	}
	if len(ids) != n {
		t.Fatalf("topic %s: %d rows, want %d", topic, len(ids), n)
	}
	return ids
}

func (o *outbox) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if err := o.db.Exec(sql, args...).Error; err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// kill dead-letters ids as the relay would.
func (o *outbox) kill(t *testing.T, ids ...int64) {
	t.Helper()
	o.exec(t, `UPDATE outbox SET dead_at = ?, last_error = 'boom', attempts = 3 WHERE id IN ?`, time.Now().UTC(), ids)
}

type rowState struct {
	ID       int64
	Attempts int
	Dead     int
}

// states returns the attempts and deadness of every row, by id.
func (o *outbox) states(t *testing.T) map[int64]rowState {
	t.Helper()
	var rows []rowState
	if err := o.db.Raw(`SELECT id, attempts, CASE WHEN dead_at IS NULL THEN 0 ELSE 1 END AS dead FROM outbox ORDER BY id`).
		Scan(&rows).Error; err != nil {
		t.Fatal(err)
	}
	m := map[int64]rowState{}
	for _, r := range rows {
		m[r.ID] = r
	}
	return m
}

func forDialects(t *testing.T, f func(t *testing.T, o *outbox)) {
	t.Parallel()
	for _, d := range testenv.Dialects() {
		t.Run(d.Name, func(t *testing.T) {
			t.Parallel()
			f(t, openOutbox(t, d))
		})
	}
}

func decode[T any](t *testing.T, r result) T {
	t.Helper()
	var v T
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("decode JSON: %v\n%s", err, r)
	}
	return v
}

func TestMigrateThenStatusEmpty(t *testing.T) {
	forDialects(t, func(t *testing.T, o *outbox) {
		// Before migrate: a database error with a hint.
		r := o.mustCtl(t, 1, "status")
		if !strings.Contains(r.stderr, "outboxctl migrate") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("status before migrate: want one line naming 'outboxctl migrate', got %q", r.stderr)
		}
		o.migrate(t)
		o.migrate(t) // idempotent

		rep := decode[statusReport](t, o.mustCtl(t, 0, "status", "-json"))
		if rep.Pending != 0 || rep.Dead != 0 || rep.OldestPending != nil || rep.Topics == nil || len(rep.Topics) != 0 || rep.Table != "outbox" {
			t.Errorf("status of an empty outbox: %+v", rep)
		}
		r = o.mustCtl(t, 0, "status")
		for _, re := range []string{`(?m)^pending:\s+0$`, `(?m)^dead:\s+0$`, `(?m)^oldest pending:\s+-$`} {
			if !regexp.MustCompile(re).MatchString(r.stdout) {
				t.Errorf("status output does not match %s:\n%s", re, r.stdout)
			}
		}
		if strings.Contains(r.stdout, "TOPIC") {
			t.Errorf("empty outbox shows a topic table:\n%s", r.stdout)
		}

		// Another table, given with -table after the command name.
		o.mustCtl(t, 0, "migrate", "-table", "other_outbox")
		rep = decode[statusReport](t, o.mustCtl(t, 0, "status", "-table", "other_outbox", "-json"))
		if rep.Table != "other_outbox" || rep.Pending != 0 {
			t.Errorf("status -table other_outbox: %+v", rep)
		}
	})
}

func TestStatusCounts(t *testing.T) {
	forDialects(t, func(t *testing.T, o *outbox) {
		o.migrate(t)
		orders := o.write(t, "orders", 5)
		payments := o.write(t, "payments", 3)
		audit := o.write(t, "audit", 2)
		o.kill(t, orders[1], orders[3])
		o.kill(t, payments...)
		o.exec(t, `UPDATE outbox SET published_at = ? WHERE id = ?`, time.Now().UTC(), audit[0])
		o.exec(t, `UPDATE outbox SET created_at = ? WHERE id = ?`, time.Now().UTC().Add(-time.Hour), orders[0])

		rep := decode[statusReport](t, o.mustCtl(t, 0, "status", "-json"))
		if rep.Pending != 4 || rep.Dead != 5 {
			t.Errorf("pending %d, dead %d; want 4 and 5", rep.Pending, rep.Dead)
		}
		want := []topicCount{{Topic: "audit", Pending: 1}, {Topic: "orders", Pending: 3, Dead: 2}, {Topic: "payments", Dead: 3}}
		if !slices.Equal(rep.Topics, want) {
			t.Errorf("topics %+v, want %+v", rep.Topics, want)
		}
		if rep.OldestPending == nil || rep.OldestPendingAgeSeconds < 3500 || rep.OldestPendingAgeSeconds > 4000 {
			t.Errorf("oldest pending %v, age %vs; want about an hour", rep.OldestPending, rep.OldestPendingAgeSeconds)
		}

		r := o.mustCtl(t, 0, "status")
		for _, re := range []string{
			`(?m)^pending:\s+4$`, `(?m)^dead:\s+5$`, `(?m)^oldest pending:\s+1h0m\d+s \(created `,
			`(?m)^\s*TOPIC\s+PENDING\s+BLOCKED\s+AWAITING_ACK\s+FAILED\s+DEAD\s*$`, `(?m)^\s*audit\s+1\s+0\s+0\s+0\s+0\s*$`,
			`(?m)^\s*orders\s+3\s+0\s+0\s+0\s+2\s*$`, `(?m)^\s*payments\s+0\s+0\s+0\s+0\s+3\s*$`, `(?m)^blocked:\s+0$`,
		} {
			if !regexp.MustCompile(re).MatchString(r.stdout) {
				t.Errorf("status output does not match %s:\n%s", re, r.stdout)
			}
		}
		// The topic table is aligned: every row of it has the same width.
		lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
		table := lines[len(lines)-4:]
		for _, l := range table {
			if len(l) != len(table[0]) {
				t.Errorf("topic table not aligned:\n%s", strings.Join(table, "\n"))
				break
			}
		}
	})
}

// Rows behind a dead row of their key are shown as blocked.
func TestStatusBlocked(t *testing.T) {
	forDialects(t, func(t *testing.T, o *outbox) {
		o.migrate(t)
		evs := make([]gormoutbox.Event, 3)
		for i := range evs {
			evs[i] = gormoutbox.Event{Topic: "stuck", Key: "one-key", Type: "ThingHappened", Payload: map[string]any{"n": i}}
		}
		if err := o.db.Transaction(func(tx *gorm.DB) error { return gormoutbox.Publish(tx, evs...) }); err != nil {
			t.Fatalf("Publish: %v", err)
		}
		other := o.write(t, "free", 1)
		var ids []int64
		if err := o.db.Raw(`SELECT id FROM outbox WHERE topic = 'stuck' ORDER BY id`).Scan(&ids).Error; err != nil {
			t.Fatal(err)
		}
		o.kill(t, ids[0])

		rep := decode[statusReport](t, o.mustCtl(t, 0, "status", "-json"))
		if rep.Pending != 3 || rep.Dead != 1 || rep.Blocked != 2 {
			t.Errorf("pending %d, dead %d, blocked %d; want 3, 1 and 2 (row %d of topic free is not blocked)",
				rep.Pending, rep.Dead, rep.Blocked, other[0])
		}
		r := o.mustCtl(t, 0, "status")
		for _, re := range []string{`(?m)^blocked:\s+2$`, `(?m)^\s*stuck\s+2\s+2\s+0\s+0\s+1\s*$`, `(?m)^\s*free\s+1\s+0\s+0\s+0\s+0\s*$`} {
			if !regexp.MustCompile(re).MatchString(r.stdout) {
				t.Errorf("status output does not match %s:\n%s", re, r.stdout)
			}
		}
	})
}

func TestDeadListAndShow(t *testing.T) {
	forDialects(t, func(t *testing.T, o *outbox) {
		o.migrate(t)
		orders := o.write(t, "orders", 3)
		payments := o.write(t, "payments", 1)
		o.kill(t, orders[0], orders[2], payments[0])
		long := strings.Repeat("x", 200) + "END"
		o.exec(t, `UPDATE outbox SET last_error = ? WHERE id = ?`, long, orders[2])

		list := decode[[]deadLetter](t, o.mustCtl(t, 0, "dead", "list", "-json"))
		var ids []int64
		for _, d := range list {
			ids = append(ids, d.ID)
		}
		if want := []int64{orders[0], orders[2], payments[0]}; !slices.Equal(ids, want) {
			t.Fatalf("dead list ids %v, want %v", ids, want)
		}
		d0 := list[0]
		if d0.Topic != "orders" || d0.Key == nil || *d0.Key != "key-0" || d0.Type != "ThingHappened" ||
			d0.Attempts != 3 || d0.LastError != "boom" || d0.DeadAt == nil {
			t.Errorf("dead list row 0: %+v", d0)
		}

		list = decode[[]deadLetter](t, o.mustCtl(t, 0, "dead", "list", "-topic", "payments", "-json"))
		if len(list) != 1 || list[0].ID != payments[0] {
			t.Errorf("dead list -topic payments: %+v", list)
		}
		list = decode[[]deadLetter](t, o.mustCtl(t, 0, "dead", "list", "-after", strconv.FormatInt(orders[0], 10), "-limit", "1", "-json"))
		if len(list) != 1 || list[0].ID != orders[2] {
			t.Errorf("dead list -after %d -limit 1: %+v", orders[0], list)
		}

		r := o.mustCtl(t, 0, "dead", "list", "-topic", "orders")
		if !regexp.MustCompile(`(?m)^ID\s+TOPIC\s+KEY\s+TYPE\s+ATTEMPTS\s+DEAD_AT\s+LAST_ERROR$`).MatchString(r.stdout) ||
			!regexp.MustCompile(fmt.Sprintf(`(?m)^%d\s+orders\s+key-0\s+ThingHappened\s+3\s+\d{4}-\d\d-\d\dT\S+\s+boom$`, orders[0])).MatchString(r.stdout) {
			t.Errorf("dead list table:\n%s", r.stdout)
		}
		if strings.Contains(r.stdout, "END") || !strings.Contains(r.stdout, "xxx…") || strings.Contains(r.stdout, "payments") {
			t.Errorf("dead list: want the long error truncated and only orders:\n%s", r.stdout)
		}
		r = o.mustCtl(t, 0, "dead", "list", "-limit", "2")
		if !strings.Contains(r.stdout, fmt.Sprintf("-after %d", orders[2])) {
			t.Errorf("dead list -limit 2: want a hint to continue after %d:\n%s", orders[2], r.stdout)
		}

		r = o.mustCtl(t, 0, "dead", "show", strconv.FormatInt(orders[2], 10))
		for _, s := range []string{"topic:", "orders", "key-2", "ThingHappened", "attempts:", long,
			"x-test: yes", "content-type: application/json", `"n":2`, `"topic":"orders"`} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("dead show %d: no %q in\n%s", orders[2], s, r.stdout)
			}
		}
		full := decode[deadLetter](t, o.mustCtl(t, 0, "dead", "show", "-json", strconv.FormatInt(orders[0], 10)))
		if full.ID != orders[0] || full.Payload == nil || !strings.Contains(*full.Payload, `"n":0`) ||
			full.Headers["x-test"] != "yes" || full.EventID == "" || full.AggregateID != "0" || full.LastError != "boom" {
			t.Errorf("dead show -json: %+v", full)
		}

		for _, id := range []string{strconv.FormatInt(orders[1], 10), "999999"} {
			r = o.mustCtl(t, 3, "dead", "show", id)
			if !strings.Contains(r.stderr, id+" is not a dead letter") {
				t.Errorf("dead show %s: stderr %q", id, r.stderr)
			}
		}
		r = o.mustCtl(t, 2, "dead", "show", "abc")
		if !strings.Contains(r.stderr, `"abc"`) {
			t.Errorf("dead show abc: stderr %q", r.stderr)
		}
		o.mustCtl(t, 2, "dead", "list", "-limit", "0")
		o.mustCtl(t, 2, "dead", "show")
	})
}

func TestReplay(t *testing.T) {
	forDialects(t, func(t *testing.T, o *outbox) {
		o.migrate(t)
		orders := o.write(t, "orders", 4)
		payments := o.write(t, "payments", 3)
		o.kill(t, append(slices.Clone(orders), payments...)...)

		isPending := func(id int64) bool {
			s, ok := o.states(t)[id]
			return ok && s.Dead == 0 && s.Attempts == 0
		}
		id0 := strconv.FormatInt(orders[0], 10)
		r := o.mustCtl(t, 0, "replay", id0)
		if !strings.Contains(r.stdout, "replayed 1 of 1") || !isPending(orders[0]) || isPending(orders[1]) {
			t.Fatalf("replay %s: %s\nstates %v", id0, r, o.states(t))
		}
		// No longer dead: not found, and said so.
		r = o.mustCtl(t, 3, "replay", id0)
		if !strings.Contains(r.stderr, id0) {
			t.Errorf("replay of a pending row: stderr %q does not name %s", r.stderr, id0)
		}
		// One dead, one missing: the dead one is replayed, the missing one named.
		id1 := strconv.FormatInt(orders[1], 10)
		r = o.mustCtl(t, 3, "replay", id1, "999999")
		if !isPending(orders[1]) || !strings.Contains(r.stderr, "999999") || strings.Contains(r.stderr, id1) {
			t.Errorf("replay %s 999999: %s", id1, r)
		}

		r = o.mustCtl(t, 0, "replay", "-topic", "orders")
		if !strings.Contains(r.stdout, "replayed 2 dead letters") {
			t.Errorf("replay -topic orders: %s", r)
		}
		st := o.states(t)
		for _, id := range orders {
			if !isPending(id) {
				t.Errorf("order row %d not pending after replay -topic orders: %+v", id, st[id])
			}
		}
		for _, id := range payments {
			if st[id].Dead != 1 || st[id].Attempts != 3 {
				t.Errorf("payment row %d touched by replay -topic orders: %+v", id, st[id])
			}
		}

		r = o.mustCtl(t, 0, "replay", "-all")
		if !strings.Contains(r.stdout, "replayed 3 dead letters") {
			t.Errorf("replay -all: %s", r)
		}
		for id, s := range o.states(t) {
			if s.Dead != 0 || s.Attempts != 0 {
				t.Errorf("row %d after replay -all: %+v", id, s)
			}
		}
		rep := decode[statusReport](t, o.mustCtl(t, 0, "status", "-json"))
		if rep.Pending != 7 || rep.Dead != 0 {
			t.Errorf("status after replay -all: %+v", rep)
		}

		o.mustCtl(t, 2, "replay")
		o.mustCtl(t, 2, "replay", "-all", "-topic", "orders")
		o.mustCtl(t, 2, "replay", "-all", id0)
		r = o.mustCtl(t, 2, "replay", id0, "-all")
		if !strings.Contains(r.stderr, `"-all"`) {
			t.Errorf("replay ID -all: stderr %q", r.stderr)
		}
	})
}

func TestPurge(t *testing.T) {
	forDialects(t, func(t *testing.T, o *outbox) {
		o.migrate(t)
		ids := o.write(t, "orders", 6)
		now := time.Now().UTC()
		o.exec(t, `UPDATE outbox SET published_at = ? WHERE id IN ?`, now.Add(-48*time.Hour), ids[:2])
		o.exec(t, `UPDATE outbox SET published_at = ? WHERE id IN ?`, now.Add(-time.Hour), ids[2:4])
		o.kill(t, ids[5])
		o.exec(t, `UPDATE outbox SET created_at = ? WHERE id IN ?`, now.Add(-72*time.Hour), ids[4:])

		r := o.mustCtl(t, 0, "purge", "-older-than", "24h")
		if !strings.Contains(r.stdout, "purged 2 rows") {
			t.Errorf("purge: %s", r)
		}
		var left []int64
		for id := range o.states(t) {
			left = append(left, id)
		}
		slices.Sort(left)
		if !slices.Equal(left, ids[2:]) {
			t.Errorf("rows left %v, want %v", left, ids[2:])
		}
		r = o.mustCtl(t, 0, "purge", "-older-than", "1d")
		if !strings.Contains(r.stdout, "purged 0 rows") {
			t.Errorf("second purge: %s", r)
		}

		o.mustCtl(t, 2, "purge")
		r = o.mustCtl(t, 2, "purge", "-older-than", "soon")
		if !strings.Contains(r.stderr, "-older-than") {
			t.Errorf("purge -older-than soon: stderr %q", r.stderr)
		}
	})
}

func TestBadDSN(t *testing.T) {
	t.Parallel()
	const password = "s3cr3t-pa55"
	for _, tc := range []struct{ name, dsn, where string }{
		{"postgres-url", "postgres://outbox:" + password + "@127.0.0.1:1/outbox?sslmode=disable&connect_timeout=5", "postgres at 127.0.0.1:1"},
		{"postgres-kv", "host=127.0.0.1 port=1 user=outbox password=" + password + " dbname=outbox connect_timeout=5", "postgres at 127.0.0.1:1"},
		{"mysql", "outbox:" + password + "@tcp(127.0.0.1:1)/outbox?timeout=5s", "mysql at 127.0.0.1:1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			for _, args := range [][]string{{"status"}, {"-dsn", tc.dsn, "dead", "list"}, {"replay", "-dsn", tc.dsn, "-all"}} {
				r := ctl(t, tc.dsn, args...)
				if r.code != 1 {
					t.Errorf("%v: want exit 1, got %s", args, r)
				}
				if strings.Contains(r.stderr+r.stdout, password) {
					t.Errorf("%v: password printed: %s", args, r)
				}
				if !strings.Contains(r.stderr, tc.where) || strings.Count(r.stderr, "\n") != 1 {
					t.Errorf("%v: want one line naming %q, got %q", args, tc.where, r.stderr)
				}
			}
		})
	}
	t.Run("timeout", func(t *testing.T) {
		r := ctl(t, "outbox:"+password+"@tcp(127.0.0.1:1)/outbox", "-timeout", "1ns", "status")
		if r.code != 1 || strings.Contains(r.stderr, password) || !strings.Contains(r.stderr, "timed out after 1ns") {
			t.Errorf("-timeout 1ns: %s", r)
		}
	})
	t.Run("undecidable", func(t *testing.T) {
		r := ctl(t, "whatever-"+password, "status")
		if r.code != 2 || strings.Contains(r.stderr, password) || !strings.Contains(r.stderr, "-driver") {
			t.Errorf("DSN of no known form: %s", r)
		}
	})
	t.Run("unparsable", func(t *testing.T) {
		r := ctl(t, "postgres://outbox:"+password+"@[::1/db", "status")
		if r.code != 1 || strings.Contains(r.stderr, password) {
			t.Errorf("unparsable URL: %s", r)
		}
	})
	t.Run("none", func(t *testing.T) {
		r := ctl(t, "", "status")
		if r.code != 2 || !strings.Contains(r.stderr, DSNEnv) {
			t.Errorf("no DSN: %s", r)
		}
	})
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	dsn := "postgres://u:pw-not-to-print@127.0.0.1:1/db"
	for _, tc := range []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"frobnicate"}, `unknown command "frobnicate"`},
		{[]string{}, "no command"},
		{[]string{"-nope", "status"}, "-nope"},
		{[]string{"status", "-nope"}, "-nope"},
		{[]string{"status", "extra"}, `"extra"`},
		{[]string{"dead"}, "dead list"},
		{[]string{"dead", "bury"}, `"dead bury"`},
		{[]string{"-driver", "oracle", "status"}, `-driver "oracle"`},
		{[]string{"-shards", "0", "status"}, "-shards 0"},
		{[]string{"-table", "bad-name", "status"}, "-table"},
		{[]string{"help", "frobnicate"}, `"frobnicate"`},
	} {
		r := ctl(t, dsn, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) || strings.Contains(r.stderr, "pw-not-to-print") {
			t.Errorf("outboxctl %v: want exit 2 and %q in stderr, got %s", tc.args, tc.want, r)
		}
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	dsn := "postgres://u:pw-not-to-print@127.0.0.1:1/db"
	for _, args := range [][]string{{"--help"}, {"-h"}, {"help"}} {
		r := ctl(t, dsn, args...)
		if r.code != 0 || r.stderr != "" {
			t.Fatalf("%v: %s", args, r)
		}
		for _, s := range []string{"migrate", "status", "dead list", "dead show", "replay", "purge", "help",
			"-dsn", "-driver", "-table", "-shards", "-json", "-topic", "-all", "-older-than", "-after", "-limit",
			DSNEnv, "Exit codes", "0  success", "1  the operation failed", "2  usage error", "3  not found", "Examples"} {
			if !strings.Contains(r.stdout, s) {
				t.Errorf("%v: help does not mention %q", args, s)
			}
		}
	}
	for _, args := range [][]string{{"help", "status"}, {"status", "-h"}, {"help", "dead", "show"}, {"dead", "show", "--help"},
		{"help", "dead"}, {"help", "purge"}, {"replay", "-help"}} {
		r := ctl(t, dsn, args...)
		if r.code != 0 || !strings.Contains(r.stdout, "Usage: outboxctl") && !strings.Contains(r.stdout, "dead list") {
			t.Errorf("%v: %s", args, r)
		}
		if strings.Contains(r.stdout, "pw-not-to-print") {
			t.Errorf("%v: the DSN of $%s is printed:\n%s", args, DSNEnv, r.stdout)
		}
	}
	if r := ctl(t, dsn, "purge", "-h"); !strings.Contains(r.stdout, "-older-than") || !strings.Contains(r.stdout, "7d") {
		t.Errorf("purge -h: %s", r)
	}
}

func TestGuessDriver(t *testing.T) {
	t.Parallel()
	for dsn, want := range map[string]string{
		"postgres://u:p@h:5432/db":              "postgres",
		"postgresql://h/db":                     "postgres",
		"POSTGRES://h/db":                       "postgres",
		"host=h user=u dbname=db":               "postgres",
		"u:p@tcp(h:3306)/db?parseTime=true":     "mysql",
		"u@unix(/run/mysqld/mysqld.sock)/db":    "mysql",
		"tcp(h:3306)/db":                        "mysql",
		"mysql://u:p@h/db":                      "",
		"just-a-name":                           "",
		"u:p=q@tcp(h:3306)/db":                  "mysql",
		"host='my host' password='a b' user=u ": "postgres",
	} {
		if got := guessDriver(dsn); got != want {
			t.Errorf("guessDriver(%q) = %q, want %q", dsn, got, want)
		}
	}
	if got := target("postgres", "host='my host' port=5433 password='a b' user=u"); got != "my host:5433" {
		t.Errorf("target of a key=value DSN: %q", got)
	}
	s := scrubber("host=h password='a b c' user=u")("x password='a b c' y")
	if strings.Contains(s, "a b c") {
		t.Errorf("scrubbed: %q", s)
	}
}

// status shows every row state: awaiting an answer and failed by default,
// published and processed with -all.
func TestStatusAckStates(t *testing.T) {
	forDialects(t, func(t *testing.T, o *outbox) {
		o.migrate(t)
		evs := make([]gormoutbox.Event, 5)
		for i := range evs {
			evs[i] = gormoutbox.Event{Topic: "stock", Key: fmt.Sprint("k", i), Type: "StockChanged", Payload: i, AckTopic: "stock-acks"}
		}
		if err := o.db.Transaction(func(tx *gorm.DB) error { return gormoutbox.Publish(tx, evs...) }); err != nil {
			t.Fatal(err)
		}
		plain := o.write(t, "plain", 2)
		now := time.Now().UTC()
		// stock: 1 pending, 2 awaiting, 1 processed, 1 failed; plain: 2 published.
		o.exec(t, `UPDATE outbox SET published_at = ? WHERE topic = 'stock' AND msg_key <> ?`, now, []byte("k0"))
		o.exec(t, `UPDATE outbox SET processed_at = ? WHERE topic = 'stock' AND msg_key = ?`, now, []byte("k3"))
		o.exec(t, `UPDATE outbox SET failed_at = ? WHERE topic = 'stock' AND msg_key = ?`, now, []byte("k4"))
		o.exec(t, `UPDATE outbox SET published_at = ? WHERE id IN (?, ?)`, now, plain[0], plain[1])

		rep := decode[statusReport](t, o.mustCtl(t, 0, "status", "-json"))
		if rep.Pending != 1 || rep.AwaitingAck != 2 || rep.Failed != 1 || rep.Dead != 0 {
			t.Errorf("status %+v: want 1 pending, 2 awaiting ack, 1 failed", rep)
		}
		want := []topicCount{{Topic: "stock", Pending: 1, AwaitingAck: 2, Failed: 1}}
		if !slices.Equal(rep.Topics, want) {
			t.Errorf("topics %+v, want %+v (published rows that wait for nothing are not read)", rep.Topics, want)
		}
		rep = decode[statusReport](t, o.mustCtl(t, 0, "status", "-json", "-all"))
		got := map[string]string{}
		for _, tc := range rep.Topics {
			got[tc.Topic] = fmt.Sprintf("%d/%d/%d/%d/%d/%d", tc.Pending, tc.AwaitingAck, tc.Failed, tc.Dead, deref64(tc.Published), deref64(tc.Processed))
		}
		if got["stock"] != "1/2/1/0/0/1" || got["plain"] != "0/0/0/0/2/0" {
			t.Errorf("status -all: %v; want stock 1/2/1/0/0/1 and plain 0/0/0/0/2/0 (pending/awaiting/failed/dead/published/processed)", got)
		}
		r := o.mustCtl(t, 0, "status", "-all")
		for _, re := range []string{`(?m)^awaiting ack:\s+2$`, `(?m)^failed:\s+1$`,
			`(?m)^TOPIC\s+PENDING\s+BLOCKED\s+AWAITING_ACK\s+FAILED\s+DEAD\s+PUBLISHED\s+PROCESSED$`,
			`(?m)^stock\s+1\s+0\s+2\s+1\s+0\s+0\s+1$`, `(?m)^plain\s+0\s+0\s+0\s+0\s+0\s+2\s+0$`} {
			if !regexp.MustCompile(re).MatchString(r.stdout) {
				t.Errorf("status -all output does not match %s:\n%s", re, r.stdout)
			}
		}
	})
}

func deref64(p *int64) int64 {
	if p == nil {
		return -1
	}
	return *p
}

// failed list shows rows consumers answered FAILED on their last process
// attempt; resend puts them back for one more attempt.
func TestFailedListAndResend(t *testing.T) {
	forDialects(t, func(t *testing.T, o *outbox) {
		o.migrate(t)
		evs := make([]gormoutbox.Event, 3)
		for i := range evs {
			evs[i] = gormoutbox.Event{Topic: "stock", Key: fmt.Sprint("k", i), Type: "StockChanged", Payload: i, AckTopic: "stock-acks"}
		}
		if err := o.db.Transaction(func(tx *gorm.DB) error { return gormoutbox.Publish(tx, evs...) }); err != nil {
			t.Fatal(err)
		}
		var ids []int64
		if err := o.db.Raw(`SELECT id FROM outbox WHERE topic = 'stock' ORDER BY id`).Scan(&ids).Error; err != nil {
			t.Fatal(err)
		}
		now := time.Now().UTC()
		o.exec(t, `UPDATE outbox SET published_at = ?, failed_at = ?, process_attempts = 3, last_error = 'no such warehouse' WHERE id IN (?, ?)`, now, now, ids[0], ids[1])
		o.exec(t, `UPDATE outbox SET published_at = ? WHERE id = ?`, now, ids[2])

		list := decode[[]deadLetter](t, o.mustCtl(t, 0, "failed", "list", "-json"))
		if len(list) != 2 || list[0].ID != ids[0] || list[1].ID != ids[1] || list[0].ProcessAttempts != 3 ||
			list[0].LastError != "no such warehouse" || list[0].FailedAt == nil {
			t.Fatalf("failed list: %+v", list)
		}
		r := o.mustCtl(t, 0, "failed", "list")
		if !regexp.MustCompile(`(?m)^ID\s+TOPIC\s+KEY\s+TYPE\s+PROCESS_ATTEMPTS\s+FAILED_AT\s+LAST_ERROR`).MatchString(r.stdout) ||
			!strings.Contains(r.stdout, "no such warehouse") {
			t.Errorf("failed list output:\n%s", r.stdout)
		}
		r = o.mustCtl(t, 3, "resend", strconv.FormatInt(ids[0], 10), strconv.FormatInt(ids[2], 10))
		if !strings.Contains(r.stdout, "re-sent 1 of 2 failed rows") || !strings.Contains(r.stderr, strconv.FormatInt(ids[2], 10)) {
			t.Errorf("resend of a failed and a waiting row: stdout %q stderr %q", r.stdout, r.stderr)
		}
		r = o.mustCtl(t, 0, "resend", "-topic", "stock")
		if !strings.Contains(r.stdout, "re-sent 1 failed rows of topic") {
			t.Errorf("resend -topic: %q", r.stdout)
		}
		var rows []struct {
			ProcessAttempts int
			PublishedAt     *time.Time
			FailedAt        *time.Time
			Headers         string
		}
		if err := o.db.Raw(`SELECT process_attempts, published_at, failed_at, headers FROM outbox WHERE id IN (?, ?) ORDER BY id`, ids[0], ids[1]).
			Scan(&rows).Error; err != nil {
			t.Fatal(err)
		}
		for _, row := range rows {
			var h map[string]string
			_ = json.Unmarshal([]byte(row.Headers), &h)
			if row.ProcessAttempts != 4 || row.PublishedAt != nil || row.FailedAt != nil || h["process-attempt"] != "4" {
				t.Errorf("re-sent row %+v: want pending again at process attempt 4", row)
			}
		}
		rep := decode[statusReport](t, o.mustCtl(t, 0, "status", "-json"))
		if rep.Pending != 2 || rep.Failed != 0 || rep.AwaitingAck != 1 {
			t.Errorf("status after resend: %+v", rep)
		}
		o.mustCtl(t, 2, "resend")
		o.mustCtl(t, 2, "failed")
	})
}
