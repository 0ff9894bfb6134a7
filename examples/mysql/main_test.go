package main

import (
	"context"
	"database/sql"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/go-outbox/outbox/examples/internal/inventory"
	"github.com/go-outbox/outbox/internal/testenv"
)

// The example, in a short mode, on the test server: both inventory tables
// end equal and every answer arrived.
func TestSync(t *testing.T) {
	if testing.Short() {
		t.Skip("needs MySQL")
	}
	dsn := testenv.MySQLDSN(t)
	database := fmt.Sprintf("t_demo_%x", rand.Uint32())
	t.Cleanup(func() {
		if admin, err := sql.Open("mysql", dsn); err == nil {
			_, _ = admin.Exec(`DROP DATABASE IF EXISTS ` + database + `_products`)
			_, _ = admin.Exec(`DROP DATABASE IF EXISTS ` + database + `_orders`)
			admin.Close()
		}
	})
	inventory.RunShort(t, func(ctx context.Context, o inventory.Options) (inventory.Result, error) {
		return run(ctx, dsn, database, o)
	})
}
