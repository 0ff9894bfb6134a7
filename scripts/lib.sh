# shellcheck shell=bash
# Helpers shared by scripts/test.sh, demo.sh and bench.sh. Source it; do not run it.

# load_outbox_env [REQUIRED_VAR...]: export the KEY='value' lines of the env
# file written by "servers.sh up" (see "servers.sh env"), but never override
# a variable the caller already set. Fails if a REQUIRED_VAR ends up unset.
# The project's PgBouncer stands in front of the project's PostgreSQL: its
# OUTBOX_TEST_PGBOUNCER_URL is not exported when the caller set
# OUTBOX_TEST_POSTGRES_URL to a server of their own.
load_outbox_env() {
	local servers content="" line key missing=() own_pg=${OUTBOX_TEST_POSTGRES_URL:-}
	servers="$(dirname "${BASH_SOURCE[0]}")/servers.sh"
	if ! content=$("$servers" env 2>/dev/null); then
		content=""
	fi
	while IFS= read -r line; do
		[[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)= ]] || continue
		key=${BASH_REMATCH[1]}
		if [ "$key" = OUTBOX_TEST_PGBOUNCER_URL ] && [ -n "$own_pg" ]; then
			continue
		fi
		if [ -z "${!key:-}" ]; then
			eval "export $line"
		fi
	done <<<"$content"
	for key in "$@"; do
		[ -n "${!key:-}" ] || missing+=("$key")
	done
	if [ "${#missing[@]}" -gt 0 ]; then
		echo "ERROR: ${missing[*]} not set and not in the env file; did '$servers up' succeed? (see '$servers status')" >&2
		return 1
	fi
}

# servers_up_unless_set: start PostgreSQL and/or MariaDB unless the user
# already points the tests at their own servers via the env variables.
servers_up_unless_set() {
	local services=()
	[ -n "${OUTBOX_TEST_POSTGRES_URL:-}" ] || services+=(postgres)
	[ -n "${OUTBOX_TEST_MYSQL_DSN:-}" ] || services+=(mysql)
	if [ "${#services[@]}" -gt 0 ]; then
		"$(dirname "${BASH_SOURCE[0]}")/servers.sh" up "${services[@]}"
	else
		echo "[servers] OUTBOX_TEST_POSTGRES_URL and OUTBOX_TEST_MYSQL_DSN are set; not starting local servers" >&2
	fi
}

# with_progress PREFIX WHAT HINT CMD...: run CMD, saying what it does first
# ("PREFIX WHAT (HINT)") and then every 8 s that it is still at it, so that
# a long first build never leaves the user without a line for long; returns
# CMD's exit status.
with_progress() {
	local prefix=$1 what=$2 hint=$3 pid start rc=0
	shift 3
	printf '%s %s (%s)\n' "$prefix" "$what" "$hint" >&2
	"$@" &
	pid=$!
	start=$SECONDS
	while kill -0 "$pid" 2>/dev/null; do
		sleep 1
		if [ $(((SECONDS - start) % 8)) -eq 0 ] && kill -0 "$pid" 2>/dev/null; then
			printf '%s still %s (%ds so far)\n' "$prefix" "$what" "$((SECONDS - start))" >&2
		fi
	done
	wait "$pid" || rc=$?
	return "$rc"
}
