package inbox

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/go-outbox/outbox/dialects"
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
		sc := s.d.(dialects.Scripter)
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
	if s, err := DDL("pgx", ""); err != nil || s.Table.String() != "inbox" {
		t.Errorf(`DDL("pgx", "") = %q, %v; want the table "inbox"`, s.Table, err)
	}
	for _, tc := range [][2]string{{"oracle", "inbox"}, {"", "inbox"}, {"postgres", "no-dashes"}, {"mysql", "a.b.c"}} {
		if _, err := DDL(tc[0], tc[1]); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("DDL(%q, %q): %v, want ErrInvalidConfig", tc[0], tc[1], err)
		}
	}
}
