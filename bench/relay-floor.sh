#!/usr/bin/env bash
# The floor under issue 16's first target: what a relay costs per query on this machine when it is
# pgbouncer, the least a SwiftNIO relay can be (bench/relay-floor: bytes copied both ways, `raw`, or
# cut into PostgreSQL messages first, `framed`), and pgchorusd — all in front of the same one
# PostgreSQL server (the backend of `pgchorus demo --backends 1`), interleaved. Per system: pgbench's
# tps, the relay's CPU per query (user + kernel, from /proc) and its context switches per query (all
# its threads). Medians of ROUNDS.
#
#   bench/relay-floor.sh        (as root; after `make release`; builds relay-floor; installs pgbouncer)
#
# ROUNDS (3), SECS (5), CLIENTS (8), MODE (prepared; or simple, extended), SCRIPT (-S; or "-b tpcb-like");
# SYSCALLS=1 also counts each relay's system calls per transaction in the first round (`perf stat`).
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="/opt/swift/usr/bin:/usr/lib/postgresql/15/bin:$PATH"
ROUNDS=${ROUNDS:-3}; SECS=${SECS:-5}; CLIENTS=${CLIENTS:-8}; MODE=${MODE:-prepared}; SCRIPT=${SCRIPT:--S}
BIN=${BIN:-.build/release}
pick_bin relay-floor.sh pgchorus pgchorusd
dpkg -s pgbouncer >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends pgbouncer >/dev/null; }
# (With pgchorusd's own release flags: `make release-product`.)
make -s release-product PRODUCT=relay-floor >/dev/null
FLOOR=$(swift build -c release --show-bin-path)/relay-floor
WORK=$(mktemp -d /tmp/pgchorus-floor-XXXXXX); chmod 755 "$WORK"
DEMOS=(); PIDS=()
trap 'for p in "${PIDS[@]:-}" "${DEMOS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT
HZ=$(getconf CLK_TCK)
BASE=26800
start_demo "$BIN" "$BASE" 1 "$WORK/demo"
DB=$(sed -n 's/.*db1 :\([0-9]*\).*/\1/p' "$WORK/demo.log" | head -1)
pgbench -h 127.0.0.1 -p "$DB" -U postgres -i -s 10 -q postgres >/dev/null 2>&1

start_pgbouncer "$WORK/pgbouncer" $((BASE + 11)) "$DB"; PGB=$PGBOUNCER_PID; PIDS+=("$PGB")
"$FLOOR" $((BASE + 12)) "$DB" raw >"$WORK/raw.log" 2>&1 & PIDS+=($!)
"$FLOOR" $((BASE + 13)) "$DB" framed >"$WORK/framed.log" 2>&1 & PIDS+=($!)
sleep 2
pid_of() { case $1 in direct) echo "";; pgbouncer) echo "$PGB";; nio-raw) pgrep -f "relay-floor $((BASE + 12))";; nio-framed) pgrep -f "relay-floor $((BASE + 13))";; pgchorusd) pgrep -f "pgchorusd.*$WORK/demo/" | head -1;; esac; }
port_of() { case $1 in direct) echo "$DB";; pgbouncer) echo $((BASE + 11));; nio-raw) echo $((BASE + 12));; nio-framed) echo $((BASE + 13));; pgchorusd) echo "$BASE";; esac; }
cpu_of() { [ -n "$1" ] && awk '{ print $14 + $15 }' "/proc/$1/stat" || echo 0; }
cs_of() { [ -n "$1" ] && cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s }' || echo 0; }

SYSTEMS="direct pgbouncer nio-raw nio-framed pgchorusd"
EVENTS=$(for c in read write writev readv recvfrom sendto recvmsg sendmsg epoll_wait epoll_ctl futex; do printf 'syscalls:sys_enter_%s,' "$c"; done)context-switches
for r in $(seq 1 "$ROUNDS"); do
  for s in $SYSTEMS; do
    pid=$(pid_of "$s"); c0=$(cpu_of "$pid"); x0=$(cs_of "$pid"); st0=$(head -1 /proc/stat)
    if [ "${SYSCALLS:-0}" = 1 ] && [ "$r" = 1 ] && [ -n "$pid" ]; then
      # System calls of the relay over the run's middle (one second in, SECS - 2 seconds long).
      ( sleep 1; perf stat -x, -e "$EVENTS" -p "$pid" -- sleep $((SECS - 2)) 2>"$WORK/stat-$s" >/dev/null ) & PERF=$!
    else PERF=; fi
    out=$(PGSSLMODE=disable pgbench -h 127.0.0.1 -p "$(port_of "$s")" -U postgres -n -c "$CLIENTS" -j 2 -T "$SECS" -M "$MODE" $SCRIPT postgres 2>&1)
    [ -z "$PERF" ] || wait "$PERF"
    c1=$(cpu_of "$pid"); x1=$(cs_of "$pid"); st1=$(head -1 /proc/stat)
    tps=$(echo "$out" | awk '/^tps/ { print $3; exit }')
    txs=$(echo "$out" | awk '/number of transactions actually processed/ { print $NF; exit }')
    [ -n "$txs" ] || { echo "$s: pgbench failed: $out" >&2; exit 1; }
    echo "$s $tps $(awk -v a="$c0" -v b="$c1" -v n="$txs" -v hz="$HZ" 'BEGIN { printf "%.1f", (b - a) * 1e6 / hz / n }') $(awk -v a="$x0" -v b="$x1" -v n="$txs" 'BEGIN { printf "%.2f", (b - a) / n }') $(steal_pct "$st0" "$st1")" >>"$WORK/results"
  done
done
echo "relay floor: $CLIENTS clients, pgbench $SCRIPT -M $MODE, ${SECS} s × $ROUNDS interleaved, medians ($(date -u '+%Y-%m-%d %H:%M UTC'))"
echo "| system | tps (each run) | tps median | × direct | relay CPU per transaction (µs) | context switches per transaction | steal % (max) |"
echo "|---|---|---|---|---|---|---|"
DIRECT=$(awk '$1 == "direct" { print $2 }' "$WORK/results" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
for s in $SYSTEMS; do
  med() { awk -v s="$s" -v c="$1" '$1 == s { print $c }' "$WORK/results" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
  runs=$(awk -v s="$s" '$1 == s { printf "%s%.0f", (n++ ? " · " : ""), $2 }' "$WORK/results")
  steal=$(awk -v s="$s" '$1 == s && $5 > m { m = $5 } END { print m + 0 }' "$WORK/results")
  t=$(med 2)
  if [ "$s" = direct ]; then echo "| $s | $runs | $t | 1.00× | – | – | $steal |"
  else echo "| $s | $runs | $t | $(awk -v a="$t" -v b="$DIRECT" 'BEGIN { printf "%.2f", a / b }')× | $(med 3) | $(med 4) | $steal |"; fi
done
if [ "${SYSCALLS:-0}" = 1 ]; then
  echo
  echo "System calls per transaction (first round, perf stat over SECS - 2 s; per transaction at that run's tps):"
  for s in $SYSTEMS; do
    [ -f "$WORK/stat-$s" ] || continue
    tps=$(awk -v s="$s" '$1 == s { print $2; exit }' "$WORK/results")
    printf '  %-11s' "$s"
    awk -F, -v t="$tps" -v d=$((SECS - 2)) '$1 ~ /^[0-9]+$/ && $1 > 0 { n = $3; sub(/syscalls:sys_enter_/, "", n); printf " %s %.2f", n, $1 / (t * d) }' "$WORK/stat-$s"
    echo
  done
fi
