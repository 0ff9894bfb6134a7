package gormoutbox

import (
	"context"
	"errors"
	"testing"

	"github.com/go-outbox/outbox/dialects"
	"github.com/go-outbox/outbox/dialects/mysql"
	"github.com/go-outbox/outbox/dialects/postgres"
)

// A listener that must not be called.
type refusingListener struct{ t *testing.T }

func (l refusingListener) Listen(context.Context, dialects.ListenParams) error {
	l.t.Error("Listen called")
	return nil
}

func (l refusingListener) CheckDSN(string) error { return errors.New("bad dsn") }

// Without a listener (this test binary does not link pgxlisten) ListenWith
// says what to give it instead of failing obscurely; on MySQL it says
// there is nothing to listen to; a DSN the listener refuses is a
// configuration error. None of them reaches a database.
func TestListenWithRefusesAtOnce(t *testing.T) {
	ctx := context.Background()
	pg := &Relay{d: postgres.New(), table: dialects.Table{Name: "outbox"}}
	my := &Relay{d: mysql.New(), table: dialects.Table{Name: "outbox"}}
	for _, c := range []struct {
		name string
		r    *Relay
		o    ListenOptions
		want error
	}{
		{"postgres without a listener", pg, ListenOptions{}, ErrListenerNotLinked},
		{"postgres without a listener, with a DSN", pg, ListenOptions{DSN: "postgres://x"}, ErrListenerNotLinked},
		{"postgres with a DSN the listener refuses", pg, ListenOptions{Listener: refusingListener{t}, DSN: "x"}, ErrInvalidConfig},
		{"mysql", my, ListenOptions{Listener: refusingListener{t}}, ErrUnsupportedDialect},
		{"mysql without a listener", my, ListenOptions{}, ErrUnsupportedDialect},
	} {
		if err := c.r.ListenWith(ctx, func() {}, c.o); !errors.Is(err, c.want) {
			t.Errorf("%s: ListenWith = %v, want %v", c.name, err, c.want)
		}
	}
}
