#!/usr/bin/env bash
# TPS of pgbench TPC-B through pgchorusd (release build) in front of N backends, next to pgbench
# straight to one backend, on this machine. Usage: bench/replication-tps.sh [backends] [seconds] [clients]
# Writes bench/results/replication-tps-<date>.md and prints the same table.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:$PATH"
BACKENDS=${1:-3}; SECONDS_PER_RUN=${2:-10}; CLIENTS=${3:-8}
PORT=${PGCHORUS_BENCH_PORT:-16432}
make -s release >/dev/null
DIR=$(mktemp -d /tmp/pgchorus-bench-XXXXXX); chmod 755 "$DIR"
LOG="$DIR/demo.log"
DPORT=$((PORT + 100))
# The cluster under test, and a separate single server for the direct runs (same settings).
.build/release/pgchorus demo --backends "$BACKENDS" --port "$PORT" --dir "$DIR/cluster" >"$LOG" 2>&1 &
DEMO=$!
.build/release/pgchorus demo --backends 1 --port "$DPORT" --dir "$DIR/direct" >"$DIR/direct.log" 2>&1 &
DIRECT=$!
cleanup() { kill -INT "$DEMO" "$DIRECT" 2>/dev/null || true; wait "$DEMO" "$DIRECT" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
for _ in $(seq 1 120); do grep -q "demo ready" "$LOG" && grep -q "demo ready" "$DIR/direct.log" && break; sleep 1; done
grep -q "demo ready" "$LOG" || { cat "$LOG"; exit 1; }
PGB="pgbench -h 127.0.0.1 -U postgres"
$PGB -p "$PORT" -i -s 10 -q postgres >/dev/null 2>&1
$PGB -p $((DPORT + 1)) -i -s 10 -q postgres >/dev/null 2>&1
tps() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' | head -1; }
OUT="bench/results/replication-tps-$(date +%Y%m%d-%H%M).md"
{
  echo "# pgbench TPC-B: pgchorus (release) in front of $BACKENDS backends vs one backend directly"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, PostgreSQL $(psql --version | awk '{print $3}'), scale 10, $CLIENTS clients, ${SECONDS_PER_RUN} s per run, fsync=off."
  echo "Command: \`bench/replication-tps.sh $BACKENDS $SECONDS_PER_RUN $CLIENTS\`"
  echo
  echo "| mode | direct (1 backend) tps | pgchorus ($BACKENDS backends) tps | ratio | failed | backends identical |"
  echo "|---|---|---|---|---|---|"
} | tee "$OUT"
for mode in simple extended prepared; do
  d=$($PGB -p $((DPORT + 1)) -M "$mode" -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" -n postgres 2>/dev/null | tps)
  r=$($PGB -p "$PORT" -M "$mode" -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" -n postgres 2>&1)
  p=$(echo "$r" | tps); f=$(echo "$r" | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p')
  sums=$(for i in $(seq 1 "$BACKENDS"); do psql -h 127.0.0.1 -p $((PORT + i)) -U postgres -At -c "select md5(string_agg(a::text, ',' order by aid)) from pgbench_accounts a" ; done | sort -u | wc -l)
  ratio=$(awk -v a="$p" -v b="$d" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')
  echo "| $mode | $d | $p | $ratio | $f | $([ "$sums" = 1 ] && echo yes || echo "no ($sums checksums)") |" | tee -a "$OUT"
done
