#!/usr/bin/env bash
# Run a demo against local servers (see scripts/servers.sh):
#   scripts/demo.sh            examples/postgres: PostgreSQL (+ the kfake broker)
#   scripts/demo.sh mysql      examples/mysql: MariaDB standing in for MySQL
# Servers already named by OUTBOX_TEST_POSTGRES_URL / OUTBOX_TEST_MYSQL_DSN are used as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

case "${1:-postgres}" in
mysql)
	shift || true
	[ -n "${OUTBOX_TEST_MYSQL_DSN:-}" ] || scripts/servers.sh up mysql
	load_outbox_env OUTBOX_TEST_MYSQL_DSN
	echo "+ go run ./examples/mysql $*" >&2
	go run ./examples/mysql "$@"
	;;
*)
	[ "${1:-}" = postgres ] && shift
	services=(broker)
	[ -n "${OUTBOX_TEST_POSTGRES_URL:-}" ] || services+=(postgres)
	scripts/servers.sh up "${services[@]}"
	load_outbox_env OUTBOX_TEST_POSTGRES_URL OUTBOX_DEMO_KAFKA_BROKERS
	echo "+ go run ./examples/postgres $*" >&2
	go run ./examples/postgres "$@"
	;;
esac
