#!/usr/bin/env bash
# Run the whole test suite against local servers (see scripts/servers.sh).
#
# If OUTBOX_TEST_POSTGRES_URL / OUTBOX_TEST_MYSQL_DSN are already set, those
# servers are used and nothing is started for them (nor PgBouncer, unless
# OUTBOX_TEST_PGBOUNCER_URL names one in front of that PostgreSQL).
# Extra arguments replace the package list, e.g.: scripts/test.sh -run TestFoo ./gormoutbox/...
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

servers_up_unless_set
# PgBouncer in transaction pooling mode in front of the project's PostgreSQL
# (integration/pgbouncer_test.go), unless the tests use a PostgreSQL of yours.
if [ -z "${OUTBOX_TEST_PGBOUNCER_URL:-}" ] && [ -z "${OUTBOX_TEST_POSTGRES_URL:-}" ]; then
	scripts/servers.sh up pgbouncer
fi
load_outbox_env OUTBOX_TEST_POSTGRES_URL OUTBOX_TEST_MYSQL_DSN

# Three modules, one workspace (go.work): the library (.), its tests on real
# servers (./integration) and the examples (./examples).
modules=(./... ./integration/... ./examples/...)

# The library's go directive is its floor: vet it (tests included) with that
# Go release's toolchain, from the module proxy (golang.org/toolchain),
# outside the workspace, so that a newer standard library API or a
# dependency that needs a newer Go fails here.
floor=$(sed -n 's/^go \([0-9.]*\)$/\1/p' go.mod)
floor_toolchain=${OUTBOX_FLOOR_TOOLCHAIN:-go1.24.13}
case "$floor_toolchain" in go"${floor%.*}".*) ;; *) echo "ERROR: go.mod says go $floor but the floor check uses $floor_toolchain" >&2; exit 1 ;; esac
echo "+ GOWORK=off GOTOOLCHAIN=$floor_toolchain go vet ./...   (the library at its go $floor floor)" >&2
GOWORK=off GOTOOLCHAIN=$floor_toolchain go vet ./...
echo "+ go vet ${modules[*]}" >&2
go vet "${modules[@]}"
if [ "$#" -eq 0 ]; then set -- "${modules[@]}"; fi
echo "+ go test -race -count=1 -timeout 12m $*" >&2
go test -race -count=1 -timeout 12m "$@"
