#!/usr/bin/env bash
# Run the inventory synchronisation end to end against local servers (see
# scripts/servers.sh): a product service changing stock through GORM from
# several goroutines, its outbox relayed to Kafka by a cron-scheduled relay,
# an order service keeping a copy through the inbox and answering each
# event, re-sends of the events it fails, and a final check that both
# inventory tables are equal (non-zero exit if not).
#   scripts/demo.sh [args]         examples/postgres: PostgreSQL + the kfake broker
#   scripts/demo.sh mysql [args]   examples/mysql: MariaDB standing in for MySQL + the kfake broker
# args go to the example (e.g. -brokers host:9092 for a real cluster).
# Servers already named by OUTBOX_TEST_POSTGRES_URL / OUTBOX_TEST_MYSQL_DSN, and brokers named by
# OUTBOX_KAFKA_BROKERS / OUTBOX_DEMO_KAFKA_BROKERS, are used as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

# The kfake broker, unless the caller names brokers.
services=() build=()
if [ -z "${OUTBOX_KAFKA_BROKERS:-}${OUTBOX_DEMO_KAFKA_BROKERS:-}" ]; then
	services+=(broker)
	build+=(./integration/cmd/kfakebroker)
fi

example=postgres
case "${1:-postgres}" in
mysql)
	shift || true
	example=mysql
	[ -n "${OUTBOX_TEST_MYSQL_DSN:-}" ] || services+=(mysql)
	env_var=OUTBOX_TEST_MYSQL_DSN
	;;
*)
	[ "${1:-}" = postgres ] && shift
	[ -n "${OUTBOX_TEST_POSTGRES_URL:-}" ] || services+=(postgres)
	env_var=OUTBOX_TEST_POSTGRES_URL
	;;
esac

# One go build for the example and the broker (they share most of their
# packages), so that the first run compiles them once, with a line every
# few seconds; servers.sh's own build of the broker is then a cache hit.
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
with_progress "[demo]" "building ./examples/$example${build:+ and ${build[*]}}" \
	"the first build on a fresh machine takes one to two minutes; later ones take seconds" \
	go build -o "$bin/" "./examples/$example" "${build[@]}"

[ "${#services[@]}" -eq 0 ] || scripts/servers.sh up "${services[@]}"
load_outbox_env "$env_var"
echo "+ examples/$example $* (servers stay up afterwards: make status, make down)" >&2
"$bin/$example" "$@"
