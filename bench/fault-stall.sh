#!/usr/bin/env bash
# How long clients stall, and whether they notice, when one of three backends fails under load:
# SIGKILL of the postmaster and its children, `pg_ctl stop -m immediate`, and SIGSTOP (a freeze, held
# 20 s), of a follower (db3) and of the lead (db1). pgchorusd (release build) runs as `pgchorus demo
# --backends 3` runs it (health checks on, defaults); pgbench -M extended with 8 clients for 30 s,
# the fault at 10 s. The stall is pgbench's longest transaction (from its per-transaction log).
#
#   bench/fault-stall.sh [runs per case]      (as root; default 1 run per case)
#   FAULTS="freeze" VICTIMS="db1" bench/fault-stall.sh 2      (some cases only)
#
# Writes bench/results/fault-stall-<date>.md and prints the same table.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:/usr/lib/postgresql/15/bin:$PATH"
RUNS=${1:-1}
PORT=${PGCHORUS_BENCH_PORT:-17432}
[ -x .build/release/pgchorus ] || make -s release >/dev/null
OUT="bench/results/fault-stall-$(date +%Y%m%d-%H%M).md"
mkdir -p bench/results
{
  echo "# One backend of three fails under pgbench load (-M extended, 8 clients, 30 s, fault at 10 s)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, PostgreSQL $(psql --version | awk '{print $3}'), pgchorusd release build, default settings (replication.follower_timeout = 3 s)."
  echo "Command: \`bench/fault-stall.sh $RUNS\`. Stall = the longest transaction pgbench logged."
  echo
  echo "| fault | backend | run | transactions | failed | aborted clients | stall (s) | survivors identical | prepared left after 10 s | backend reason |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} | tee "$OUT"

tree_pids() { # the postmaster and its children
  local pm; pm=$(head -1 "$1/postmaster.pid")
  echo "$pm"; for s in /proc/[0-9]*/stat; do awk -v p="$pm" '{ if ($4 == p) print $1 }' "$s" 2>/dev/null || true; done
}

run_case() { # fault victim run
  local fault=$1 victim=$2 run=$3
  local dir; dir=$(mktemp -d /tmp/pgchorus-fault-XXXXXX); chmod 755 "$dir"
  .build/release/pgchorus demo --backends 3 --port "$PORT" --dir "$dir/cluster" >"$dir/demo.log" 2>&1 &
  local demo=$!
  for _ in $(seq 1 120); do grep -q "demo ready" "$dir/demo.log" && break; sleep 1; done
  pgbench -h 127.0.0.1 -p "$PORT" -U postgres -i -s 5 -q postgres >/dev/null 2>&1
  local data="$dir/cluster/$victim/data"
  ( cd "$dir" && pgbench -h 127.0.0.1 -p "$PORT" -U postgres -n -M extended -c 8 -j 2 -T 30 -l --log-prefix="$dir/tx" postgres >"$dir/pgbench.out" 2>"$dir/pgbench.err" ) &
  local load=$!
  sleep 10
  local pids; pids=$(tree_pids "$data")
  case $fault in
    kill) kill -KILL $pids 2>/dev/null || true ;;
    immediate) runuser -u postgres -- pg_ctl -D "$data" -m immediate stop >/dev/null 2>&1 || true ;;
    freeze) kill -STOP $pids 2>/dev/null || true ;;
  esac
  if [ "$fault" = freeze ]; then sleep 20; kill -CONT $pids 2>/dev/null || true; fi
  wait "$load" || true
  sleep 10
  local tx failed aborted stall same prepared reason survivors
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$dir/pgbench.out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$dir/pgbench.out")
  aborted=$(grep -c "aborted" "$dir/pgbench.err" || true)
  stall=$(cat "$dir"/tx.* 2>/dev/null | awk 'BEGIN { m = 0 } { if ($3 > m) m = $3 } END { printf "%.2f", m / 1e6 }')
  survivors=""; for b in db1 db2 db3; do [ "$b" = "$victim" ] || survivors="$survivors $b"; done
  same=$(for b in $survivors; do p=$(( PORT + ${b#db} )); psql -h 127.0.0.1 -p "$p" -U postgres -At -c "select md5(string_agg(a::text, ',' order by aid)) || (select sum(delta) from pgbench_history) from pgbench_accounts a"; done | sort -u | wc -l)
  prepared=0; for b in $survivors; do p=$(( PORT + ${b#db} )); prepared=$(( prepared + $(psql -h 127.0.0.1 -p "$p" -U postgres -At -c "select count(*) from pg_prepared_xacts") )); done
  reason=$(.build/release/pgchorus backends --config "$dir/cluster/pgchorus.toml" 2>/dev/null | grep "^$victim" | tr -s ' ' | cut -c1-120 | tr '|' '/' || true)
  echo "| $fault | $victim | $run | ${tx:-?} | ${failed:-?} | $aborted | $stall | $([ "$same" = 1 ] && echo yes || echo "no ($same)") | $prepared | $reason |" | tee -a "$OUT"
  kill -INT "$demo" 2>/dev/null || true; wait "$demo" 2>/dev/null || true
  rm -rf "$dir"
}

for fault in ${FAULTS:-kill immediate freeze}; do
  for victim in ${VICTIMS:-db3 db1}; do
    for run in $(seq 1 "$RUNS"); do run_case "$fault" "$victim" "$run"; done
  done
done
