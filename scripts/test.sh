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
echo "+ go vet ${modules[*]}" >&2
go vet "${modules[@]}"
if [ "$#" -eq 0 ]; then set -- "${modules[@]}"; fi
echo "+ go test -race -count=1 -timeout 12m $*" >&2
go test -race -count=1 -timeout 12m "$@"
