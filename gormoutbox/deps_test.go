package gormoutbox_test

import (
	"os/exec"
	"strings"
	"testing"
)

// A service links only the driver it uses: the library's packages import
// neither the MySQL driver (dialects/mysql reads MySQL error numbers
// without it) nor pgx (PostgreSQL's LISTEN is in dialects/postgres/pgxlisten,
// whose listener a relay that listens is given).
func TestNoDriverLinked(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	const lib = "github.com/go-outbox/outbox/"
	out, err := exec.Command("go", "list", "-deps", lib+"gormoutbox", lib+"kafka", lib+"scheduler", lib+"hooks", lib+"inbox", lib+"ack").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/go-sql-driver/mysql") || strings.HasPrefix(p, "github.com/jackc/pgx") {
			t.Errorf("the library's packages link %s", p)
		}
	}
}
