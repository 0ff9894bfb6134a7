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
	args, err := Args(recs, []int64{0, 7})
	if err != nil {
		t.Fatal(err)
	}
	if len(args) != 2*numColumns {
		t.Fatalf("Args gave %d arguments for 2 records of %d columns", len(args), numColumns)
	}
	if args[numColumns-1] != nil || args[2*numColumns-1] != int64(7) {
		t.Errorf("seq arguments %v and %v, want nil and 7", args[numColumns-1], args[2*numColumns-1])
	}
	stmt := SQL(dollar{}, dialects.Table{Schema: "s", Name: "outbox"}, 2)
	if !strings.HasPrefix(stmt, `INSERT INTO "s"."outbox" (`+ColumnList+`) VALUES ($1, `) ||
		!strings.HasSuffix(stmt, `, $26)`) || strings.Contains(stmt, "$27") {
		t.Errorf("SQL: %s", stmt)
	}
}
