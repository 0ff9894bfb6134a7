// Command outboxctl operates a live outbox table on PostgreSQL or MySQL:
// it creates the table, reports its backlog, lists and shows dead letters,
// puts them back in the queue and purges old published rows. It never
// publishes anything; the relay does that.
//
//	outboxctl -dsn 'postgres://app:secret@db:5432/app' status
//	OUTBOX_DSN='app:secret@tcp(db:3306)/app' outboxctl dead list -topic orders
//
// Run "outboxctl help" for every command, flag and exit code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"
	"time"
)

// Exit codes.
const (
	exitOK       = 0
	exitFailed   = 1 // the operation failed: database unreachable, SQL error
	exitUsage    = 2 // unknown command or flag, bad argument
	exitNotFound = 3 // the row asked for is not a dead letter
)

// DSNEnv is the environment variable read when -dsn is not given.
const DSNEnv = "OUTBOX_DSN"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// usageError is a bad command line (exit 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{fmt.Sprintf(format, args...)}
}

// notFoundError is a row that is not there (exit 3).
type notFoundError struct{ msg string }

func (e *notFoundError) Error() string { return e.msg }

// errHelp is returned by a command's flag parsing when -h was given and its
// usage has been printed.
var errHelp = errors.New("help shown")

// globals are the flags every command accepts, before or after its name.
type globals struct {
	dsn     string
	driver  string
	table   string
	shards  int
	timeout time.Duration
}

func (g *globals) register(fs *flag.FlagSet) {
	fs.StringVar(&g.dsn, "dsn", g.dsn, "database DSN (default $"+DSNEnv+")")
	fs.StringVar(&g.driver, "driver", g.driver, "postgres or mysql (default: guessed from the DSN)")
	fs.StringVar(&g.table, "table", g.table, `outbox table, "table" or "schema.table"`)
	fs.IntVar(&g.shards, "shards", g.shards, "shard count, as configured in the plugin")
	fs.DurationVar(&g.timeout, "timeout", g.timeout, "give up after this long (0: never)")
	// The defaults shown by -h are the built-in ones, never the values
	// already set (the DSN may come from $OUTBOX_DSN and hold a password).
	for name, def := range map[string]string{"dsn": "", "driver": "", "table": "outbox", "shards": "16", "timeout": "1m0s"} {
		fs.Lookup(name).DefValue = def
	}
}

// command is one outboxctl command.
type command struct {
	name    string // "status", "dead list"
	args    string // synopsis after the name
	summary string
	run     func(ctx context.Context, c *cli, args []string) error
	// details is the help text of the command after its summary.
	details string
}

// commandTable returns the commands, in the order the overview lists
// them.
func commandTable() []command {
	return []command{
		{name: "migrate", args: "[-inbox-table T] [-print]", summary: "create or upgrade the outbox table (idempotent), or print its DDL", run: cmdMigrate,
			details: `Creates the outbox table and its indexes, or upgrades them to the
current schema version. Safe to run again and from several processes.
-inbox-table T does the same for the inbox table T of package inbox.

-print prints the SQL instead, for a DBA or a migration tool (goose,
golang-migrate): no DSN and no database are needed, -driver postgres or
-driver mysql names the database (-table and -inbox-table the tables).
It creates the tables, version by version, and records each version in
the tables' migrations tables, so that "outboxctl migrate" and the
library's Migrate find nothing left to do after it was applied.`},
		{name: "status", args: "[-json] [-all]", summary: "rows per state (pending, awaiting ack, failed, dead), oldest pending age, per topic", run: cmdStatus,
			details: `Pending rows are neither published nor dead; the relay will send them.
Awaiting-ack rows are published and wait for a consumer's answer (events
that asked for one). Failed rows were answered FAILED on their last
process attempt and wait for "outboxctl resend". Dead rows failed to be
published too often and wait for "outboxctl replay". -all also counts the
published rows that wait for nothing and the processed ones (it reads
every published row).`},
		{name: "dead list", args: "[-topic T] [-limit N] [-after ID] [-json]", summary: "list dead letters in id order", run: cmdDeadList,
			details: `Prints id, topic, key, type, attempts, dead_at and the start of the last
error. At most -limit rows are listed; continue with -after <last id>.`},
		{name: "dead show", args: "[-json] [-full] ID", summary: "show every field of one dead letter", run: cmdDeadShow,
			details: `Prints every column of the dead letter ID, the headers and the payload:
as text, or in hex when it is binary. Only the payload's first 4096 bytes
are printed, and how many were left out, unless -full is given (with
-json too: payload_truncated and payload_bytes say so). Exit code 3 when
ID is not a dead letter.`},
		{name: "replay", args: "ID... | -topic T | -all", summary: "put dead letters back in the queue", run: cmdReplay,
			details: `Resets attempts to 0 and makes the rows due now, so that the relay sends
them on its next pass. Give ids, or -topic T for every dead letter of a
topic, or -all for every dead letter. With ids, exit code 3 if one of
them is not a dead letter (the others are still replayed). A replayed
row may reach its topic after later rows of the same key.`},
		{name: "failed list", args: "[-topic T] [-limit N] [-after ID] [-json]", summary: "list rows whose last process attempt a consumer answered FAILED", run: cmdFailedList,
			details: `Prints id, topic, key, type, process attempts, failed_at and the start
of the last answer's reason. At most -limit rows are listed; continue with
-after <last id>.`},
		{name: "resend", args: "ID... | -topic T | -all", summary: "send failed rows again for one more process attempt", run: cmdResend,
			details: `Sends failed rows again for one more process attempt: the next
"process-attempt", due now (a FAILED answer to it fails the row again).
Give ids, or -topic T, or -all. With ids, exit code 3 if one of them is
not a failed row (the others are still re-sent). A re-sent event reaches
its consumers after later events of its key.`},
		{name: "purge", args: "-older-than DURATION", summary: "delete rows published longer ago than DURATION", run: cmdPurge,
			details: `Deletes published rows whose published_at is older than -older-than, in
batches. Pending and dead rows are never deleted. DURATION is a Go
duration (90m, 24h) or a number of days (7d).`},
	}
}

func findCommand(name string) *command {
	commands := commandTable()
	for i := range commands {
		if commands[i].name == name {
			return &commands[i]
		}
	}
	return nil
}

// cli is one invocation.
type cli struct {
	g      globals
	stdout io.Writer
	stderr io.Writer
	// scrub removes secrets from text written to stderr.
	scrub func(string) string
}

// run is the whole program: it returns the exit code.
func run(ctx context.Context, args []string, env func(string) string, stdout, stderr io.Writer) int {
	c := &cli{
		g:      globals{dsn: env(DSNEnv), table: "outbox", shards: 16, timeout: time.Minute},
		stdout: stdout,
		stderr: stderr,
	}
	c.scrub = func(s string) string { return scrubber(c.g.dsn)(s) }

	fs := flag.NewFlagSet("outboxctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	c.g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			overview(stdout)
			return exitOK
		}
		return c.fail("", usagef("%v", err))
	}
	rest := fs.Args()
	if len(rest) == 0 {
		overview(stderr)
		return c.fail("", usagef("no command given"))
	}
	name, rest := rest[0], rest[1:]
	switch name {
	case "help":
		return c.help(rest)
	case "dead", "failed":
		if len(rest) == 0 {
			if name == "failed" {
				return c.fail("failed", usagef(`missing sub-command: "failed list"`))
			}
			return c.fail("dead", usagef(`missing sub-command: "dead list" or "dead show ID"`))
		}
		if rest[0] == "-h" || rest[0] == "-help" || rest[0] == "--help" {
			return c.help([]string{name})
		}
		name, rest = name+" "+rest[0], rest[1:]
	}
	cmd := findCommand(name)
	if cmd == nil {
		return c.fail("", usagef("unknown command %q (commands: %s)", name, commandNames()))
	}
	if c.g.timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.g.timeout)
		defer cancel()
	}
	err := cmd.run(ctx, c, rest)
	if errors.Is(err, errHelp) {
		return exitOK
	}
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("timed out after %v (see -timeout): %w", c.g.timeout, err)
	}
	return c.fail(cmd.name, err)
}

// fail reports err (if any) on one line of stderr and returns its exit code.
func (c *cli) fail(cmd string, err error) int {
	if err == nil {
		return exitOK
	}
	prefix := "outboxctl: "
	if cmd != "" {
		prefix = "outboxctl " + cmd + ": "
	}
	msg := oneLineError(c.scrub(err.Error()))
	var (
		ue *usageError
		nf *notFoundError
	)
	switch {
	case errors.As(err, &ue):
		hint := "outboxctl help"
		if cmd != "" {
			hint += " " + cmd
		}
		fmt.Fprintf(c.stderr, "%s%s (see: %s)\n", prefix, msg, hint)
		return exitUsage
	case errors.As(err, &nf):
		fmt.Fprintf(c.stderr, "%s%s\n", prefix, msg)
		return exitNotFound
	}
	fmt.Fprintf(c.stderr, "%s%s\n", prefix, msg)
	return exitFailed
}

// oneLineError joins the lines of a (driver) error message.
func oneLineError(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(s, "\n") {
		l = strings.TrimSpace(l)
		if l == "" {
			continue
		}
		if b.Len() > 0 {
			if strings.HasSuffix(b.String(), ":") {
				b.WriteString(" ")
			} else {
				b.WriteString("; ")
			}
		}
		b.WriteString(l)
	}
	return b.String()
}

// parse parses a command's flags, the global ones included. With -h it
// prints the command's help and returns errHelp.
func (c *cli) parse(cmd string, fs *flag.FlagSet, args []string) error {
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	c.g.register(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			commandHelp(c.stdout, findCommand(cmd), fs)
			return errHelp
		}
		return usagef("%v", err)
	}
	return nil
}

func (c *cli) help(args []string) int {
	if len(args) == 0 {
		overview(c.stdout)
		return exitOK
	}
	name := strings.Join(args, " ")
	if name == "failed" {
		name = "failed list"
	}
	if name == "dead" {
		fmt.Fprintln(c.stdout, "outboxctl dead: inspect dead letters (rows the relay gave up on).")
		fmt.Fprintln(c.stdout)
		for _, n := range []string{"dead list", "dead show"} {
			cmd := findCommand(n)
			fmt.Fprintf(c.stdout, "  outboxctl %s %s\n      %s\n", cmd.name, cmd.args, cmd.summary)
		}
		fmt.Fprintln(c.stdout, "\nRun 'outboxctl help dead list' or 'outboxctl help dead show' for their flags.")
		return exitOK
	}
	cmd := findCommand(name)
	if cmd == nil {
		return c.fail("help", usagef("unknown command %q (commands: %s)", name, commandNames()))
	}
	// Every command parses its flags first: -h prints its help and stops.
	_ = cmd.run(context.Background(), &cli{g: c.g, stdout: c.stdout, stderr: io.Discard, scrub: c.scrub}, []string{"-h"})
	return exitOK
}

func commandNames() string {
	commands := commandTable()
	names := make([]string, 0, len(commands)+1)
	seen := map[string]bool{}
	for _, c := range commands {
		n, _, _ := strings.Cut(c.name, " ")
		if !seen[n] {
			seen[n] = true
			names = append(names, n)
		}
	}
	names = append(names, "help")
	sort.Strings(names)
	return strings.Join(names, ", ")
}

func commandHelp(w io.Writer, cmd *command, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: outboxctl [global flags] %s %s\n\n%s.\n", cmd.name, cmd.args, capitalize(cmd.summary))
	if cmd.details != "" {
		fmt.Fprintf(w, "\n%s\n", strings.TrimSpace(cmd.details))
	}
	fmt.Fprintln(w, "\nFlags (the global flags are accepted here too):")
	fs.SetOutput(w)
	fs.PrintDefaults()
	fs.SetOutput(io.Discard)
}

func capitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

func overview(w io.Writer) {
	fmt.Fprint(w, `outboxctl operates a transactional outbox table (go-outbox) on PostgreSQL
or MySQL/MariaDB: it reports the rows per state, inspects and replays dead
letters, re-sends events consumers failed to process, and purges
published rows. It never publishes messages; the relay does.

Usage:
  outboxctl [global flags] <command> [command flags] [arguments]

Commands:
`)
	for _, c := range commandTable() {
		fmt.Fprintf(w, "  %-11s %-42s %s\n", c.name, c.args, c.summary)
	}
	fmt.Fprintf(w, "  %-11s %-42s %s\n", "help", "[COMMAND]", "this overview, or the help of one command")
	fmt.Fprint(w, `
Global flags (before or after the command name):
  -dsn DSN        database to connect to; default: the `+DSNEnv+` environment
                  variable. Prefer the variable: flags show up in "ps".
                    PostgreSQL: postgres://user:pass@host:5432/db?sslmode=disable
                                or "host=h user=u password=p dbname=db"
                    MySQL:      user:pass@tcp(host:3306)/db?parseTime=true
  -driver NAME    postgres or mysql; default: guessed from the DSN
                  (postgres:// postgresql:// key=value -> postgres,
                   user:pass@tcp(host)/db -> mysql)
  -table NAME     outbox table, "table" or "schema.table" (default "outbox")
  -shards N       shard count, as in the plugin's Config.Shards (default 16)
  -timeout D      give up after D, e.g. 30s (default 1m; 0: never)

Environment:
  `+DSNEnv+`      the DSN, when -dsn is not given

Exit codes:
  0  success
  1  the operation failed (database unreachable, SQL error)
  2  usage error (unknown command or flag, bad argument, no DSN)
  3  not found (the id given is not a dead letter / failed row)

Examples:
  export `+DSNEnv+`='postgres://app:secret@localhost:5432/app?sslmode=disable'
  outboxctl migrate
  outboxctl migrate -print -driver postgres -inbox-table inbox > outbox.sql
  outboxctl status
  outboxctl status -json
  outboxctl dead list -topic orders -limit 20
  outboxctl dead list -after 1234
  outboxctl dead show -full 1234
  outboxctl replay 1234 1240
  outboxctl replay -topic orders
  outboxctl replay -all
  outboxctl failed list -topic inventory
  outboxctl resend -topic inventory
  outboxctl purge -older-than 168h
  outboxctl -driver mysql -dsn 'app:secret@tcp(db:3306)/app' status

Run 'outboxctl help COMMAND' (or 'outboxctl COMMAND -h') for its flags.
The DSN and its password are never printed.
`)
}
