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
services=()
if [ -z "${OUTBOX_KAFKA_BROKERS:-}${OUTBOX_DEMO_KAFKA_BROKERS:-}" ]; then
	services+=(broker)
fi

case "${1:-postgres}" in
mysql)
	shift || true
	[ -n "${OUTBOX_TEST_MYSQL_DSN:-}" ] || services+=(mysql)
	[ "${#services[@]}" -eq 0 ] || scripts/servers.sh up "${services[@]}"
	load_outbox_env OUTBOX_TEST_MYSQL_DSN
	echo "+ go run ./examples/mysql $*" >&2
	go run ./examples/mysql "$@"
	;;
*)
	[ "${1:-}" = postgres ] && shift
	[ -n "${OUTBOX_TEST_POSTGRES_URL:-}" ] || services+=(postgres)
	[ "${#services[@]}" -eq 0 ] || scripts/servers.sh up "${services[@]}"
	load_outbox_env OUTBOX_TEST_POSTGRES_URL
	echo "+ go run ./examples/postgres $*" >&2
	go run ./examples/postgres "$@"
	;;
esac
