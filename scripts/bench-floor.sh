#!/usr/bin/env bash
# The measurements of "5 of 5, the floor" (docs/benchmarks.md), each a ratio
# taken in one run against its baseline in the same run. Run it on a quiet
# machine: nothing else may load the CPU (2 cores here).
#
#   scripts/bench-floor.sh [OUT]      (default OUT: a file under $TMPDIR)
#
# ROUNDS (default 3) sets -benchtime for the throughput benchmarks, RUNS
# (default 5) the latency runs per configuration; ONLY (a regexp) picks
# benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

servers_up_unless_set
load_outbox_env OUTBOX_TEST_POSTGRES_URL OUTBOX_TEST_MYSQL_DSN

out=${1:-$(mktemp "${TMPDIR:-/tmp}/outbox-floor.XXXXXX")}
rounds=${ROUNDS:-3}
runs=${RUNS:-5}
only=${ONLY:-.}
bin=$(mktemp "${TMPDIR:-/tmp}/outbox-floor-bin.XXXXXX")
trap 'rm -f "$bin"' EXIT
(cd integration && go test -c -o "$bin" .)

bench() { # NAME BENCHTIME COUNT
	if ! [[ $1 =~ $only ]]; then return; fi
	echo "+ -bench '$1' -benchtime $2 -count $3" | tee -a "$out" >&2
	(cd integration && "$bin" -test.run '^$' -test.bench "$1" -test.benchtime "$2" -test.count "$3" \
		-test.timeout 60m) 2>&1 | grep -E '^(Benchmark|---|\s+\S+_test\.go)' | tee -a "$out"
}

bench 'RelayVsHandWritten' "${rounds}x" 1
bench 'CaptureVsHandWritten' "$((rounds * 10))x" 2
bench 'CaptureByCondition' 300x 2
bench 'RelayBacklog' 1x 1
bench 'ClaimDelayedAhead' 1x 1
bench 'CommitToKafkaLatency/postgres/(wake|wake-default-pool|listen)$' 1x "$runs"
bench 'CommitToKafkaLatency/mysql/wake$' 1x "$runs"
echo "figures in $out" >&2
