package pick_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/go-outbox/outbox/dialects/pick"
)

func TestFor(t *testing.T) {
	for name, want := range map[string]string{
		"postgres": "postgres", "postgresql": "postgres", "pgx": "postgres", "mysql": "mysql",
	} {
		d, err := pick.For(name, nil)
		if err != nil {
			t.Fatalf("For(%q): %v", name, err)
		}
		if d.Name() != want {
			t.Errorf("For(%q).Name() = %q, want %q", name, d.Name(), want)
		}
	}
	for _, name := range []string{"", "sqlite", "oracle", "Postgres"} {
		_, err := pick.For(name, nil)
		if !errors.Is(err, pick.ErrUnsupported) || !strings.Contains(err.Error(), `"`+name+`"`) {
			t.Errorf("For(%q) = %v, want ErrUnsupported naming it", name, err)
		}
	}
}
