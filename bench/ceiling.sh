#!/usr/bin/env bash
# How fast a replicated write can be on this machine at best, and what the commit order costs.
#
# Part 1, PostgreSQL alone: one server runs pgbench's TPC-B as a client sends it (BEGIN, five
# statements, END) and as pgchorus sends it to *each* backend for the vote (BEGIN, the same five, the
# commit-log row and PREPARE TRANSACTION in one Query, COMMIT PREPARED). Their ratio is what the vote's
# work alone leaves of one server's throughput, with no proxy in between.
# Part 2, through pgchorusd in front of the same two servers: the default (`commit_epochs` on) and a
# second pgchorusd on the same backends with `replication.commit_epochs = false` (what the order costs).
# Everything interleaved, ROUNDS times, medians; the host's CPU steal per run; the two backends'
# pgbench tables compared at the end.
#
#   bench/ceiling.sh [BIN_DIR]       (as root; BIN_DIR defaults to .build/release)
#
# CLIENTS ("1 8"), ROUNDS (3), SECS (8), SCALE (10) in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="/usr/lib/postgresql/15/bin:$PATH"
BIN=${1:-.build/release}
CLIENTS=${CLIENTS:-1 8}; ROUNDS=${ROUNDS:-3}; SECS=${SECS:-8}; SCALE=${SCALE:-10}
PORT=26860; DB1=$((PORT + 1)); DB2=$((PORT + 2)); OFF=$((PORT + 10))
WORK=$(mktemp -d /tmp/pgchorus-ceiling-XXXXXX); chmod 755 "$WORK"
PIDS=()
trap 'for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT

"$BIN/pgchorus" demo --backends 2 --port "$PORT" --dir "$WORK/demo" >"$WORK/demo.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 120); do grep -q "demo ready" "$WORK/demo.log" && break; sleep 1; done
grep -q "demo ready" "$WORK/demo.log" || { tail -20 "$WORK/demo.log"; exit 1; }
pgbench -h 127.0.0.1 -p "$PORT" -U postgres -i -s "$SCALE" -q postgres >/dev/null 2>&1

# Part 1's database lives on db1 only (pgchorus never sees it).
psql -h 127.0.0.1 -p "$DB1" -U postgres -qc "CREATE DATABASE ceiling" postgres
pgbench -h 127.0.0.1 -p "$DB1" -U postgres -i -s "$SCALE" -q ceiling >/dev/null 2>&1
psql -h 127.0.0.1 -p "$DB1" -U postgres -qc "CREATE TABLE commit_log (gid text PRIMARY KEY, committed_at timestamptz NOT NULL)" ceiling
cat >"$WORK/plain.sql" <<'EOF'
\set aid random(1, 100000 * :scale)
\set bid random(1, 1 * :scale)
\set tid random(1, 10 * :scale)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
END;
EOF
# The vote's statements as pgchorus writes them (ClientSessionHandler+Commit.swift, startCommit and finishVote).
{ sed '$d' "$WORK/plain.sql"
  echo "INSERT INTO commit_log (gid, committed_at) VALUES ('pgchorus:ceiling:' || (extract(epoch FROM clock_timestamp()) * 1000000)::bigint || '-:client_id', now()); PREPARE TRANSACTION 'ceiling-:client_id';"
  echo "COMMIT PREPARED 'ceiling-:client_id';"; } >"$WORK/vote.sql"

# Part 2's second node: the demo's configuration, commit_epochs off, its own port, socket and state.
start_order_off_node "$BIN" "$WORK/demo" "$PORT" "$OFF"

# CPU ticks so far of a PostgreSQL server (the postmaster, its live children and those it has reaped).
server_ticks() {
  local pm; pm=$(head -1 "$WORK/demo/db$1/data/postmaster.pid")
  { awk '{ print $14 + $15 + $16 + $17 }' "/proc/$pm/stat"
    for c in $(cat "/proc/$pm/task/$pm/children" 2>/dev/null); do awk '{ print $14 + $15 }' "/proc/$c/stat" 2>/dev/null; done; } | awk '{ s += $1 } END { print s }'
}
chorus_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
ORDERED=$(pgrep -f "pgchorusd.*$WORK/demo/pgchorus.toml" | head -1)
UNORDERED=${PIDS[1]}
HZ=$(getconf CLK_TCK)

run() { # system clients → "tps steal failed db1-ms db2-ms pgchorusd-ms" (CPU per transaction)
  local sys=$1 c=$2 args
  case $sys in
    plain) args=(-p "$DB1" -f "$WORK/plain.sql" ceiling);;
    vote) args=(-p "$DB1" -f "$WORK/vote.sql" ceiling);;
    pgchorus2) args=(-p "$PORT" -b tpcb-like postgres);;
    unordered) args=(-p "$OFF" -b tpcb-like postgres);;
  esac
  local cpu0 cpu1 out chorus=0 a1 a2 ac b1 b2 bc n
  case $sys in pgchorus2) chorus=$ORDERED;; unordered) chorus=$UNORDERED;; esac
  a1=$(server_ticks 1); a2=$(server_ticks 2); ac=$([ "$chorus" = 0 ] && echo 0 || chorus_ticks "$chorus")
  cpu0=$(head -1 /proc/stat)
  out=$(pgbench -h 127.0.0.1 -U postgres -n -M simple -c "$c" -j "$(( c < 2 ? 1 : 2 ))" -T "$SECS" "${args[@]}" 2>&1)
  cpu1=$(head -1 /proc/stat)
  sleep 0.3   # the servers reap the sessions pgbench has closed
  b1=$(server_ticks 1); b2=$(server_ticks 2); bc=$([ "$chorus" = 0 ] && echo 0 || chorus_ticks "$chorus")
  n=$(echo "$out" | awk '/number of transactions actually processed/ { split($6, a, "/"); print a[1] }')
  echo "$(echo "$out" | awk '/^tps/ { printf "%.0f", $3 }') $(steal_pct "$cpu0" "$cpu1") $(echo "$out" | awk '/number of failed/ { print $5 }')" \
       "$(awk -v n="${n:-0}" -v hz="$HZ" -v d1=$((b1 - a1)) -v d2=$((b2 - a2)) -v dc=$((bc - ac)) 'BEGIN { if (n == 0) n = 1; printf "%.3f %.3f %.3f", d1 * 1000 / hz / n, d2 * 1000 / hz / n, dc * 1000 / hz / n }')"
}

SYSTEMS="plain vote pgchorus2 unordered"
for r in $(seq 1 "$ROUNDS"); do
  for c in $CLIENTS; do
    for s in $SYSTEMS; do
      read -r tps steal failed c1 c2 cc <<<"$(run "$s" "$c")"
      echo "$s $c ${tps:-0} ${steal:-0} ${failed:-0} $c1 $c2 $cc" >>"$WORK/results"
      echo "round $r, $c client(s), $s: ${tps:-?} tps, steal $steal %, failed ${failed:-0}, CPU per transaction: db1 $c1 ms, db2 $c2 ms, pgchorusd $cc ms" >&2
    done
  done
done

same() { psql -h 127.0.0.1 -p "$1" -U postgres -Atc "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(bbalance) FROM pgbench_branches), (SELECT count(*) FROM pgbench_history)" postgres; }
[ "$(same "$DB1")" = "$(same "$DB2")" ] && consistent=yes || consistent=no
online=$("$BIN/pgchorus" status --config "$WORK/demo/pgchorus.toml" 2>/dev/null | awk '/^backends:/ { print $2 " of " $4 }')

med() { awk -v s="$1" -v c="$2" -v f="${3:-3}" '$1 == s && $2 == c { print $f }' "$WORK/results" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] + 0 }'; }
echo "| clients | TPC-B direct | TPC-B with the vote's statements, direct | pgchorus, 2 backends | pgchorus, 2 backends, commit_epochs off |"
echo "|---|---|---|---|---|"
for c in $CLIENTS; do
  p=$(med plain "$c"); v=$(med vote "$c"); o=$(med pgchorus2 "$c"); u=$(med unordered "$c")
  ratio() { awk -v a="$1" -v b="$p" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
  echo "| $c | $p (1.00×) | $v ($(ratio "$v")×) | $o ($(ratio "$o")×) | $u ($(ratio "$u")×) |"
done
echo
echo "| clients | CPU per transaction, ms: direct (server) | vote's statements, direct (server) | pgchorus 2 backends (db1 + db2 + pgchorusd) | commit_epochs off (db1 + db2 + pgchorusd) |"
echo "|---|---|---|---|---|"
for c in $CLIENTS; do
  echo "| $c | $(med plain "$c" 6) | $(med vote "$c" 6) | $(med pgchorus2 "$c" 6) + $(med pgchorus2 "$c" 7) + $(med pgchorus2 "$c" 8) | $(med unordered "$c" 6) + $(med unordered "$c" 7) + $(med unordered "$c" 8) |"
done
echo
echo "tps, medians of $ROUNDS interleaved runs of $SECS s (pgbench -M simple, scale $SCALE); ratios to TPC-B direct in the same run."
echo "Host CPU steal per run: median $(awk '{ print $4 }' "$WORK/results" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] + 0 }') %, highest $(awk '{ print $4 }' "$WORK/results" | sort -n | tail -1) %."
echo "Failed transactions: $(awk '{ s += $5 } END { print s + 0 }' "$WORK/results"). After the runs: backends online $online, pgbench tables identical on both: $consistent."
