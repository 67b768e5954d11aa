#!/usr/bin/env bash
# Several clustering nodes writing at once: pgbench TPC-B (simple protocol) with clients spread over
# 1, 2 or 3 pgchorusd nodes in front of the same 2 backends, with the cluster-wide order of commits
# and statements on (the default) and off (`replication.cluster_order = false`), and 3 nodes with
# every client on one of them (the VIP's owner), interleaved runs, medians. After every run the
# backends' checksums are compared ("consistent"). BENCH_CASES="nodes:order:written-through …".
#
#   bench/multi-node.sh [SECONDS] [REPS]     (as root; BIN=.build/release by default when built)
#
# Writes bench/results/multi-node-<date>-<host>.md. Everything listens on 127.0.0.x only.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/lib/postgresql/15/bin:$PATH"
SECS=${1:-10}; REPS=${2:-3}
CLIENTS=${BENCH_CLIENTS:-6}
. bench/lib.sh
pick_bin bench/multi-node.sh pgchorusd
BASE=${BENCH_PORT:-26400}
WORK=$(mktemp -d /tmp/pgchorus-multinode-XXXXXX); chmod 755 "$WORK"
PIDS=()
stop_nodes() { for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done; sleep 1; PIDS=(); }
cleanup() {
  stop_nodes
  for d in "$WORK"/pg*; do [ -d "$d/data" ] && runuser -u postgres -- pg_ctl -D "$d/data" -m immediate stop >/dev/null 2>&1 || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

SETTINGS="fsync=off synchronous_commit=off full_page_writes=off max_prepared_transactions=100 max_connections=200 shared_buffers=64MB"
server_port() { echo $((BASE + 20 + $1)); }
for i in 1 2; do
  d="$WORK/pg$i"; mkdir -p "$d"; chown postgres "$d"
  runuser -u postgres -- initdb -D "$d/data" -A trust -U postgres --no-sync --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  { echo "port = $(server_port $i)"; echo "listen_addresses = '127.0.0.1'"; echo "unix_socket_directories = '$d'"
    for s in $SETTINGS; do echo "${s%%=*} = ${s#*=}"; done; } >> "$d/data/postgresql.conf"
  runuser -u postgres -- pg_ctl -D "$d/data" -l "$d/log" -w start >/dev/null
  pgbench -h 127.0.0.1 -p "$(server_port $i)" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
done
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$WORK/cluster.key"; chmod 600 "$WORK/cluster.key"

start_nodes() { # count order(true/false)
  local n=$1 order=$2
  for i in $(seq 1 "$n"); do
    local d="$WORK/node$i"; rm -rf "$d"; mkdir -p "$d"
    { echo "[node]"; echo "id = \"node$i\""; echo "state_directory = \"state\""
      echo "[proxy]"; echo "listen_address = \"127.0.0.$((i + 1))\""; echo "listen_port = $BASE"
      echo "[admin]"; echo "socket = \"admin.sock\""
      echo "[replication]"; echo "cluster_order = $order"
      if [ "$n" -gt 1 ]; then
        echo "[cluster]"; echo "port = $BASE"; echo "key_file = \"../cluster.key\""
        for j in $(seq 1 "$n"); do echo "[[cluster.nodes]]"; echo "id = \"node$j\""; echo "address = \"127.0.0.$((j + 1))\""; done
      fi
      for b in 1 2; do echo "[[backends]]"; echo "id = \"db$b\""; echo "host = \"127.0.0.1\""; echo "port = $(server_port "$b")"; done
    } > "$d/pgchorus.toml"
    "$BIN/pgchorusd" --config "$d/pgchorus.toml" --log-level warning >> "$d/log" 2>&1 & PIDS+=($!)
  done
  for i in $(seq 1 "$n"); do
    for _ in $(seq 1 100); do psql -h "127.0.0.$((i + 1))" -p "$BASE" -U postgres -At -c "select 1" postgres >/dev/null 2>&1 && break; sleep 0.3; done
  done
  sleep 2 # quorum: every node hears the others
}

consistent() {
  local n; n=$(for i in 1 2; do
    psql -h 127.0.0.1 -p "$(server_port "$i")" -U postgres -At postgres -c \
      "select md5(string_agg(t, '|' order by t)) from (select 'a'||aid||':'||abalance t from pgbench_accounts union all select 'b'||bid||':'||bbalance from pgbench_branches union all select 't'||tid||':'||tbalance from pgbench_tellers union all select 'h'||count(*) from pgbench_history) x"
  done | sort -u | wc -l)
  [ "$n" = 1 ] && echo yes || echo no
}

run_one() { # writing nodes → "tps failed" (clients through nodes 1…n)
  local n=$1 per=$(( CLIENTS / $1 )) total=0 failed=0 outs=()
  for i in $(seq 1 "$n"); do
    local out="$WORK/run$i.out"; outs+=("$out")
    pgbench -h "127.0.0.$((i + 1))" -p "$BASE" -U postgres -n -T "$SECS" -c "$per" -j 1 --max-tries 20 postgres > "$out" 2>&1 &
  done
  wait
  for o in "${outs[@]}"; do
    local t f; t=$(sed -n 's/^tps = \([0-9.]*\) (without.*/\1/p' "$o"); f=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$o")
    total=$(awk -v a="$total" -v b="${t:-0}" 'BEGIN {printf "%.1f", a + b}'); failed=$((failed + ${f:-0}))
  done
  echo "$total $failed"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
declare -A TPS FAILED OK
# nodes configured : cluster_order : nodes the clients write through
CASES=${BENCH_CASES:-"1:true:1 3:true:1 3:false:1 2:true:2 2:false:2 3:true:3 3:false:3"}
for rep in $(seq 1 "$REPS"); do
  for c in $CASES; do
    IFS=: read -r n order w <<< "$c"
    start_nodes "$n" "$order"
    read -r tps failed < <(run_one "$w")
    stop_nodes
    TPS[$c]="${TPS[$c]:-} $tps"; FAILED[$c]=$(( ${FAILED[$c]:-0} + failed ))
    OK[$c]="${OK[$c]:-}$(consistent) "
    echo "rep $rep: $n node(s), cluster_order=$order, writing through $w: $tps tps, $failed failed" >&2
  done
done

mkdir -p bench/results
OUT="bench/results/multi-node-$(date +%Y%m%d-%H%M)-$(hostname).md"
{
  echo "# Several nodes writing: pgbench TPC-B simple, $CLIENTS clients spread over the nodes, 2 backends"
  echo
  echo "$(date -u +%F) on $(hostname), $(nproc) cores, $BIN, ${SECS} s runs, median of $REPS (interleaved)."
  echo
  echo "| nodes configured | cluster_order | nodes written through | tps (sum of nodes) | failed | consistent |"
  echo "|---|---|---|---|---|---|"
  for c in $CASES; do
    IFS=: read -r n order w <<< "$c"
    m=$(for t in ${TPS[$c]}; do echo "$t"; done | median)
    echo "| $n | $order | $w | $m | ${FAILED[$c]} | ${OK[$c]}|"
  done
} | tee "$OUT"
echo "written to $OUT" >&2
