package postgres

import (
	"context"
	"errors"
	"testing"

	"github.com/go-outbox/outbox/dialects"
)

// Without package pgxlisten (this test binary does not import it) Listen
// says what to import instead of failing obscurely.
func TestListenWithoutPgxlisten(t *testing.T) {
	tbl := dialects.Table{Name: "outbox"}
	if err := (Dialect{}).Listen(context.Background(), nil, tbl, func() {}, nil); !errors.Is(err, ErrListenerNotLinked) {
		t.Fatalf("Listen = %v, want ErrListenerNotLinked", err)
	}
	if err := (Dialect{}).ListenDSN(context.Background(), "postgres://x", tbl, func() {}, nil); !errors.Is(err, ErrListenerNotLinked) {
		t.Fatalf("ListenDSN = %v, want ErrListenerNotLinked", err)
	}
	if err := ParseListenDSN("postgres://x"); !errors.Is(err, ErrListenerNotLinked) {
		t.Fatalf("ParseListenDSN = %v, want ErrListenerNotLinked", err)
	}
}
