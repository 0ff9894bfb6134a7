package gormoutbox_test

import (
	"os/exec"
	"strings"
	"testing"
)

// A service on PostgreSQL links the plugin without a MySQL driver: package
// dialects/mysql reads MySQL error numbers without importing one.
func TestNoMySQLDriverLinked(t *testing.T) {
	if testing.Short() {
		t.Skip("runs go list")
	}
	out, err := exec.Command("go", "list", "-deps", "github.com/go-outbox/outbox/gormoutbox").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps: %v\n%s", err, out)
	}
	for _, p := range strings.Fields(string(out)) {
		if strings.HasPrefix(p, "github.com/go-sql-driver/mysql") {
			t.Fatalf("gormoutbox links %s", p)
		}
	}
}
