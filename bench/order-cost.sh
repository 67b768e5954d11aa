#!/usr/bin/env bash
# What the order of commits and statements costs pgchorusd, and in which of its threads: one
# `pgchorus demo --backends 2` (the order on, the default) and a second pgchorusd on the same two
# backends with `replication.commit_epochs = false`, pgbench TPC-B `-M simple` through each in turn,
# ROUNDS times; for each run the tps, pgchorusd's user and kernel CPU per transaction (from /proc) and,
# per thread, its system calls and context switches per transaction (`perf stat` of the syscall
# tracepoints over SECS seconds of the run). The event loops are `NIO-SGLTN-*`, the order's probe
# runs on a `TP-#*` thread. bench/ceiling.sh gives the same two systems' throughput beside PostgreSQL's.
#
#   bench/order-cost.sh [BIN_DIR]       (as root; BIN_DIR holds pgchorus and pgchorusd, default .build/release)
#
# CLIENTS (8), ROUNDS (2), SECS (8), SCALE (10) in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="/usr/lib/postgresql/15/bin:$PATH"
BIN=${1:-.build/release}
pick_bin bench/order-cost.sh pgchorus pgchorusd
command -v perf >/dev/null || { echo "bench/order-cost.sh: needs perf (apt-get install linux-perf)" >&2; exit 2; }
CLIENTS=${CLIENTS:-8}; ROUNDS=${ROUNDS:-2}; SECS=${SECS:-8}; SCALE=${SCALE:-10}
WORK=$(mktemp -d /tmp/pgchorus-order-XXXXXX); chmod 755 "$WORK"
DEMOS=(); PIDS=()
trap 'for d in "${DEMOS[@]:-}" "${PIDS[@]:-}"; do [ -n "$d" ] && kill "$d" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
PORT=27500; OFF=27510
start_demo "$BIN" "$PORT" 2 "$WORK/demo"
pgbench -h 127.0.0.1 -p "$PORT" -U postgres -i -s "$SCALE" -q postgres >/dev/null 2>&1

# The second node: the demo's configuration, commit_epochs off, its own port, socket and state.
start_order_off_node "$BIN" "$WORK/demo" "$PORT" "$OFF"
ON=$(pgrep -f "pgchorusd.*$WORK/demo/pgchorus.toml" | head -1); OFFPID=${PIDS[0]}

EVENTS='syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,context-switches'
echo "# pgchorusd with the order on and off: 2 backends, TPC-B -M simple, $CLIENTS client(s), $(date -u '+%Y-%m-%d %H:%M') UTC ($BIN)"
for round in $(seq 1 "$ROUNDS"); do
  for system in "order-on $PORT $ON" "order-off $OFF $OFFPID"; do
    set -- $system
    pgbench -h 127.0.0.1 -p "$2" -U postgres -n -c "$CLIENTS" -j $(( CLIENTS > 1 ? 2 : 1 )) -T $((SECS + 2)) -M simple postgres >"$WORK/pgbench" 2>&1 &
    bp=$!; sleep 1
    before=$(awk '{ print $14, $15 }' "/proc/$3/stat")
    perf stat -e "$EVENTS" --per-thread -p "$3" -- sleep "$SECS" 2>"$WORK/stat" >/dev/null
    after=$(awk '{ print $14, $15 }' "/proc/$3/stat")
    wait "$bp"
    tps=$(awk '/^tps/ { print $3 }' "$WORK/pgbench")
    echo
    echo "round $round, $1: $tps tps; pgchorusd user / kernel CPU per transaction: $(echo "$before $after $tps $SECS $(getconf CLK_TCK)" |
      awk '{ n = $5 * $6; printf "%.0f / %.0f µs", ($3 - $1) * 1e6 / $7 / n, ($4 - $2) * 1e6 / $7 / n }')"
    # Per thread (name-tid), per event: count per transaction; threads with next to nothing left out.
    grep -E 'syscalls:|context-switches' "$WORK/stat" | tr -d ',' |
      awk -v t="$tps" -v s="$SECS" '$2 ~ /^[0-9]+$/ && $2 / (t * s) >= 0.05 { printf "  %-24s %-32s %6.2f per transaction\n", $1, $3, $2 / (t * s) }'
  done
done
