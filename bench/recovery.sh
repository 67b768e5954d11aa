#!/usr/bin/env bash
# Online recovery under load: how long `pgchorus recover db3` takes for a pgbench database of a
# given scale while pgbench writes (-M extended, 8 clients) through the node, how long the write gate
# held new transactions, the longest transaction the clients saw, whether any failed, and whether the
# three backends are identical afterwards. pgchorusd runs as `pgchorus demo --backends 3` runs it
# (backends with wal_level = logical; defaults otherwise).
#
#   bench/recovery.sh [scales] [runs]        (as root; default "10 50" and 1 run each)
#   PGCHORUS_BIN=.build/debug bench/recovery.sh 10      (skip the release build)
#
# Writes bench/results/recovery-<date>.md and prints the same table.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:/usr/lib/postgresql/15/bin:$PATH"
SCALES=${1:-"10 50"}
RUNS=${2:-1}
PORT=${PGCHORUS_BENCH_PORT:-17532}
BIN=${PGCHORUS_BIN:-.build/release}
if [ "$BIN" = .build/release ]; then make -s release >/dev/null; fi
OUT="bench/results/recovery-$(date +%Y%m%d-%H%M).md"
mkdir -p bench/results
{
  echo "# Online recovery of one backend of three under pgbench load (-M extended, 8 clients)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, PostgreSQL $(psql --version | awk '{print $3}'), pgchorusd from $BIN, default settings (recovery.jobs = 2, gate_timeout = 5 s)."
  echo "Command: \`bench/recovery.sh \"$SCALES\" $RUNS\`. db3 is detached, written past, then recovered while the load runs."
  echo "Recovery = \`pgchorus recover db3 --wait\` until online; longest tx = pgbench's longest transaction during the run."
  echo
  echo "| scale | database size | run | recovery (s) | gate stall (s) | load covered it | transactions | failed | longest tx (s) | identical |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} | tee "$OUT"

run_case() { # scale run
  local scale=$1 run=$2
  local dir; dir=$(mktemp -d /tmp/pgchorus-recovery-XXXXXX); chmod 755 "$dir"
  "$BIN/pgchorus" demo --backends 3 --port "$PORT" --dir "$dir/cluster" >"$dir/demo.log" 2>&1 &
  local demo=$!
  for _ in $(seq 1 120); do grep -q "demo ready" "$dir/demo.log" && break; sleep 1; done
  local cfg="$dir/cluster/pgchorus.toml"
  # Server-side generation (G): one INSERT … SELECT per table, identical on every backend.
  pgbench -h 127.0.0.1 -p "$PORT" -U postgres -i -s "$scale" -I dtGvp -q postgres >"$dir/init.log" 2>&1
  psql -h 127.0.0.1 -p "$PORT" -U postgres -X -q -c "alter table pgbench_history replica identity full"
  "$BIN/pgchorus" detach db3 --config "$cfg" >/dev/null
  pgbench -h 127.0.0.1 -p "$PORT" -U postgres -n -M extended -c 8 -j 2 -T 5 postgres >/dev/null 2>&1
  local size; size=$(psql -h 127.0.0.1 -p $((PORT + 1)) -U postgres -X -At -c "select pg_size_pretty(pg_database_size('postgres'))")
  # Load meant to outlast the recovery (LOAD_SECONDS, default 40 + 4 × scale); the table says if it did.
  local seconds=${LOAD_SECONDS:-$((40 + 4 * scale))} started; started=$(date +%s.%N)
  ( cd "$dir" && pgbench -h 127.0.0.1 -p "$PORT" -U postgres -n -M extended -c 8 -j 2 -T "$seconds" -l --log-prefix="$dir/tx" postgres >"$dir/pgbench.out" 2>"$dir/pgbench.err" ) &
  local load=$!
  sleep 5
  local t0 t1 ok=no
  t0=$(date +%s.%N)
  if "$BIN/pgchorus" recover db3 --wait --config "$cfg" >"$dir/recover.log" 2>&1; then ok=yes; fi
  t1=$(date +%s.%N)
  local covered; covered=$(awk -v a="$started" -v b="$t1" -v s="$seconds" 'BEGIN { print (b - a < s) ? "yes" : "no" }')
  wait "$load" || true
  local stall tx failed longest same
  stall=$("$BIN/pgchorus" status --json --config "$cfg" 2>/dev/null | /usr/bin/python3 -c 'import json,sys; r=json.load(sys.stdin).get("recovery") or {}; print("%.3f" % r["gateStall"] if r.get("gateStall") is not None else "?")' || echo "?")
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$dir/pgbench.out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$dir/pgbench.out")
  longest=$(cat "$dir"/tx.* 2>/dev/null | awk 'BEGIN { m = 0 } { if ($3 > m) m = $3 } END { printf "%.2f", m / 1e6 }')
  same=$(for b in 1 2 3; do psql -h 127.0.0.1 -p $((PORT + b)) -U postgres -X -At -c "select md5(string_agg(a::text, ',' order by aid)) || (select count(*) || ':' || sum(delta) from pgbench_history) || (select md5(string_agg(t::text, ',' order by tid)) from pgbench_tellers t) from pgbench_accounts a"; done | sort -u | wc -l)
  local took; took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  [ "$ok" = yes ] || took="failed: $(tail -1 "$dir/recover.log" | cut -c1-100)"
  echo "| $scale | $size | $run | $took | $stall | $covered | ${tx:-?} | ${failed:-?} | $longest | $([ "$same" = 1 ] && echo yes || echo "no ($same)") |" | tee -a "$OUT"
  kill -INT "$demo" 2>/dev/null || true; wait "$demo" 2>/dev/null || true
  rm -rf "$dir"
}

for scale in $SCALES; do
  for run in $(seq 1 "$RUNS"); do run_case "$scale" "$run"; done
done
