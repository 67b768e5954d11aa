#!/usr/bin/env bash
# Throughput of two or more builds side by side, interleaved: each build runs its own
# `pgchorus demo --backends N` (pgbench data at SCALE), then pgbench runs ROUNDS times per build,
# the builds alternating, and the medians of tps are printed with the runs, and percentiles of every
# transaction's latency (pgbench -l: the low ones move least with a busy host's CPU steal). For the before/after
# figures of one change at several clients (bench/cpu-per-statement.sh is the 1-client view). Each run also
# counts the transactions the first backend ran per client transaction (pg_stat_database): the work the
# replication adds there (PREPARE and COMMIT PREPARED, the commit log, the commit order's probe).
#
#   bench/ab.sh [-n BACKENDS] BIN_DIR [BIN_DIR …]     (as root)
#
# ROUNDS (3), SECS (10), CLIENTS (8), SCALE (10), PGBENCH_ARGS ("-M simple", TPC-B) in the environment;
# e.g. PGBENCH_ARGS="-S -M prepared" for SELECT-only.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="/usr/lib/postgresql/15/bin:$PATH"
N=2; [ "${1:-}" = "-n" ] && { N=$2; shift 2; }
[ $# -ge 1 ] || { echo "usage: bench/ab.sh [-n BACKENDS] BIN_DIR [BIN_DIR …]" >&2; exit 2; }
ROUNDS=${ROUNDS:-3}; SECS=${SECS:-10}; CLIENTS=${CLIENTS:-8}; SCALE=${SCALE:-10}; PGBENCH_ARGS=${PGBENCH_ARGS:--M simple}
WORK=$(mktemp -d /tmp/pgchorus-ab-XXXXXX); chmod 755 "$WORK"
DEMOS=()
trap 'for d in "${DEMOS[@]:-}"; do [ -n "$d" ] && kill "$d" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT

# Transactions (committed and rolled back) the first backend of the demo on port $1 has run so far.
server_xacts() { psql -h 127.0.0.1 -p "$(($1 + 1))" -U postgres -Atc "SELECT sum(xact_commit + xact_rollback) FROM pg_stat_database" postgres; }

k=0; PORTS=()
for bin in "$@"; do
  port=$((26800 + 10 * k))
  start_demo "$bin" "$port" "$N" "$WORK/demo$k"
  pgbench -h 127.0.0.1 -p "$port" -U postgres -i -s "$SCALE" -q postgres >/dev/null 2>&1
  PORTS+=("$port")
  k=$((k + 1))
done

for r in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((k - 1))); do
    cpu0=$(head -1 /proc/stat)
    x0=$(server_xacts "${PORTS[$i]}")
    out=$(cd "$WORK" && pgbench -h 127.0.0.1 -p "${PORTS[$i]}" -U postgres -n -c "$CLIENTS" -j 2 -T "$SECS" -l --log-prefix="lat$i" $PGBENCH_ARGS postgres 2>&1)
    cpu1=$(head -1 /proc/stat)
    sleep 1.2   # PostgreSQL reports a session's counts at most once a second
    x1=$(server_xacts "${PORTS[$i]}")
    steal=$(steal_pct "$cpu0" "$cpu1")
    tps=$(echo "$out" | awk '/^tps/ { printf "%.0f", $3 }')
    failed=$(echo "$out" | awk '/number of failed/ { print $5 }')
    done_=$(echo "$out" | awk '/number of transactions actually processed/ { split($6, a, "/"); print a[1] }')
    # Transactions the first backend ran per client transaction (2PC, the commit log, the order's probe …).
    per=$(awk -v a="$x0" -v b="$x1" -v n="${done_:-0}" 'BEGIN { if (n > 0) printf "%.2f", (b - a) / n; else print "?" }')
    echo "$i $tps ${failed:-0} $steal $per" >>"$WORK/results"
    echo "round $r build $i ($(eval echo \${$((i + 1))})): ${tps:-?} tps, ${failed:-0} failed, steal ${steal} %, backend-1 transactions per client transaction ${per}" >&2
  done
done
echo "| build | backends | clients | pgbench | tps (runs) | median | latency p10 / p50 / p90 (µs) | steal % (runs) | backend-1 xacts per txn (runs) |"
echo "|---|---|---|---|---|---|---|---|---|"
i=0
for bin in "$@"; do
  runs=$(awk -v i="$i" '$1 == i { print $2 }' "$WORK/results" | tr '\n' ' ')
  med=$(awk -v i="$i" '$1 == i { print $2 }' "$WORK/results" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }')
  steals=$(awk -v i="$i" '$1 == i { print $4 }' "$WORK/results" | tr '\n' ' ')
  lat=$(cat "$WORK"/lat"$i".* | awk '{ print $3 }' | sort -n | awk '{ v[NR] = $1 } END { printf "%d / %d / %d", v[int(NR * 0.1) + 1], v[int(NR * 0.5) + 1], v[int(NR * 0.9) + 1] }')
  pers=$(awk -v i="$i" '$1 == i { print $5 }' "$WORK/results" | tr '\n' ' ')
  echo "| $bin | $N | $CLIENTS | $PGBENCH_ARGS | $runs| $med | $lat | $steals| $pers|"
  i=$((i + 1))
done
# The backends of each demo must be identical afterwards.
i=0
for bin in "$@"; do
  sums=""
  for b in $(seq 1 "$N"); do
    sums+="$(psql -h 127.0.0.1 -p "$((${PORTS[$i]} + b))" -U postgres -Atc "SELECT md5(string_agg(aid::text || ':' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts" postgres) "
  done
  [ "$(echo $sums | tr ' ' '\n' | sort -u | wc -l)" = 1 ] && echo "- $bin: backends identical" || echo "- $bin: BACKENDS DIFFER: $sums"
  i=$((i + 1))
done
