#!/usr/bin/env bash
# Local test servers for go-outbox: PostgreSQL 15, MariaDB, PgBouncer (in
# transaction pooling mode, in front of that PostgreSQL) and an in-memory
# Kafka-compatible broker (kfake, ./integration/cmd/kfakebroker). No docker, no systemd.
#
# Usage: scripts/servers.sh <command> [service...]
#
#   up     [postgres|mysql|pgbouncer|broker|all]...  start (or reuse) servers; default: postgres mysql pgbouncer
#   down   [postgres|mysql|pgbouncer|broker|all]...  stop servers started from the state dir; default: all
#   status                                           show what is running
#   env                                              print the env file (KEY='value' lines)
#   reset  [postgres|mysql|pgbouncer|broker|all]...  stop and DELETE the data of servers; default: all
#
# pgbouncer needs postgres and starts it too. It listens on 127.0.0.1 with
# pool_mode = transaction, forwards every database name to the same database
# on our PostgreSQL (wildcard entry) and authenticates the outbox user with
# SCRAM from $OUTBOX_STATE_DIR/pgbouncer/userlist.txt; "outbox_session" is
# the database outbox in pool_mode = session (for the LISTEN tests).
#
# All state (data dirs, pid files, sockets, logs, chosen ports, env file) lives
# in ${OUTBOX_STATE_DIR:-/var/tmp/go-outbox}, outside the checkout, so several
# clones share one set of servers. "up" is idempotent and reuses servers that
# are already running from the state dir; if a default port is taken by
# something else, a free port is chosen and recorded. Concurrent invocations
# are serialised with flock(1) on $OUTBOX_STATE_DIR/lock.
#
# Environment knobs (all optional):
#   OUTBOX_STATE_DIR       state directory (default /var/tmp/go-outbox)
#   OUTBOX_PG_PORT         preferred PostgreSQL port (default 55432)
#   OUTBOX_MYSQL_PORT      preferred MariaDB port (default 53306)
#   OUTBOX_BROKER_PORT     preferred broker port (default 59092)
#   OUTBOX_PGBOUNCER_PORT  preferred PgBouncer port (default 56432)
#   OUTBOX_PG_BIN          PostgreSQL bin dir (default /usr/lib/postgresql/15/bin)
#   OUTBOX_PG_OS_USER      OS user running PostgreSQL and PgBouncer when root (default postgres, else outbox-pg)
#   OUTBOX_START_TIMEOUT   seconds to wait for a server to become ready (default 90)
#   OUTBOX_LOCK_TIMEOUT    seconds to wait for the state-dir lock (default 900)
set -euo pipefail
umask 022

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
. "$SCRIPT_DIR/lib.sh" # with_progress

STATE=${OUTBOX_STATE_DIR:-/var/tmp/go-outbox}
case $STATE in /*) ;; *) STATE=$PWD/$STATE ;; esac
STATE=${STATE%/}

START_TIMEOUT=${OUTBOX_START_TIMEOUT:-90}
LOCK_TIMEOUT=${OUTBOX_LOCK_TIMEOUT:-900}
ENV_FILE=$STATE/env
LOCK_FILE=$STATE/lock

PG_DEFAULT_PORT=${OUTBOX_PG_PORT:-55432}
MY_DEFAULT_PORT=${OUTBOX_MYSQL_PORT:-53306}
BR_DEFAULT_PORT=${OUTBOX_BROKER_PORT:-59092}
PB_DEFAULT_PORT=${OUTBOX_PGBOUNCER_PORT:-56432}

PG_BIN=${OUTBOX_PG_BIN:-/usr/lib/postgresql/15/bin}
PG_DIR=$STATE/postgres
PG_DATA=$PG_DIR/data
PG_RUN=$PG_DIR/run
PG_LOG=$PG_DIR/postgres.log
PG_PORT_FILE=$PG_DIR/port
PG_PID_FILE=$PG_DATA/postmaster.pid # written by postgres itself

MY_DIR=$STATE/mysql
MY_DATA=$MY_DIR/data
MY_RUN=$MY_DIR/run
MY_TMP=$MY_DIR/tmp
MY_SOCK=$MY_RUN/mysqld.sock
MY_PID_FILE=$MY_RUN/mariadbd.pid # written by mariadbd itself
MY_LOG=$MY_DIR/mariadbd.log
MY_PORT_FILE=$MY_DIR/port
MY_OS_USER=mysql

BR_DIR=$STATE/broker
BR_BIN=$STATE/bin/kfakebroker
BR_PID_FILE=$BR_DIR/kfakebroker.pid # written by kfakebroker itself
BR_LOG=$BR_DIR/kfakebroker.log
BR_PORT_FILE=$BR_DIR/port

PB_DIR=$STATE/pgbouncer
PB_CONF=$PB_DIR/pgbouncer.ini
PB_USERLIST=$PB_DIR/userlist.txt
PB_PID_FILE=$PB_DIR/pgbouncer.pid # written by pgbouncer itself
PB_LOG=$PB_DIR/pgbouncer.log
PB_PORT_FILE=$PB_DIR/port

IS_ROOT=0
[ "$(id -u)" -eq 0 ] && IS_ROOT=1

# ---------------------------------------------------------------------------
# helpers

log() { printf '[servers] %s\n' "$*" >&2; }

die() {
	printf '[servers] ERROR: %s\n' "$*" >&2
	exit 1
}

# fail_with_log MESSAGE LOGFILE: print the message and the tail of the log, exit 1.
fail_with_log() {
	local msg=$1 logf=$2
	printf '[servers] ERROR: %s\n' "$msg" >&2
	printf '[servers] see the log file: %s\n' "$logf" >&2
	if [ -f "$logf" ]; then
		printf -- '----- last 40 lines of %s -----\n' "$logf" >&2
		tail -n 40 "$logf" >&2 || true
		printf -- '----- end of %s -----\n' "$logf" >&2
	fi
	exit 1
}

# read_pid FILE: print the pid stored in the first line of FILE, if any.
read_pid() {
	local f=$1 pid=
	[ -r "$f" ] || return 1
	IFS= read -r pid <"$f" || true
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	printf '%s\n' "$pid"
}

# is_ours PID NEEDLE: the process exists and its command line contains NEEDLE
# (a path inside the state dir), so it is one of ours and not a recycled pid.
is_ours() {
	local pid=$1 needle=$2 cmd
	[ -r "/proc/$pid/cmdline" ] || return 1
	cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
	[[ $cmd == *"$needle"* ]]
}

# port_in_use PORT: something listens on PORT (any address) or accepts on 127.0.0.1.
port_in_use() {
	local p=$1
	if command -v ss >/dev/null 2>&1; then
		if [ -n "$(ss -Hltn "sport = :$p" 2>/dev/null)" ]; then
			return 0
		fi
	fi
	if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
		return 0
	fi
	return 1
}

tcp_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# pick_port NAME DEFAULT RECORDED: the first free port among DEFAULT,
# RECORDED and DEFAULT+1..DEFAULT+200. Only called when our server is down,
# so a busy port is never ours.
pick_port() {
	local name=$1 def=$2 rec=${3:-} p
	for p in "$def" $rec $(seq $((def + 1)) $((def + 200))); do
		if ! [[ $p =~ ^[0-9]+$ ]] || [ "$p" -le 0 ] || [ "$p" -ge 65536 ]; then continue; fi
		if ! port_in_use "$p"; then
			if [ "$p" != "$def" ]; then
				log "$name: default port $def is in use by something that is not ours; using port $p"
			fi
			printf '%s\n' "$p"
			return 0
		fi
	done
	die "$name: no free port found in $def..$((def + 200))"
}

read_port() { # read_port FILE
	local p=
	if [ -r "$1" ]; then IFS= read -r p <"$1" || true; fi
	[[ $p =~ ^[0-9]+$ ]] && printf '%s\n' "$p"
}

write_file() { # write_file FILE CONTENT (atomic)
	local tmp="$1.tmp.$$"
	printf '%s\n' "$2" >"$tmp"
	mv -f "$tmp" "$1"
}

# wait_ready NAME LOGFILE PIDFN CHECKFN: poll CHECKFN until it succeeds, the
# process (pid printed by PIDFN) dies, or START_TIMEOUT elapses.
wait_ready() {
	local name=$1 logf=$2 pidfn=$3 checkfn=$4 deadline pid
	deadline=$((SECONDS + START_TIMEOUT))
	while :; do
		if "$checkfn"; then
			return 0
		fi
		if ! pid=$("$pidfn"); then
			fail_with_log "$name exited during startup" "$logf"
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			fail_with_log "$name (pid $pid) did not become ready within ${START_TIMEOUT}s" "$logf"
		fi
		sleep 0.2
	done
}

# stop_pid NAME PID TIMEOUT: SIGTERM, wait, SIGKILL as a last resort.
stop_pid() {
	local name=$1 pid=$2 timeout=$3 deadline
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + timeout))
	while [ -d "/proc/$pid" ]; do
		# a zombie (not reaped by a parent) counts as stopped
		if [ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" = Z ]; then
			break
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			log "$name (pid $pid) did not stop within ${timeout}s; sending SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
			sleep 1
			break
		fi
		sleep 0.2
	done
}

# Install Debian packages without letting their maintainer scripts start
# system services (policy-rc.d), so nothing but our own servers run.
apt_install() {
	[ "$IS_ROOT" -eq 1 ] || die "need to install $* but not running as root; install it with: sudo apt-get install -y $*"
	command -v apt-get >/dev/null 2>&1 || die "need to install $* but apt-get is not available"
	local policy=/usr/sbin/policy-rc.d created=0 rc=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# temporary, written by go-outbox scripts/servers.sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		created=1
	fi
	log "installing $* with apt-get (this can take a minute)"
	if ! { apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y "$@"; } >&2; then
		rc=1
	fi
	[ "$created" -eq 1 ] && rm -f "$policy"
	[ "$rc" -eq 0 ] || die "apt-get install $* failed"
}

ensure_state_dir() {
	mkdir -p "$STATE" "$STATE/bin"
	chmod 755 "$STATE" 2>/dev/null || true
}

acquire_lock() {
	ensure_state_dir
	exec 9>>"$LOCK_FILE"
	if ! flock -n 9; then
		log "another servers.sh holds $LOCK_FILE; waiting up to ${LOCK_TIMEOUT}s"
		flock -w "$LOCK_TIMEOUT" 9 || die "timed out waiting for $LOCK_FILE"
	fi
}

# check_traversable USER DIR: USER can reach DIR (all parents need +x).
check_traversable() {
	local user=$1 dir=$2
	[ "$IS_ROOT" -eq 1 ] || return 0
	if ! (cd / && runuser -u "$user" -- test -x "$dir") 2>/dev/null; then
		die "OS user '$user' cannot access $dir; choose an OUTBOX_STATE_DIR whose parent directories are world-searchable (e.g. /var/tmp/go-outbox)"
	fi
}

# ---------------------------------------------------------------------------
# PostgreSQL

PG_OS_USER=${OUTBOX_PG_OS_USER:-}

ensure_pg_bin() {
	if [ ! -x "$PG_BIN/postgres" ]; then
		local d
		for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V -r); do
			if [ -x "$d/postgres" ]; then
				log "postgres: $PG_BIN not found, using $d"
				PG_BIN=$d
				return 0
			fi
		done
		apt_install postgresql-15
		PG_BIN=/usr/lib/postgresql/15/bin
		[ -x "$PG_BIN/postgres" ] || die "postgres: $PG_BIN/postgres still missing after install"
	fi
}

ensure_pg_user() {
	if [ "$IS_ROOT" -eq 0 ]; then
		PG_OS_USER=$(id -un)
		return 0
	fi
	if [ -z "$PG_OS_USER" ]; then
		if id -u postgres >/dev/null 2>&1; then
			PG_OS_USER=postgres
		else
			PG_OS_USER=outbox-pg
		fi
	fi
	if ! id -u "$PG_OS_USER" >/dev/null 2>&1; then
		log "postgres: creating system user $PG_OS_USER"
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin "$PG_OS_USER"
	fi
	[ "$(id -u "$PG_OS_USER")" -ne 0 ] || die "postgres: OS user $PG_OS_USER must not be root"
}

as_pg() { # run a command as the PostgreSQL OS user
	if [ "$IS_ROOT" -eq 1 ]; then
		(cd / && runuser -u "$PG_OS_USER" -- "$@")
	else
		"$@"
	fi
}

pg_pid() { # pid of our running postmaster, if any
	local pid
	pid=$(read_pid "$PG_PID_FILE") || return 1
	is_ours "$pid" "-D $PG_DATA" || return 1
	printf '%s\n' "$pid"
}

pg_port() { # port of our running postmaster (line 4 of postmaster.pid), else recorded port
	local p
	p=$(sed -n 4p "$PG_PID_FILE" 2>/dev/null) || true
	if [[ $p =~ ^[0-9]+$ ]]; then
		printf '%s\n' "$p"
	else
		read_port "$PG_PORT_FILE"
	fi
}

pg_ready() {
	local port
	port=$(pg_port) || return 1
	"$PG_BIN/pg_isready" -q -t 2 -h "$PG_RUN" -p "$port" -U postgres -d postgres &&
		"$PG_BIN/pg_isready" -q -t 2 -h 127.0.0.1 -p "$port" -U postgres -d postgres
}

pg_write_conf() {
	cat >"$PG_DATA/outbox.conf" <<EOF
# Written by go-outbox scripts/servers.sh on every start; edits are lost.
# Throwaway test server. Durability settings (fsync, synchronous_commit,
# full_page_writes) stay at their safe defaults because we benchmark with them.
listen_addresses = '127.0.0.1'
unix_socket_directories = '$PG_RUN'
max_connections = 200
shared_buffers = 256MB
work_mem = 8MB
maintenance_work_mem = 128MB
max_wal_size = 2GB
min_wal_size = 256MB
checkpoint_timeout = 15min
fsync = on
synchronous_commit = on
full_page_writes = on
timezone = 'UTC'
log_timezone = 'UTC'
lc_messages = 'C'
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
EOF
	chmod 644 "$PG_DATA/outbox.conf"
	if [ "$IS_ROOT" -eq 1 ]; then chown "$PG_OS_USER:" "$PG_DATA/outbox.conf"; fi
	if ! grep -q "^include_if_exists = 'outbox.conf'" "$PG_DATA/postgresql.conf"; then
		printf "\n# go-outbox test settings\ninclude_if_exists = 'outbox.conf'\n" >>"$PG_DATA/postgresql.conf"
	fi
}

pg_up() {
	ensure_pg_bin
	ensure_pg_user
	mkdir -p "$PG_DIR"
	check_traversable "$PG_OS_USER" "$STATE"
	local pid port
	if pid=$(pg_pid); then
		wait_ready "postgres" "$PG_LOG" pg_pid pg_ready
		port=$(pg_port)
		log "postgres: already running (pid $pid, port $port), reusing"
	else
		if [ "$IS_ROOT" -eq 1 ]; then chown "$PG_OS_USER:" "$PG_DIR"; fi
		chmod 700 "$PG_DIR"
		as_pg mkdir -p "$PG_RUN"
		as_pg chmod 755 "$PG_RUN"
		# pg_ctl opens the log as the postgres user
		touch "$PG_LOG"
		if [ "$IS_ROOT" -eq 1 ]; then chown "$PG_OS_USER:" "$PG_LOG"; fi
		# Stale lock files from a crash (or a reboot) would make postgres
		# refuse to start if their pid was recycled.
		rm -f "$PG_PID_FILE" "$PG_RUN"/.s.PGSQL.*

		if [ -f "$PG_DATA/PG_VERSION" ]; then
			local have want
			have=$(cat "$PG_DATA/PG_VERSION")
			want=$("$PG_BIN/pg_ctl" --version | sed -E 's/.* ([0-9]+)(\.[0-9]+)*.*/\1/')
			[ "$have" = "$want" ] || die "postgres: $PG_DATA was initialised by PostgreSQL $have but $PG_BIN is $want; run: $0 reset postgres"
		else
			log "postgres: initialising $PG_DATA"
			rm -rf "$PG_DATA"
			if ! as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth-local=trust --auth-host=trust \
				--encoding=UTF8 --locale=C.UTF-8 >>"$PG_LOG" 2>&1; then
				rm -rf "$PG_DATA"
				fail_with_log "postgres: initdb failed" "$PG_LOG"
			fi
		fi
		pg_write_conf

		port=$(pick_port postgres "$PG_DEFAULT_PORT" "$(read_port "$PG_PORT_FILE" || true)")
		local sock="$PG_RUN/.s.PGSQL.$port"
		[ "${#sock}" -le 107 ] || die "postgres: socket path $sock is too long (max 107 bytes); use a shorter OUTBOX_STATE_DIR"

		log "postgres: starting on 127.0.0.1:$port (log: $PG_LOG)"
		# 9>&- : the server must not inherit our flock fd.
		# shellcheck disable=SC2094 # pg_ctl and we both only append to the log
		if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -o "-p $port" -w -t "$START_TIMEOUT" -s start \
			>>"$PG_LOG" 2>&1 </dev/null 9>&-; then
			fail_with_log "postgres: failed to start" "$PG_LOG"
		fi
		write_file "$PG_PORT_FILE" "$port"
		wait_ready "postgres" "$PG_LOG" pg_pid pg_ready
		log "postgres: started (pid $(pg_pid), port $port)"
	fi
	write_file "$PG_PORT_FILE" "$port"
	pg_provision "$port"
}

pg_provision() {
	local port=$1
	if ! "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_RUN" -p "$port" -U postgres -d postgres \
		>>"$PG_LOG" 2>&1 <<'SQL'; then
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'outbox') THEN
    CREATE ROLE outbox LOGIN SUPERUSER PASSWORD 'outbox';
  ELSE
    ALTER ROLE outbox LOGIN SUPERUSER PASSWORD 'outbox';
  END IF;
END
$$;
SELECT 'CREATE DATABASE outbox OWNER outbox'
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'outbox')\gexec
SQL
		fail_with_log "postgres: creating role/database outbox failed" "$PG_LOG"
	fi
}

pg_down() {
	local pid
	if ! pid=$(pg_pid); then
		log "postgres: not running"
		return 0
	fi
	ensure_pg_bin
	ensure_pg_user
	log "postgres: stopping (pid $pid)"
	if ! as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 60 -s stop >>"$PG_LOG" 2>&1 </dev/null; then
		log "postgres: fast shutdown failed, trying immediate"
		as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" -m immediate -w -t 30 -s stop >>"$PG_LOG" 2>&1 </dev/null ||
			fail_with_log "postgres: could not stop pid $pid" "$PG_LOG"
	fi
	log "postgres: stopped"
}

pg_reset() {
	pg_down
	log "postgres: deleting $PG_DIR"
	rm -rf "$PG_DIR"
}

# ---------------------------------------------------------------------------
# MariaDB

MARIADBD=
MY_INSTALL_DB=
MY_ADMIN=
MY_CLIENT=
MY_ADMIN_USER=

find_prog() { # find_prog NAME...: first of NAME found in PATH or /usr/sbin, /usr/bin
	local n
	for n in "$@"; do
		if command -v "$n" >/dev/null 2>&1; then
			command -v "$n"
			return 0
		fi
		for d in /usr/sbin /usr/bin /usr/local/sbin /usr/local/bin; do
			if [ -x "$d/$n" ]; then
				printf '%s\n' "$d/$n"
				return 0
			fi
		done
	done
	return 1
}

ensure_mariadb() {
	if ! MARIADBD=$(find_prog mariadbd); then
		log "mysql: mariadbd not found"
		apt_install mariadb-server
		MARIADBD=$(find_prog mariadbd) || die "mysql: mariadbd still missing after installing mariadb-server"
	fi
	MY_INSTALL_DB=$(find_prog mariadb-install-db mysql_install_db) || die "mysql: mariadb-install-db not found (package mariadb-server)"
	MY_ADMIN=$(find_prog mariadb-admin mysqladmin) || die "mysql: mariadb-admin not found (package mariadb-client)"
	MY_CLIENT=$(find_prog mariadb mysql) || die "mysql: mariadb client not found (package mariadb-client)"
	if [ "$IS_ROOT" -eq 1 ]; then
		id -u "$MY_OS_USER" >/dev/null 2>&1 || die "mysql: OS user $MY_OS_USER does not exist (it is created by the mariadb-server package)"
		MY_ADMIN_USER=root
	else
		MY_OS_USER=$(id -un)
		MY_ADMIN_USER=$MY_OS_USER
	fi
}

my_pid() {
	local pid
	pid=$(read_pid "$MY_PID_FILE") || return 1
	is_ours "$pid" "--datadir=$MY_DATA" || return 1
	printf '%s\n' "$pid"
}

# Before mariadbd writes its pid file, track the launched process instead.
MY_LAUNCH_PID=
my_pid_or_launcher() {
	my_pid && return 0
	[ -n "$MY_LAUNCH_PID" ] && is_ours "$MY_LAUNCH_PID" "--datadir=$MY_DATA" && printf '%s\n' "$MY_LAUNCH_PID"
}

my_ready() {
	"$MY_ADMIN" --no-defaults --protocol=socket --socket="$MY_SOCK" -u"$MY_ADMIN_USER" \
		--connect-timeout=2 ping >/dev/null 2>&1
}

my_port() { read_port "$MY_PORT_FILE"; }

my_up() {
	ensure_mariadb
	mkdir -p "$MY_DIR"
	check_traversable "$MY_OS_USER" "$STATE"
	local pid port
	if pid=$(my_pid); then
		wait_ready "mysql" "$MY_LOG" my_pid my_ready
		port=$(my_port) || die "mysql: running (pid $pid) but $MY_PORT_FILE is missing; run: $0 down mysql"
		log "mysql: already running (pid $pid, port $port), reusing"
	else
		mkdir -p "$MY_RUN" "$MY_TMP"
		if [ "$IS_ROOT" -eq 1 ]; then chown "$MY_OS_USER:" "$MY_DIR" "$MY_RUN" "$MY_TMP"; fi
		chmod 750 "$MY_DIR"
		chmod 755 "$MY_RUN"
		rm -f "$MY_PID_FILE" "$MY_SOCK" "$MY_SOCK.lock"

		local common=(
			--character-set-server=utf8mb4
			--collation-server=utf8mb4_general_ci
			--innodb-log-file-size=256M
		)
		local user_opt=()
		[ "$IS_ROOT" -eq 1 ] && user_opt=(--user="$MY_OS_USER")

		if [ ! -d "$MY_DATA/mysql" ]; then
			log "mysql: initialising $MY_DATA"
			rm -rf "$MY_DATA"
			if ! "$MY_INSTALL_DB" --no-defaults "${user_opt[@]}" --datadir="$MY_DATA" \
				--auth-root-authentication-method=socket --skip-test-db --skip-name-resolve \
				--tmpdir="$MY_TMP" "${common[@]}" >>"$MY_LOG" 2>&1 </dev/null; then
				rm -rf "$MY_DATA"
				fail_with_log "mysql: mariadb-install-db failed" "$MY_LOG"
			fi
		fi

		port=$(pick_port mysql "$MY_DEFAULT_PORT" "$(my_port || true)")
		[ "${#MY_SOCK}" -le 107 ] || die "mysql: socket path $MY_SOCK is too long (max 107 bytes); use a shorter OUTBOX_STATE_DIR"

		log "mysql: starting mariadbd on 127.0.0.1:$port (log: $MY_LOG)"
		# Started directly (not via systemd/service), detached with setsid,
		# stdio to the log, and without our flock fd (9>&-).
		setsid "$MARIADBD" --no-defaults "${user_opt[@]}" \
			--datadir="$MY_DATA" --socket="$MY_SOCK" --pid-file="$MY_PID_FILE" \
			--port="$port" --bind-address=127.0.0.1 --tmpdir="$MY_TMP" \
			--skip-name-resolve --max-connections=200 --max-allowed-packet=64M \
			--innodb-buffer-pool-size=256M --default-time-zone=+00:00 \
			"${common[@]}" \
			>>"$MY_LOG" 2>&1 </dev/null 9>&- &
		MY_LAUNCH_PID=$!
		write_file "$MY_PORT_FILE" "$port"
		wait_ready "mysql" "$MY_LOG" my_pid_or_launcher my_ready
		pid=$(my_pid) || fail_with_log "mysql: answers but pid file $MY_PID_FILE is missing" "$MY_LOG"
		log "mysql: started (pid $pid, port $port)"
	fi
	my_provision
}

my_provision() {
	if ! "$MY_CLIENT" --no-defaults --protocol=socket --socket="$MY_SOCK" -u"$MY_ADMIN_USER" --batch \
		>>"$MY_LOG" 2>&1 <<'SQL'; then
CREATE DATABASE IF NOT EXISTS outbox CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci;
CREATE USER IF NOT EXISTS 'outbox'@'%' IDENTIFIED BY 'outbox';
CREATE USER IF NOT EXISTS 'outbox'@'127.0.0.1' IDENTIFIED BY 'outbox';
CREATE USER IF NOT EXISTS 'outbox'@'localhost' IDENTIFIED BY 'outbox';
ALTER USER 'outbox'@'%' IDENTIFIED BY 'outbox';
ALTER USER 'outbox'@'127.0.0.1' IDENTIFIED BY 'outbox';
ALTER USER 'outbox'@'localhost' IDENTIFIED BY 'outbox';
GRANT ALL PRIVILEGES ON *.* TO 'outbox'@'%' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'outbox'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'outbox'@'localhost' WITH GRANT OPTION;
SQL
		fail_with_log "mysql: creating user/database outbox failed" "$MY_LOG"
	fi
}

my_down() {
	local pid
	if ! pid=$(my_pid); then
		log "mysql: not running"
		return 0
	fi
	log "mysql: stopping (pid $pid)"
	stop_pid mysql "$pid" 120
	rm -f "$MY_PID_FILE"
	log "mysql: stopped"
}

my_reset() {
	my_down
	log "mysql: deleting $MY_DIR"
	rm -rf "$MY_DIR"
}

# ---------------------------------------------------------------------------
# PgBouncer, in transaction pooling mode, in front of our PostgreSQL

PGBOUNCER=
PG_UP_DONE=0

pg_up_once() { # pg_up, at most once per invocation (pgbouncer needs it too)
	[ "$PG_UP_DONE" -eq 1 ] && return 0
	pg_up
	PG_UP_DONE=1
}

ensure_pgbouncer() {
	if ! PGBOUNCER=$(find_prog pgbouncer); then
		log "pgbouncer: pgbouncer not found"
		apt_install pgbouncer
		PGBOUNCER=$(find_prog pgbouncer) || die "pgbouncer: still missing after installing the pgbouncer package"
	fi
}

pb_pid() {
	local pid
	pid=$(read_pid "$PB_PID_FILE") || return 1
	is_ours "$pid" "$PB_CONF" || return 1
	printf '%s\n' "$pid"
}

# pgbouncer -d returns before its daemon writes the pid file: during the
# first seconds after the launch, a missing pid file means "starting".
PB_LAUNCH_DEADLINE=0
pb_pid_or_launching() {
	pb_pid && return 0
	[ "$SECONDS" -lt "$PB_LAUNCH_DEADLINE" ] && printf 'starting\n'
}

pb_port() { read_port "$PB_PORT_FILE"; }

pb_admin() { # pb_admin SQL: run SQL on the admin console as outbox
	local port
	port=$(pb_port) || return 1
	PGPASSWORD=outbox PGCONNECT_TIMEOUT=2 "$PG_BIN/psql" -X -q -A -t -h 127.0.0.1 -p "$port" \
		-U outbox -d pgbouncer -c "$1" 2>/dev/null </dev/null
}

# pb_ready: its admin console answers the outbox user (needs no PostgreSQL).
pb_ready() {
	pb_pid >/dev/null || return 1
	if [ -x "$PG_BIN/psql" ]; then
		pb_admin 'SHOW VERSION' >/dev/null
	else
		tcp_answers "$(pb_port)"
	fi
}

# pb_conf PORT PGPORT: the config file's content.
#
# Transaction pooling keeps no session state between transactions. Of the
# startup parameters, PgBouncer 1.18 tracks a few itself (client_encoding,
# DateStyle, TimeZone, standard_conforming_strings, application_name) and
# sets them on whichever server connection a transaction gets; any other,
# search_path included, is refused ("unsupported startup parameter"), and
# ignore_startup_parameters would only drop it silently. So the tests use a
# database each (the wildcard entry) instead of a schema in search_path.
pb_conf() {
	cat <<CONF
; Written by go-outbox scripts/servers.sh; edits are lost.
; Throwaway test pooler in front of the project's PostgreSQL (127.0.0.1:$2).
[databases]
; the database outbox in session pooling mode, where LISTEN works
outbox_session = host=127.0.0.1 port=$2 dbname=outbox pool_mode=session
; any other name: the database of that name (the tests create one each)
* = host=127.0.0.1 port=$2

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $1
unix_socket_dir =
pool_mode = transaction
auth_type = scram-sha-256
auth_file = $PB_USERLIST
admin_users = outbox
logfile = $PB_LOG
pidfile = $PB_PID_FILE
max_client_conn = 500
default_pool_size = 10
server_idle_timeout = 30
autodb_idle_timeout = 60
log_connections = 0
log_disconnections = 0
CONF
}

pb_write() { # pb_write FILE CONTENT MODE: atomic, owned by the PgBouncer OS user
	local tmp="$1.tmp.$$"
	printf '%s\n' "$2" >"$tmp"
	chmod "$3" "$tmp"
	if [ "$IS_ROOT" -eq 1 ]; then chown "$PG_OS_USER:" "$tmp"; fi
	mv -f "$tmp" "$1"
}

pb_up() {
	ensure_pgbouncer
	pg_up_once # also sets PG_OS_USER and PG_BIN
	local pgport pid port
	pgport=$(pg_port) || die "pgbouncer: no PostgreSQL port"
	mkdir -p "$PB_DIR"
	if [ "$IS_ROOT" -eq 1 ]; then chown "$PG_OS_USER:" "$PB_DIR"; fi
	chmod 700 "$PB_DIR" # the userlist holds a password
	# SCRAM towards the clients, from the password in plain text, which
	# also lets PgBouncer log in to a server that asks for one.
	pb_write "$PB_USERLIST" '"outbox" "outbox"' 600
	if pid=$(pb_pid); then
		port=$(pb_port) || die "pgbouncer: running (pid $pid) but $PB_PORT_FILE is missing; run: $0 down pgbouncer"
		if [ "$(pb_conf "$port" "$pgport")" = "$(cat "$PB_CONF" 2>/dev/null)" ]; then
			wait_ready pgbouncer "$PB_LOG" pb_pid pb_ready
			log "pgbouncer: already running (pid $pid, port $port), reusing"
			return 0
		fi
		log "pgbouncer: running (pid $pid) with another config (PostgreSQL moved to port $pgport, or another servers.sh); restarting it"
		stop_pid pgbouncer "$pid" 20
	fi
	rm -f "$PB_PID_FILE"
	port=$(pick_port pgbouncer "$PB_DEFAULT_PORT" "$(pb_port || true)")
	write_file "$PB_PORT_FILE" "$port"
	pb_write "$PB_CONF" "$(pb_conf "$port" "$pgport")" 644
	touch "$PB_LOG"
	if [ "$IS_ROOT" -eq 1 ]; then chown "$PG_OS_USER:" "$PB_LOG"; fi
	log "pgbouncer: starting on 127.0.0.1:$port, pool_mode = transaction, in front of 127.0.0.1:$pgport (log: $PB_LOG)"
	# -d: it detaches itself. As the PostgreSQL OS user: it refuses to run
	# as root. 9>&- : it must not inherit our flock fd.
	PB_LAUNCH_DEADLINE=$((SECONDS + 10))
	if ! as_pg "$PGBOUNCER" -d "$PB_CONF" >>"$PB_LOG" 2>&1 </dev/null 9>&-; then
		fail_with_log "pgbouncer: failed to start" "$PB_LOG"
	fi
	wait_ready pgbouncer "$PB_LOG" pb_pid_or_launching pb_ready
	log "pgbouncer: started (pid $(pb_pid), port $port, $(pb_admin 'SHOW VERSION' || echo 'version unknown'))"
}

pb_down() {
	local pid
	if ! pid=$(pb_pid); then
		log "pgbouncer: not running"
		return 0
	fi
	log "pgbouncer: stopping (pid $pid)"
	stop_pid pgbouncer "$pid" 20
	rm -f "$PB_PID_FILE"
	log "pgbouncer: stopped"
}

pb_reset() {
	pb_down
	log "pgbouncer: deleting $PB_DIR"
	rm -rf "$PB_DIR"
}

# ---------------------------------------------------------------------------
# kfake broker (./integration/cmd/kfakebroker)

br_pid() {
	local pid
	pid=$(read_pid "$BR_PID_FILE") || return 1
	is_ours "$pid" "-pidfile $BR_PID_FILE" || return 1
	printf '%s\n' "$pid"
}

BR_LAUNCH_PID=
br_pid_or_launcher() {
	br_pid && return 0
	[ -n "$BR_LAUNCH_PID" ] && is_ours "$BR_LAUNCH_PID" "-pidfile $BR_PID_FILE" && printf '%s\n' "$BR_LAUNCH_PID"
}

br_port() { read_port "$BR_PORT_FILE"; }

br_ready() {
	local port
	br_pid >/dev/null || return 1
	port=$(br_port) || return 1
	tcp_answers "$port"
}

br_up() {
	mkdir -p "$BR_DIR" "$STATE/bin"
	local pid port
	if pid=$(br_pid); then
		wait_ready "broker" "$BR_LOG" br_pid br_ready
		port=$(br_port) || die "broker: running (pid $pid) but $BR_PORT_FILE is missing; run: $0 down broker"
		log "broker: already running (pid $pid, port $port), reusing"
		return 0
	fi
	rm -f "$BR_PID_FILE"
	command -v go >/dev/null 2>&1 || die "broker: the go toolchain is needed to build ./integration/cmd/kfakebroker"
	[ -f "$REPO_ROOT/integration/cmd/kfakebroker/main.go" ] || die "broker: $REPO_ROOT/integration/cmd/kfakebroker not found"
	local tmp="$BR_BIN.tmp.$$"
	if ! with_progress "[servers] broker:" "building $BR_BIN from ./integration/cmd/kfakebroker" \
		"the first build compiles the Kafka-protocol broker, about a minute on 2 cores; later ones take seconds" \
		bash -c 'cd "$1" && go build -o "$2" ./integration/cmd/kfakebroker >>"$3" 2>&1 </dev/null' _ "$REPO_ROOT" "$tmp" "$BR_LOG"; then
		rm -f "$tmp"
		fail_with_log "broker: go build ./integration/cmd/kfakebroker failed" "$BR_LOG"
	fi
	mv -f "$tmp" "$BR_BIN"

	port=$(pick_port broker "$BR_DEFAULT_PORT" "$(br_port || true)")
	write_file "$BR_PORT_FILE" "$port"
	log "broker: starting kfake on 127.0.0.1:$port (log: $BR_LOG)"
	setsid "$BR_BIN" -addr "127.0.0.1:$port" -pidfile "$BR_PID_FILE" \
		>>"$BR_LOG" 2>&1 </dev/null 9>&- &
	BR_LAUNCH_PID=$!
	wait_ready "broker" "$BR_LOG" br_pid_or_launcher br_ready
	log "broker: started (pid $(br_pid), port $port)"
}

br_down() {
	local pid
	if ! pid=$(br_pid); then
		log "broker: not running"
		return 0
	fi
	log "broker: stopping (pid $pid)"
	stop_pid broker "$pid" 20
	rm -f "$BR_PID_FILE"
	log "broker: stopped"
}

br_reset() {
	br_down
	log "broker: deleting $BR_DIR and $BR_BIN"
	rm -rf "$BR_DIR" "$BR_BIN"
}

# ---------------------------------------------------------------------------
# env file and status

write_env() {
	local lines=() port
	if pg_pid >/dev/null && port=$(pg_port); then
		lines+=("OUTBOX_TEST_POSTGRES_URL='postgres://outbox:outbox@127.0.0.1:$port/outbox?sslmode=disable'")
	fi
	if my_pid >/dev/null && port=$(my_port); then
		lines+=("OUTBOX_TEST_MYSQL_DSN='outbox:outbox@tcp(127.0.0.1:$port)/outbox?parseTime=true&loc=UTC&multiStatements=false'")
	fi
	if br_pid >/dev/null && port=$(br_port); then
		lines+=("OUTBOX_DEMO_KAFKA_BROKERS='127.0.0.1:$port'")
	fi
	if pb_pid >/dev/null && port=$(pb_port); then
		lines+=("OUTBOX_TEST_PGBOUNCER_URL='postgres://outbox:outbox@127.0.0.1:$port/outbox?sslmode=disable'")
	fi
	local tmp="$ENV_FILE.tmp.$$"
	if [ "${#lines[@]}" -gt 0 ]; then
		printf '%s\n' "${lines[@]}" >"$tmp"
	else
		: >"$tmp"
	fi
	chmod 644 "$tmp"
	mv -f "$tmp" "$ENV_FILE"
}

status_line() { # status_line NAME PIDFN PORTFN READYFN LOG
	local name=$1 pid port ready
	if pid=$("$2"); then
		port=$("$3" || echo '?')
		if "$4"; then ready=ready; else ready='NOT answering'; fi
		printf '%-9s running  pid %-8s port %-6s %-14s log %s\n' "$name" "$pid" "$port" "$ready" "$5"
	else
		printf '%-9s stopped                                       log %s\n' "$name" "$5"
	fi
}

cmd_status() {
	echo "state dir: $STATE"
	status_line postgres pg_pid pg_port pg_ready "$PG_LOG"
	# mariadb-admin is only needed to check readiness
	MY_ADMIN=$(find_prog mariadb-admin mysqladmin 2>/dev/null || echo false)
	if [ "$IS_ROOT" -eq 1 ]; then MY_ADMIN_USER=root; else MY_ADMIN_USER=$(id -un); fi
	status_line mysql my_pid my_port my_ready "$MY_LOG"
	status_line broker br_pid br_port br_ready "$BR_LOG"
	status_line pgbouncer pb_pid pb_port pb_ready "$PB_LOG"
	echo "env file: $ENV_FILE"
	if [ -s "$ENV_FILE" ]; then sed 's/^/  /' "$ENV_FILE"; fi
}

cmd_env() {
	[ -f "$ENV_FILE" ] || die "no env file at $ENV_FILE; run: $0 up"
	cat "$ENV_FILE"
}

# ---------------------------------------------------------------------------
# main

usage() {
	sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
}

# parse_services DEFAULT... -- ARGS...: normalise service names into SERVICES.
SERVICES=()
parse_services() {
	local defaults=() a
	while [ "$1" != -- ]; do
		defaults+=("$1")
		shift
	done
	shift
	[ "$#" -gt 0 ] || set -- "${defaults[@]}"
	SERVICES=()
	for a in "$@"; do
		case $a in
		all) SERVICES+=(postgres mysql broker pgbouncer) ;;
		postgres | postgresql | pg) SERVICES+=(postgres) ;;
		mysql | mariadb) SERVICES+=(mysql) ;;
		broker | kafka | kfake) SERVICES+=(broker) ;;
		pgbouncer | bouncer) SERVICES+=(pgbouncer) ;;
		*) die "unknown service '$a' (want postgres, mysql, pgbouncer, broker or all)" ;;
		esac
	done
}

# in_stop_order SERVICE...: the services, each once, pgbouncer before the
# postgres it stands in front of.
in_stop_order() {
	local s a
	for s in pgbouncer postgres mysql broker; do
		for a in "$@"; do
			if [ "$a" = "$s" ]; then
				printf '%s\n' "$s"
				break
			fi
		done
	done
}

main() {
	local cmd=${1:-help}
	[ "$#" -gt 0 ] && shift
	case $cmd in
	up)
		parse_services postgres mysql pgbouncer -- "$@"
		acquire_lock
		local s
		for s in "${SERVICES[@]}"; do
			case $s in
			postgres) pg_up_once ;;
			mysql) my_up ;;
			broker) br_up ;;
			pgbouncer) pb_up ;;
			esac
		done
		write_env
		log "env file $ENV_FILE:"
		sed 's/^/  /' "$ENV_FILE" >&2
		;;
	down)
		parse_services postgres mysql broker pgbouncer -- "$@"
		acquire_lock
		for s in $(in_stop_order "${SERVICES[@]}"); do
			case $s in
			postgres) pg_down ;;
			mysql) my_down ;;
			broker) br_down ;;
			pgbouncer) pb_down ;;
			esac
		done
		write_env
		;;
	reset)
		parse_services postgres mysql broker pgbouncer -- "$@"
		acquire_lock
		for s in $(in_stop_order "${SERVICES[@]}"); do
			case $s in
			postgres) pg_reset ;;
			mysql) my_reset ;;
			broker) br_reset ;;
			pgbouncer) pb_reset ;;
			esac
		done
		write_env
		;;
	status) cmd_status ;;
	env) cmd_env ;;
	help | -h | --help) usage ;;
	*)
		usage >&2
		die "unknown command '$cmd'"
		;;
	esac
}

main "$@"
