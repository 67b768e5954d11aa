#!/usr/bin/env bash
# pgchorusd's CPU time per statement (user and kernel, from /proc) at 1 client, for one or more
# builds side by side: each build runs `pgchorus demo --backends N`, then pgbench (PROTOCOL)
# TPC-B and SELECT-only, ROUNDS times, the builds interleaved; prints the medians of the CPU time and
# of pgbench's average latency. For before/after
# figures of a change: build both (e.g. a worktree of the old commit), give both bin directories.
#
#   bench/cpu-per-statement.sh [-n BACKENDS] BIN_DIR [BIN_DIR …]     (as root)
#
# ROUNDS (3), TPCB_TXS (3000), SELECT_TXS (15000), PROTOCOL (simple; or extended, prepared) in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="/usr/lib/postgresql/15/bin:$PATH"
N=1; [ "${1:-}" = "-n" ] && { N=$2; shift 2; }
[ $# -ge 1 ] || { echo "usage: bench/cpu-per-statement.sh [-n BACKENDS] BIN_DIR [BIN_DIR …]" >&2; exit 2; }
ROUNDS=${ROUNDS:-3}; PROTOCOL=${PROTOCOL:-simple}; TPCB_TXS=${TPCB_TXS:-3000}; SELECT_TXS=${SELECT_TXS:-15000}
WORK=$(mktemp -d /tmp/pgchorus-cpu-XXXXXX); chmod 755 "$WORK"
DEMOS=()
trap 'for d in "${DEMOS[@]:-}"; do [ -n "$d" ] && kill "$d" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
HZ=$(getconf CLK_TCK)

k=0; PORTS=(); PIDS=()
for bin in "$@"; do
  port=$((26700 + 10 * k))
  start_demo "$bin" "$port" "$N" "$WORK/demo$k"
  pgbench -h 127.0.0.1 -p "$port" -U postgres -i -s 1 -q postgres >/dev/null 2>&1
  PORTS+=("$port")
  # The demo's own pgchorusd: the one whose configuration is in this demo's directory.
  PIDS+=("$(pgrep -f "pgchorusd.*$WORK/demo$k/" | head -1)")
  k=$((k + 1))
done

measure() { # index workload-args statements-per-transaction transactions
  local i=$1 args=$2 per=$3 txs=$4 pid=${PIDS[$1]}
  local before after
  before=$(awk '{ print $14, $15 }' "/proc/$pid/stat")
  latency=$(pgbench -h 127.0.0.1 -p "${PORTS[$i]}" -U postgres -n -c 1 -t "$txs" -M "$PROTOCOL" $args postgres 2>&1 | awk '/latency average/ { print $4 * 1000 }')
  after=$(awk '{ print $14, $15 }' "/proc/$pid/stat")
  echo "$before $after" | awk -v n=$((txs * per)) -v hz="$HZ" -v l="$latency" '{ printf "%.1f %.1f %s\n", ($3 - $1) * 1e6 / hz / n, ($4 - $2) * 1e6 / hz / n, l }'
}

for r in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((k - 1))); do
    echo "tpcb $i $(measure "$i" "-b tpcb-like" 7 "$TPCB_TXS")" >>"$WORK/results"
    echo "select $i $(measure "$i" "-S" 1 "$SELECT_TXS")" >>"$WORK/results"
  done
done
echo "| build | backends | TPC-B $PROTOCOL: user / kernel µs per statement | latency per transaction (µs) | SELECT-only $PROTOCOL: user / kernel µs per statement | latency (µs) |"
echo "|---|---|---|---|---|---|"
i=0
for bin in "$@"; do
  med() { awk -v w="$1" -v i="$i" -v c="$2" '$1 == w && $2 == i { print $c }' "$WORK/results" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
  echo "| $bin | $N | $(med tpcb 3) / $(med tpcb 4) | $(med tpcb 5) | $(med select 3) / $(med select 4) | $(med select 5) |"
  i=$((i + 1))
done
