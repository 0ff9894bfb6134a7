package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-outbox/outbox/internal/testenv"
)

// A service that imports the library's packages gets no test-only module in
// its module graph: the tests, the examples and the demo's broker are
// modules of their own (integration/, examples/), so kfake, franz-go,
// dbresolver and the OpenTelemetry SDK stay out of the library's go.mod.
func TestUserModuleGraph(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module with the go command")
	}
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("go.mod", "module example.com/service\n\ngo 1.26\n\nrequire github.com/go-outbox/outbox v0.0.0-00010101000000-000000000000\n\nreplace github.com/go-outbox/outbox => "+root+"\n")
	write("main.go", `package main

import (
	_ "github.com/go-outbox/outbox/ack"
	_ "github.com/go-outbox/outbox/gormoutbox"
	_ "github.com/go-outbox/outbox/hooks"
	_ "github.com/go-outbox/outbox/inbox"
	_ "github.com/go-outbox/outbox/kafka"
	_ "github.com/go-outbox/outbox/scheduler"
)

func main() {}
`)
	run := func(args ...string) string {
		cmd := exec.Command("go", args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	run("mod", "tidy")
	run("build", "./...")
	mods := run("list", "-m", "all")
	for _, bad := range []string{"github.com/twmb/franz-go", "gorm.io/plugin/dbresolver", "go.opentelemetry.io/otel/sdk"} {
		for _, line := range strings.Split(mods, "\n") {
			if strings.HasPrefix(line, bad) {
				t.Errorf("a service importing the library gets the test-only module %s", line)
			}
		}
	}
}
