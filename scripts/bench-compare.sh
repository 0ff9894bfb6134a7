#!/usr/bin/env bash
# Compare benchmarks of ./integration between a base commit and the working
# tree, in one run: both test binaries are built first, then run in turn
# (base, new; new, base; …) so that the machine's drift hits both alike.
#
#   scripts/bench-compare.sh BASE [ROUNDS]
#
# BENCH (regexp, default 'RelayWorkers|CaptureOverhead') and BENCHTIME
# (default: go test's) choose what runs. It prints every benchmark line and
# then, per benchmark and unit, the mean of each side and new ÷ base.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

base=${1:?usage: scripts/bench-compare.sh BASE [ROUNDS]}
rounds=${2:-3}
bench=${BENCH:-RelayWorkers|CaptureOverhead}
benchtime=${BENCHTIME:-}

servers_up_unless_set
load_outbox_env OUTBOX_TEST_POSTGRES_URL OUTBOX_TEST_MYSQL_DSN

work=$(mktemp -d "${TMPDIR:-/tmp}/outbox-bench.XXXXXX")
trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach -q "$work/base" "$base"
echo "+ building the benchmarks at $base and at the working tree" >&2
(cd "$work/base/integration" && go test -c -o "$work/base.test" .)
(cd integration && go test -c -o "$work/new.test" .)

args=(-test.run '^$' -test.bench "$bench" -test.count 1)
if [ -n "$benchtime" ]; then args+=(-test.benchtime "$benchtime"); fi
for r in $(seq 1 "$rounds"); do
	# Odd rounds run the base first, even rounds the new code first, so
	# that what the first run leaves behind (a checkpoint, a purge, a
	# warmer cache) does not always fall on the same side.
	order="base new"
	[ $((r % 2)) -eq 0 ] && order="new base"
	for side in $order; do
		dir=$work/base/integration
		[ "$side" = new ] && dir=$PWD/integration
		echo "+ round $r: $side" >&2
		(cd "$dir" && "$work/$side.test" "${args[@]}") >"$work/out" 2>&1 || { cat "$work/out" >&2; exit 1; }
		cat "$work/out" >&2
		awk -v side="$side" '/^Benchmark/ { print side, $0 }' "$work/out" >>"$work/results"
	done
done

echo
echo "mean of $rounds rounds; new ÷ base ($base → working tree); then each round's values"
awk '
{
	side = $1; name = $2; sub(/-[0-9]+$/, "", name)
	for (i = 4; i < NF; i += 2) {
		k = name "\t" $(i + 1)
		sum[side, k] += $i; n[side, k]++; keys[k] = 1
		vals[side, k] = vals[side, k] " " sprintf("%.4g", $i)
	}
}
END {
	for (k in keys) {
		if (n["base", k] == 0 || n["new", k] == 0) continue
		b = sum["base", k] / n["base", k]; m = sum["new", k] / n["new", k]
		printf "%-62s %12.5g %12.5g  %.3f   base:%s  new:%s\n", k, b, m, (b == 0 ? 0 : m / b), vals["base", k], vals["new", k]
	}
}' "$work/results" | sort
