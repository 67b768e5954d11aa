#!/usr/bin/env bash
# pgchorusd's user-space instructions per transaction, counted by valgrind's callgrind: unlike CPU
# time on a shared 2-core VM, the count comes out the same run after run (±0.5 %), so a change of a
# few per cent shows. For each build given, a pgchorusd of that build runs under callgrind in front of
# the backends of one `pgchorus demo` (of the first build), pgbench sends WARMUP transactions, the
# counters are zeroed, TXS transactions run at 1 client, and the count is dumped. Kernel time is not
# counted (see bench/cpu-per-statement.sh and bench/relay-floor.sh for CPU time).
#
#   bench/instructions.sh [-n BACKENDS] BIN_DIR [BIN_DIR …]     (as root; needs valgrind)
#
# TXS (300), WARMUP (100), MODE (simple; or extended, prepared), SCRIPT (tpcb-like; or select-only),
# CLIENTS (1; under valgrind pgchorusd is the bottleneck at any more, so turns wait more often than in
# production: the count then includes the order's waits) in the environment. The call graph of each
# run stays in $KEEP (if set) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="/usr/lib/postgresql/15/bin:$PATH"
N=1; [ "${1:-}" = "-n" ] && { N=$2; shift 2; }
[ $# -ge 1 ] || { echo "usage: bench/instructions.sh [-n BACKENDS] BIN_DIR [BIN_DIR …]" >&2; exit 2; }
command -v valgrind >/dev/null || { echo "bench/instructions.sh: needs valgrind (apt-get install valgrind)" >&2; exit 2; }
[ -x "$1/pgchorus" ] || { echo "bench/instructions.sh: no $1/pgchorus (the first build's demo starts the backends)" >&2; exit 2; }
for bin in "$@"; do [ -x "$bin/pgchorusd" ] || { echo "bench/instructions.sh: no $bin/pgchorusd" >&2; exit 2; }; done
TXS=${TXS:-300}; WARMUP=${WARMUP:-100}; MODE=${MODE:-simple}; SCRIPT=${SCRIPT:-tpcb-like}; CLIENTS=${CLIENTS:-1}
WORK=$(mktemp -d /tmp/pgchorus-instr-XXXXXX); chmod 755 "$WORK"
DEMOS=(); VG=""
trap '[ -n "$VG" ] && kill "$VG" 2>/dev/null; for d in "${DEMOS[@]:-}"; do [ -n "$d" ] && kill "$d" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT

PORT=26800
start_demo "$1" "$PORT" "$N" "$WORK/demo"
pgbench -h 127.0.0.1 -p "$PORT" -U postgres -i -s 1 -q postgres >/dev/null 2>&1

echo "| build | backends | pgbench | instructions per transaction |"
echo "|---|---|---|---|"
k=0
for bin in "$@"; do
  k=$((k + 1)); port=$((PORT + 20 + k))
  # valgrind 3.19 cannot read Swift 6.3's DWARF: a copy without the debug information (symbols kept).
  strip -g -o "$WORK/pgchorusd$k" "$bin/pgchorusd"
  node_config "$WORK/demo" "$PORT" "$port" "callgrind$k" >"$WORK/demo/callgrind$k.toml"
  valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind$k.out" "$WORK/pgchorusd$k" --config "$WORK/demo/callgrind$k.toml" \
      >"$WORK/callgrind$k.log" 2>&1 &
  VG=$!
  for _ in $(seq 1 120); do grep -q "listening" "$WORK/callgrind$k.log" && break; sleep 1; done
  grep -q "listening" "$WORK/callgrind$k.log" || { tail -20 "$WORK/callgrind$k.log"; exit 1; }
  # (-t is per client: TXS and WARMUP are shared out among the clients.)
  run() { pgbench -h 127.0.0.1 -p "$port" -U postgres -n -c "$CLIENTS" -t "$(( $1 / CLIENTS ))" -M "$MODE" -b "$SCRIPT" postgres 2>&1; }
  run "$WARMUP" >/dev/null
  callgrind_control -z "$VG" >/dev/null 2>&1
  out=$(run "$TXS")
  grep -q "number of failed transactions: 0 " <<<"$out" || { echo "$out" | tail -5; exit 1; }
  callgrind_control -d "$VG" >/dev/null 2>&1
  for _ in $(seq 1 30); do [ -s "$WORK/callgrind$k.out.1" ] && break; sleep 1; done
  ir=$(awk '/^summary:/ { print $2; exit }' "$WORK/callgrind$k.out.1")
  TXS_RUN=$(( TXS / CLIENTS * CLIENTS ))
  [ -n "${KEEP:-}" ] && cp "$WORK/callgrind$k.out.1" "$KEEP.$k"
  kill "$VG"; wait "$VG" 2>/dev/null || true; VG=""
  echo "| $bin | $N | $SCRIPT -M $MODE, $TXS_RUN transactions, $CLIENTS client(s) | $((ir / TXS_RUN)) |"
done
