package inbox

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/go-outbox/outbox/dialects/pick"
)

// The inbox script holds the steps Migrate runs, with the bookkeeping
// MigrateSteps adds.
func TestDDL(t *testing.T) {
	for _, driver := range []string{"postgres", "mysql"} {
		script, err := DDL(driver, "app.consumed")
		if err != nil {
			t.Fatal(err)
		}
		s, err := newStoreFor(driver, nil, "app.consumed")
		if err != nil {
			t.Fatal(err)
		}
		sc := s.d
		want := []string{sc.CreateMigrationsTable(s.table)}
		for _, m := range s.migrations() {
			want = append(want, m.Statements...)
			want = append(want, sc.RecordMigration(s.table, m.Version))
		}
		var got []string
		for _, st := range script.Steps {
			got = append(got, st.Statements...)
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s: script\n%s\nwant\n%s", driver, strings.Join(got, ";\n"), strings.Join(want, ";\n"))
		}
		text := script.String()
		if !strings.Contains(text, "consumed_migrations") || !strings.Contains(text, "inbox table app.consumed") ||
			!strings.Contains(text, "VALUES (1);") {
			t.Errorf("%s: script text:\n%s", driver, text)
		}
	}
	// The names the plugin accepts (pick.For).
	for _, driver := range []string{"pgx", "postgresql"} {
		if s, err := DDL(driver, ""); err != nil || s.Table.String() != "inbox" || s.Dialect != "postgres" {
			t.Errorf(`DDL(%q, "") = %q on %q, %v; want the table "inbox" on postgres`, driver, s.Table, s.Dialect, err)
		}
	}
	if _, err := DDL("oracle", ""); !errors.Is(err, pick.ErrUnsupported) {
		t.Errorf(`DDL("oracle", ""): %v, want pick.ErrUnsupported`, err)
	}
	for _, tc := range [][2]string{{"oracle", "inbox"}, {"", "inbox"}, {"postgres", "no-dashes"}, {"mysql", "a.b.c"}} {
		if _, err := DDL(tc[0], tc[1]); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("DDL(%q, %q): %v, want ErrInvalidConfig", tc[0], tc[1], err)
		}
	}
}
