#!/usr/bin/env bash
# The project's fault suite, long version (make faults): two relay processes
# and 16 writers on PostgreSQL and on MariaDB, with relays SIGKILLed, the
# broker stopped for 60 s, the relays' database connections cut, the database
# server crashed and restarted (on an instance of the suite's own) and the
# inbox consumer SIGKILLed; the topic is checked against the business table
# (integration/faults). The short version runs in make test.
#
# Usage: scripts/faults.sh [-report PATH] [-race] [-run REGEXP]
#   -report PATH  write the results as markdown (docs/reliability.md)
#   -race         build with the race detector (slower; make test runs the short suite with it)
#   -run REGEXP   only these subtests, e.g. -run 'TestFaults/group/postgres/broker-outage'
# Servers: those of OUTBOX_TEST_POSTGRES_URL / OUTBOX_TEST_MYSQL_DSN, else the
# project's (scripts/servers.sh). Takes about 10 minutes here.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

report="" race=() run='^TestFaults$'
while [ "$#" -gt 0 ]; do
	case $1 in
	-report) report=$(realpath -m "$2"); shift 2 ;;
	-race) race=(-race); shift ;;
	-run) run=$2; shift 2 ;;
	*) echo "usage: $0 [-report PATH] [-race] [-run REGEXP]" >&2; exit 2 ;;
	esac
done

servers_up_unless_set
load_outbox_env OUTBOX_TEST_POSTGRES_URL OUTBOX_TEST_MYSQL_DSN
args=(-faults.long)
if [ -n "$report" ]; then args+=("-faults.report=$report"); fi
echo "+ go test ${race[*]} -count=1 -timeout 60m -v -run '$run' ./integration/faults/ -args ${args[*]}" >&2
go test "${race[@]}" -count=1 -timeout 60m -v -run "$run" ./integration/faults/ -args "${args[@]}"
if [ -n "$report" ]; then echo "wrote $report" >&2; fi
