package mysql_test

import (
	"database/sql"
	"testing"

	"github.com/go-outbox/outbox/dialects/dialecttest"
	"github.com/go-outbox/outbox/dialects/mysql"
	"github.com/go-outbox/outbox/internal/testenv"
)

// TestConformance runs the storage seam's conformance suite on a real
// server (see internal/testenv for how to point it at your own).
func TestConformance(t *testing.T) {
	dialecttest.Run(t, dialecttest.Harness{
		Dialect: mysql.New(),
		Open: func(t testing.TB) *sql.DB {
			db, err := testenv.OpenMySQL(t, nil).DB()
			if err != nil {
				t.Fatal(err)
			}
			return db
		},
	})
}
