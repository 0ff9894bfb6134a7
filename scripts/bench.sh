#!/usr/bin/env bash
# Run the benchmarks against local servers (see scripts/servers.sh).
# Extra arguments replace the package list, e.g.: scripts/bench.sh ./gormoutbox/
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

servers_up_unless_set
load_outbox_env OUTBOX_TEST_POSTGRES_URL OUTBOX_TEST_MYSQL_DSN

if [ "$#" -eq 0 ]; then set -- ./... ./integration/... ./examples/...; fi
echo "+ go test -run '^\$' -bench . -benchmem -count 1 $*" >&2
go test -run '^$' -bench . -benchmem -count 1 "$@"
