#!/usr/bin/env bash
# Run GORM's own test suite (the tests/ module of a GORM checkout) against the
# local servers twice per dialect, without and with the go-outbox plugin, and
# report which tests differ.
#
# Usage: scripts/gorm-suite.sh <gorm-checkout-dir> [postgres|mysql|mysql-noreturning ...]
#
#   postgres           GORM_DIALECT=postgres on the local PostgreSQL
#   mysql              GORM_DIALECT=mysql on the local MariaDB, GORM's default
#                      open (MariaDB >= 10.5: INSERT ... RETURNING is used)
#   mysql-noreturning  the same, with mysql.Config{DisableWithReturning: true}
#                      (how a MySQL server is driven)
#   default: all three
#
# GORM's code never enters this checkout: the checkout is copied to a
# temporary directory (mktemp -d) and only that copy is patched:
#   - utils/tests/models.go: every test model embeds gormoutbox.Source with
#     `outbox:"topic:gorm.<lowercase model name>"` (scripts/gormsuite/patchmodels.go.tmpl);
#   - go.mod and tests/go.mod: require github.com/go-outbox/outbox v0.0.0,
#     replaced by this checkout; "go mod tidy" in tests/ (module proxy);
#   - tests/zz_outbox_test.go (scripts/gormsuite/zz_outbox_test.go.tmpl): an
#     init, run after tests_test.go's, that registers the plugin and migrates
#     the outbox table when OUTBOX_GORM_SUITE_PLUGIN=1, and reopens DB with
#     DisableWithReturning when OUTBOX_GORM_SUITE_NORETURNING=1.
# Both runs use the same patched copy (Source adds no column); only the plugin
# registration differs. Before every run the suite's database (default
# "gorm", on PostgreSQL and on MariaDB) is dropped and created again; "gorm"
# because two of GORM's tests (TestRow, TestTableType) hard-code that
# database name on MySQL.
#
# Output, per dialect, in $GORM_SUITE_OUT/<dialect>/ (default /tmp/gorm-suite):
# without.json, with.json ("go test -json"), *.stderr, report.txt; all the
# reports are also concatenated into $GORM_SUITE_OUT/report.txt and printed.
# The comparison is scripts/gormsuite/report.go.tmpl.
#
# Servers: PostgreSQL / MariaDB are started with scripts/servers.sh unless
# OUTBOX_TEST_POSTGRES_URL / OUTBOX_TEST_MYSQL_DSN point elsewhere (admin
# credentials needed: the database is dropped and created). This script never
# stops a server.
#
# Exit status: 0 when every run produced test results (failing tests are the
# point of the exercise, not an error); non-zero when setting up or a run
# failed (build error, panic in init, ...). On failure the temporary
# directory is kept for inspection and its path printed; on success it is
# removed (GORM_SUITE_KEEP=1 keeps it).
#
# Environment knobs (all optional):
#   GORM_SUITE_OUT          output directory (default /tmp/gorm-suite)
#   GORM_SUITE_DB           database name on both servers (default gorm; it is
#                           DROPPED at every run)
#   GORM_SUITE_TIMEOUT      go test -timeout (default 45m)
#   GORM_SUITE_GOTEST_FLAGS extra go test flags, e.g. "-race" or "-run TestCreate"
#   GORM_SUITE_PG_TIMEZONE  TimeZone of the PostgreSQL session (default
#                           Asia/Shanghai, as in GORM's CI)
#   GORM_SUITE_MYSQL_PARAMS MariaDB DSN parameters (default
#                           charset=utf8&parseTime=True, as in GORM's CI)
#   GORM_SUITE_KEEP=1       keep the temporary directory even on success
#   GORM_SUITE_OUTBOX_REV   test this git revision of the project (e.g. HEAD),
#                           exported with git archive into the temp dir,
#                           instead of the working tree (useful while it is
#                           mid-edit); default: the working tree
#   DEBUG=true|false        passed to GORM's suite (SQL logging on / off)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
TEMPLATES=$SCRIPT_DIR/gormsuite

log() { printf '[gorm-suite] %s\n' "$*" >&2; }
die() {
	printf '[gorm-suite] ERROR: %s\n' "$*" >&2
	exit 1
}
usage() {
	sed -n '6,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

[ "$#" -ge 1 ] || usage
case $1 in -h | --help) usage ;; esac
[ -d "$1" ] || die "GORM checkout $1 not found (get it with: git archive v1.31.2 of go-gorm/gorm)"
SRC=$(cd "$1" && pwd)
shift
[ -f "$SRC/tests/tests_test.go" ] && [ -f "$SRC/tests/go.mod" ] && [ -f "$SRC/utils/tests/models.go" ] ||
	die "$SRC does not look like a GORM checkout (no tests/tests_test.go, tests/go.mod or utils/tests/models.go)"

DIALECTS=("$@")
[ "${#DIALECTS[@]}" -gt 0 ] || DIALECTS=(postgres mysql mysql-noreturning)
need_pg=0 need_my=0
for d in "${DIALECTS[@]}"; do
	case $d in
	postgres) need_pg=1 ;;
	mysql | mysql-noreturning) need_my=1 ;;
	*) die "unknown dialect '$d' (want postgres, mysql or mysql-noreturning)" ;;
	esac
done

OUT=${GORM_SUITE_OUT:-/tmp/gorm-suite}
DBNAME=${GORM_SUITE_DB:-gorm}
TIMEOUT=${GORM_SUITE_TIMEOUT:-45m}
PG_TZ=${GORM_SUITE_PG_TIMEZONE:-Asia/Shanghai}
MY_PARAMS=${GORM_SUITE_MYSQL_PARAMS:-charset=utf8&parseTime=True}
read -r -a GOTEST_FLAGS <<<"${GORM_SUITE_GOTEST_FLAGS:-}"
[[ $DBNAME =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "GORM_SUITE_DB=$DBNAME: want a plain identifier"

# A go.work above the temp dir or the checkout must not take part.
export GOWORK=off

command -v go >/dev/null || die "go not found"
[ "$need_pg" = 0 ] || command -v psql >/dev/null || die "psql (PostgreSQL client) not found"
[ "$need_my" = 0 ] || command -v mysql >/dev/null || die "mysql (MariaDB client) not found"

# ---------------------------------------------------------------------------
# servers: start (or reuse) only what is needed and not supplied by the user.

. "$SCRIPT_DIR/lib.sh"
services=()
required=()
if [ "$need_pg" = 1 ]; then
	[ -n "${OUTBOX_TEST_POSTGRES_URL:-}" ] || services+=(postgres)
	required+=(OUTBOX_TEST_POSTGRES_URL)
fi
if [ "$need_my" = 1 ]; then
	[ -n "${OUTBOX_TEST_MYSQL_DSN:-}" ] || services+=(mysql)
	required+=(OUTBOX_TEST_MYSQL_DSN)
fi
if [ "${#services[@]}" -gt 0 ]; then
	"$SCRIPT_DIR/servers.sh" up "${services[@]}"
fi
load_outbox_env "${required[@]}"

# PostgreSQL: OUTBOX_TEST_POSTGRES_URL is a postgres:// URL; the suite gets
# the same server and credentials with the database and TimeZone replaced.
PG_GORM_DSN= PG_SUITE_URL=
if [ "$need_pg" = 1 ]; then
	[[ $OUTBOX_TEST_POSTGRES_URL =~ ^(postgres(ql)?://[^/?]+)(/[^?]*)?(\?(.*))?$ ]] ||
		die "cannot parse OUTBOX_TEST_POSTGRES_URL as postgres://user:pass@host:port/db?params"
	pg_base=${BASH_REMATCH[1]}
	pg_query=${BASH_REMATCH[5]}
	PG_GORM_DSN="$pg_base/$DBNAME?${pg_query:+$pg_query&}TimeZone=$PG_TZ"
	PG_SUITE_URL="$pg_base/$DBNAME${pg_query:+?$pg_query}" # for psql
fi

# MariaDB: OUTBOX_TEST_MYSQL_DSN is a go-sql-driver DSN user:pass@tcp(host:port)/db?params.
MY_GORM_DSN=
if [ "$need_my" = 1 ]; then
	[[ $OUTBOX_TEST_MYSQL_DSN =~ ^([^:@/]*)(:([^@]*))?@tcp\(([^\)]*)\)/([^?]*)(\?.*)?$ ]] ||
		die "cannot parse OUTBOX_TEST_MYSQL_DSN as user:pass@tcp(host:port)/db?params"
	my_user=${BASH_REMATCH[1]}
	my_pass=${BASH_REMATCH[3]}
	my_hostport=${BASH_REMATCH[4]}
	my_host=${my_hostport%:*}
	my_port=3306
	[ "$my_host" = "$my_hostport" ] || my_port=${my_hostport##*:}
	MY_GORM_DSN="$my_user:$my_pass@tcp($my_hostport)/$DBNAME?$MY_PARAMS"
fi

# recreate_db <postgres|mysql>: drop the suite's database and create it empty.
recreate_db() {
	case $1 in
	postgres)
		PGOPTIONS='-c client_min_messages=warning' psql "$OUTBOX_TEST_POSTGRES_URL" -X -q -v ON_ERROR_STOP=1 \
			-c "DROP DATABASE IF EXISTS \"$DBNAME\" WITH (FORCE)" \
			-c "CREATE DATABASE \"$DBNAME\""
		;;
	mysql)
		MYSQL_PWD=$my_pass mysql --protocol=TCP -h "$my_host" -P "$my_port" -u "$my_user" \
			-e "DROP DATABASE IF EXISTS \`$DBNAME\`; CREATE DATABASE \`$DBNAME\`"
		;;
	esac
}

# count_outbox <postgres|mysql>: events in the plugin's outbox table (proof
# that the plugin captured; "none" when the table does not exist).
count_outbox() {
	case $1 in
	postgres)
		psql "$PG_SUITE_URL" -X -A -t -q -c "SELECT count(*) FROM outbox" 2>/dev/null || echo none
		;;
	mysql)
		MYSQL_PWD=$my_pass mysql --protocol=TCP -h "$my_host" -P "$my_port" -u "$my_user" -N -B \
			-e "SELECT count(*) FROM \`$DBNAME\`.outbox" 2>/dev/null || echo none
		;;
	esac
}

# ---------------------------------------------------------------------------
# the throwaway copy

WORK=$(mktemp -d -t gorm-suite.XXXXXX)
G=$WORK/gorm
success=0
cleanup() {
	if [ "$success" = 1 ] && [ "${GORM_SUITE_KEEP:-0}" != 1 ]; then
		rm -rf "$WORK"
	else
		log "temporary directory kept for inspection: $WORK"
	fi
}
trap cleanup EXIT

log "copying $SRC to $G"
mkdir -p "$G"
tar -C "$SRC" --exclude=./.git -cf - . | tar -C "$G" -xf -

# go_tool <template> <args...>: run a standard-library-only template program.
go_tool() {
	local tmpl=$1 dir
	shift
	dir=$WORK/tools/$(basename "$tmpl" .go.tmpl)
	mkdir -p "$dir"
	cp "$TEMPLATES/$tmpl" "$dir/main.go"
	[ -f "$dir/go.mod" ] || printf 'module gormsuite/tool\n\ngo 1.22\n' >"$dir/go.mod"
	(cd "$dir" && go run . "$@")
}

log "patching utils/tests/models.go"
go_tool patchmodels.go.tmpl "$G/utils/tests/models.go"

# The project under test: the working tree, or a snapshot of a revision.
OUTBOX_DIR=$REPO_ROOT
if [ -n "${GORM_SUITE_OUTBOX_REV:-}" ]; then
	OUTBOX_DIR=$WORK/outbox
	mkdir -p "$OUTBOX_DIR"
	log "exporting go-outbox $GORM_SUITE_OUTBOX_REV ($(git -C "$REPO_ROOT" rev-parse --short "$GORM_SUITE_OUTBOX_REV")) to $OUTBOX_DIR"
	git -C "$REPO_ROOT" archive "$GORM_SUITE_OUTBOX_REV" | tar -C "$OUTBOX_DIR" -xf -
else
	dirty=$(git -C "$REPO_ROOT" status --porcelain -- '*.go' 2>/dev/null | head -5 || true)
	[ -z "$dirty" ] || log "note: testing the working tree, which has uncommitted Go changes:"$'\n'"$dirty"
fi

log "go.mod: require + replace github.com/go-outbox/outbox => $OUTBOX_DIR"
for m in "$G" "$G/tests"; do
	(cd "$m" && go mod edit \
		-require=github.com/go-outbox/outbox@v0.0.0 \
		-replace=github.com/go-outbox/outbox="$OUTBOX_DIR")
done
cp "$TEMPLATES/zz_outbox_test.go.tmpl" "$G/tests/zz_outbox_test.go"

log "go mod tidy in tests/"
(cd "$G/tests" && go mod tidy)

# The suite must test this GORM tree and this project, nothing from the proxy.
gorm_replace=$(cd "$G/tests" && go list -m -f '{{with .Replace}}{{.Path}}{{end}}' gorm.io/gorm)
[ "$gorm_replace" = "../" ] || [ "$gorm_replace" = ".." ] ||
	die "tests/go.mod: gorm.io/gorm is replaced by '$gorm_replace', want ../"
outbox_replace=$(cd "$G/tests" && go list -m -f '{{with .Replace}}{{.Path}}{{end}}' github.com/go-outbox/outbox)
[ "$outbox_replace" = "$OUTBOX_DIR" ] ||
	die "tests/go.mod: github.com/go-outbox/outbox is replaced by '$outbox_replace', want $OUTBOX_DIR"
log "versions: $(cd "$G/tests" && go list -m -f '{{.Path}} {{.Version}}' gorm.io/driver/postgres gorm.io/driver/mysql github.com/jackc/pgx/v5 github.com/go-sql-driver/mysql | tr '\n' ' ')"

log "compiling the patched models and the test binary"
(cd "$G/tests" && go build gorm.io/gorm/utils/tests && go test -c -o "$WORK/tests.test" . >/dev/null)

# ---------------------------------------------------------------------------
# the runs

mkdir -p "$OUT"
: >"$OUT/report.txt"
failed=0
for d in "${DIALECTS[@]}"; do
	noreturning=0
	case $d in
	postgres) dialect=postgres server=postgres dsn=$PG_GORM_DSN ;;
	mysql) dialect=mysql server=mysql dsn=$MY_GORM_DSN ;;
	mysql-noreturning) dialect=mysql server=mysql dsn=$MY_GORM_DSN noreturning=1 ;;
	esac
	dir=$OUT/$d
	mkdir -p "$dir"
	for mode in without with; do
		plugin=0
		[ "$mode" = without ] || plugin=1
		recreate_db "$server"
		log "$d, $mode plugin: go test -count=1 -json -p 1 -timeout $TIMEOUT ${GOTEST_FLAGS[*]} ./... > $dir/$mode.json"
		start=$SECONDS
		rc=0
		(cd "$G/tests" &&
			GORM_DIALECT=$dialect GORM_DSN=$dsn \
				OUTBOX_GORM_SUITE_PLUGIN=$plugin OUTBOX_GORM_SUITE_NORETURNING=$noreturning \
				go test -count=1 -json -p 1 -timeout "$TIMEOUT" ${GOTEST_FLAGS[@]+"${GOTEST_FLAGS[@]}"} ./... \
				>"$dir/$mode.json" 2>"$dir/$mode.stderr") || rc=$?
		log "$d, $mode plugin: go test exit status $rc after $((SECONDS - start))s"
	done
	events=$(count_outbox "$server")
	rc=0
	go_tool report.go.tmpl "$d (GORM_DIALECT=$dialect$([ "$noreturning" = 0 ] || echo ', DisableWithReturning'))" \
		"$dir/without.json" "$dir/with.json" >"$dir/report.txt" || rc=$?
	echo "events in the outbox table after the run with the plugin: $events" >>"$dir/report.txt"
	echo >>"$dir/report.txt"
	cat "$dir/report.txt" >>"$OUT/report.txt"
	if [ "$rc" != 0 ]; then
		failed=1
		log "$d: a run produced no test results (see $dir/*.stderr and $dir/report.txt)"
	fi
done

cat "$OUT/report.txt"
log "reports: $OUT/report.txt and $OUT/<dialect>/report.txt; raw go test -json in $OUT/<dialect>/"
[ "$failed" = 0 ] || exit 1
success=1
