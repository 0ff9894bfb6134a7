package insert

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-outbox/outbox/dialects"
)

type dollar struct{}

func (dollar) Quote(s string) string    { return `"` + s + `"` }
func (dollar) Placeholder(n int) string { return "$" + strconv.Itoa(n) }

// The column list, the placeholders of SQL and the arguments of Args
// agree in number.
func TestColumnsArgsAgree(t *testing.T) {
	if n := len(strings.Split(ColumnList, ",")); n != numColumns {
		t.Fatalf("ColumnList has %d columns, numColumns says %d", n, numColumns)
	}
	recs := []dialects.Record{{EventID: "a", CreatedAt: time.Now()}, {EventID: "b", Headers: map[string]string{"h": "v"}}}
	args, err := Args(recs)
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != 2*numColumns {
		t.Fatalf("Args gave %d arguments for 2 records of %d columns", len(args), numColumns)
	}
	stmt := SQL(dollar{}, dialects.Table{Schema: "s", Name: "outbox"}, 2)
	if !strings.HasPrefix(stmt, `INSERT INTO "s"."outbox" (`+ColumnList+`) VALUES ($1, `) ||
		!strings.HasSuffix(stmt, `, $24)`) || strings.Contains(stmt, "$25") {
		t.Errorf("SQL: %s", stmt)
	}
}
