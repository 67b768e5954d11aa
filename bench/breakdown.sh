#!/usr/bin/env bash
# Where the time of one client's transaction goes, directly and through pgchorusd in front of 1 and
# 2 backends (`pgchorus demo`, release build): a packet capture of the loopback during pgbench -c 1
# (simple protocol) cut into per-statement phases by bench/breakdown.py; then pgchorusd's syscalls
# (strace -c) and instructions (perf stat) per statement over a fixed number of transactions.
#
#   bench/breakdown.sh [SECONDS]       (as root; needs tcpdump and strace)
#
# Prints Markdown; BENCHMARKS.md "Where the time goes" holds a run.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:/usr/lib/postgresql/15/bin:$PATH"
SECS=${1:-5}
TXS=${BREAKDOWN_TRANSACTIONS:-2000}
BIN=${BIN:-.build/release}
[ -n "${BIN_READY:-}" ] || make -s release >/dev/null
for tool in tcpdump strace; do command -v $tool >/dev/null || { echo "bench/breakdown.sh: needs $tool" >&2; exit 2; }; done
WORK=$(mktemp -d /tmp/pgchorus-breakdown-XXXXXX); chmod 755 "$WORK"
DEMO=""
stop_demo() { [ -n "$DEMO" ] && { kill "$DEMO" 2>/dev/null || true; wait "$DEMO" 2>/dev/null || true; }; DEMO=""; }
trap 'stop_demo; rm -rf "$WORK"' EXIT

capture() { # name port backend-ports pgbench-args…
  local name=$1 port=$2 backends=$3; shift 3
  local filter="tcp port $port"; for b in ${backends//,/ }; do filter="$filter or tcp port $b"; done
  tcpdump -i lo -s 0 -B 65536 --immediate-mode -U --time-stamp-precision=nano -w "$WORK/$name.pcap" "$filter" 2>"$WORK/tcpdump.err" &
  local dump=$!
  for _ in $(seq 1 100); do grep -q "listening on" "$WORK/tcpdump.err" && break; sleep 0.1; done
  pgbench -h 127.0.0.1 -p "$port" -U postgres -n -c 1 -T "$SECS" -M simple "$@" postgres 2>&1 | grep -E "^(latency average|tps)" | sed 's/^/    pgbench: /'
  sleep 0.5; kill "$dump"; wait "$dump" 2>/dev/null || true
  /usr/bin/python3 bench/breakdown.py "$WORK/$name.pcap" "$port" "$backends"
  [ -n "${BREAKDOWN_KEEP:-}" ] && cp "$WORK/$name.pcap" "$BREAKDOWN_KEEP/" ; rm -f "$WORK/$name.pcap"
}

counts() { # port pgbench-args…  (syscalls and instructions of pgchorusd per statement)
  local port=$1; shift
  local pid; pid=$(pgrep -n -x pgchorusd)
  local statements=$((TXS * ${PER_TX}))
  strace -c -f -p "$pid" -o "$WORK/strace.txt" 2>/dev/null & local st=$!
  sleep 1
  pgbench -h 127.0.0.1 -p "$port" -U postgres -n -c 1 -t "$TXS" -M simple "$@" postgres >/dev/null 2>&1
  kill -INT "$st"; wait "$st" 2>/dev/null || true
  awk -v n="$statements" '$NF != "total" && $4 ~ /^[0-9]+$/ { calls[$NF] += $4 } $NF == "total" { total = $4 }
    END { line = ""; for (c in calls) if (calls[c] / n >= 0.05) line = line sprintf("%s %.2f, ", c, calls[c] / n);
          printf "    syscalls per statement: %.2f (%s)\n", total / n, substr(line, 1, length(line) - 2) }' "$WORK/strace.txt"
  # CPU time (this machine has no hardware counters for perf): user and kernel, from /proc, over the run.
  local hz; hz=$(getconf CLK_TCK)
  local before; before=$(awk '{ print $14, $15 }' "/proc/$pid/stat")
  pgbench -h 127.0.0.1 -p "$port" -U postgres -n -c 1 -t "$TXS" -M simple "$@" postgres >/dev/null 2>&1
  local after; after=$(awk '{ print $14, $15 }' "/proc/$pid/stat")
  echo "$before $after" | awk -v n="$statements" -v hz="$hz" '{ printf "    pgchorusd CPU per statement: %.1f µs user, %.1f µs kernel\n", ($3 - $1) * 1e6 / hz / n, ($4 - $2) * 1e6 / hz / n }'
}

for n in ${BREAKDOWN_BACKENDS:-1 2}; do
  port=$((26400 + 10 * n))
  "$BIN/pgchorus" demo --backends "$n" --port "$port" --dir "$WORK/demo$n" >"$WORK/demo$n.log" 2>&1 &
  DEMO=$!
  for _ in $(seq 1 120); do grep -q "demo ready" "$WORK/demo$n.log" && break; sleep 1; done
  grep -q "demo ready" "$WORK/demo$n.log" || { tail -20 "$WORK/demo$n.log"; exit 1; }
  pgbench -h 127.0.0.1 -p "$port" -U postgres -i -s 1 -q postgres >/dev/null 2>&1
  backends=$(seq -s, $((port + 1)) $((port + n)))
  if [ "$n" = 1 ] && [ -z "${BREAKDOWN_NO_DIRECT:-}" ]; then
    echo "### Direct (db1), TPC-B simple, 1 client"; echo
    capture direct-tpcb "$((port + 1))" "$((port + 1))" -b tpcb-like; echo
    echo "### Direct (db1), SELECT-only simple, 1 client"; echo
    capture direct-select "$((port + 1))" "$((port + 1))" -S; echo
  fi
  echo "### pgchorusd, $n backend(s), TPC-B simple, 1 client"; echo
  capture "pgchorus$n-tpcb" "$port" "$backends" -b tpcb-like; echo
  PER_TX=7 counts "$port" -b tpcb-like; echo
  echo "### pgchorusd, $n backend(s), SELECT-only simple, 1 client"; echo
  capture "pgchorus$n-select" "$port" "$backends" -S; echo
  PER_TX=1 counts "$port" -S; echo
  stop_demo
done
