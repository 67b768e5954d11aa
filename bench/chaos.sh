#!/usr/bin/env bash
# Faults and migrations under load through two nodes: `pgchorus demo --backends 3 --nodes 2`, pgbench
# through both nodes at once (TPC-B extended through node 1, simple through node 2, and inserts into a
# table with a SERIAL, a now() and a gen_random_uuid() default plus an `INSERT … SELECT count(*)` into a
# BIGSERIAL table through each), migrations (CREATE TABLE with a SERIAL, rows inserted) through node 2
# while it runs; then `kill -9` of one backend's postmaster and children, its restart and online
# recovery through node 1, a freeze (SIGSTOP, 8 s) of another backend and its recovery through node 2,
# and more migrations. Afterwards: failed transactions, the longest transaction (the stall clients
# saw), every table identical on the three backends, all online, no prepared transaction left.
#
#   bench/chaos.sh [seconds of load] [runs]       (as root; default 70 s, 1 run)
#   KILL=db1 FREEZE=db2 bench/chaos.sh            (the lead killed, a follower frozen)
#
# Writes bench/results/chaos-<date>.md and prints the same table. Everything on 127.0.0.x.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/lib/postgresql/15/bin:$PATH"
DUR=${1:-70}; RUNS=${2:-1}
KILL=${KILL:-db2}; FREEZE=${FREEZE:-db3}
P=${PGCHORUS_BENCH_PORT:-18432}
. bench/lib.sh
pick_bin bench/chaos.sh pgchorus pgchorusd
OUT="bench/results/chaos-$(date +%Y%m%d-%H%M).md"
mkdir -p bench/results
{
  echo "# Faults and migrations under load through two nodes (3 backends)"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, PostgreSQL $(psql --version | awk '{print $3}'), \`$BIN\`, \`bench/chaos.sh $DUR $RUNS\`, kill -9 of $KILL, freeze of $FREEZE."
  echo
  echo "| run | transactions | failed | longest transaction (s) | migrations ok | recovery of $KILL | recovery of $FREEZE | identical | online | prepared left |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
} | tee "$OUT"

run_case() {
  local run=$1 W; W=$(mktemp -d /tmp/pgchorus-chaos-XXXXXX); chmod 755 "$W"
  "$BIN/pgchorus" demo --backends 3 --nodes 2 --port "$P" --dir "$W/c" > "$W/demo.log" 2>&1 &
  local demo=$!
  for _ in $(seq 1 120); do grep -q "demo ready" "$W/demo.log" && break; sleep 1; done
  local n1=(-h 127.0.0.2 -p "$P" -U postgres) n2=(-h 127.0.0.3 -p "$P" -U postgres)
  pgbench "${n1[@]}" -i -s 3 -q postgres > "$W/init.log" 2>&1
  psql "${n1[@]}" -q -v ON_ERROR_STOP=1 postgres > "$W/setup.log" 2>&1 <<'SQL'
create table ev (id serial primary key, at timestamptz default now(), u uuid default gen_random_uuid(), node int, v int);
create table counts (id bigserial primary key, n bigint);
alter table pgbench_history replica identity full;
SQL
  printf '%s\n' '\set v random(1, 1000)' 'insert into ev (node, v) values (:node, :v);' 'insert into counts (n) select count(*) from ev;' > "$W/ev.sql"
  local loads=()
  ( cd "$W" && pgbench "${n1[@]}" -n -M extended -c 3 -j 1 -T "$DUR" --max-tries 10 -l --log-prefix=t1 postgres > t1.out 2>&1 ) & loads+=($!)
  ( cd "$W" && pgbench "${n2[@]}" -n -M simple -c 3 -j 1 -T "$DUR" --max-tries 10 -l --log-prefix=t2 postgres > t2.out 2>&1 ) & loads+=($!)
  ( cd "$W" && pgbench "${n1[@]}" -n -M prepared -c 2 -j 1 -T "$DUR" -D node=1 -f ev.sql -l --log-prefix=e1 postgres > e1.out 2>&1 ) & loads+=($!)
  ( cd "$W" && pgbench "${n2[@]}" -n -M extended -c 2 -j 1 -T "$DUR" -D node=2 -f ev.sql -l --log-prefix=e2 postgres > e2.out 2>&1 ) & loads+=($!)
  migrate() { # first last
    for i in $(seq "$1" "$2"); do
      timeout 60 psql "${n2[@]}" -q -v ON_ERROR_STOP=1 postgres -c "create table mig$i (id serial primary key, t text default 'x'); insert into mig$i (t) select 'r' from generate_series(1, 5);" >> "$W/mig.log" 2>&1 && echo ok >> "$W/mig.ok"
      sleep 1
    done
  }
  migrate 1 3
  tree() { local pm; pm=$(head -1 "$W/c/$1/data/postmaster.pid"); echo "$pm"; for s in /proc/[0-9]*/stat; do awk -v p="$pm" '{ if ($4 == p) print $1 }' "$s" 2>/dev/null; done; }
  sleep 3
  kill -KILL $(tree "$KILL") 2>/dev/null
  sleep 4
  runuser -u postgres -- pg_ctl -D "$W/c/$KILL/data" -l "$W/c/$KILL/restart.log" -w start > /dev/null 2>&1
  local r1=failed r2=failed
  timeout 180 "$BIN/pgchorus" recover --config "$W/c/node1/pgchorus.toml" "$KILL" --wait > "$W/recover1.log" 2>&1 && r1=online
  local pids; pids=$(tree "$FREEZE")
  kill -STOP $pids 2>/dev/null; sleep 8; kill -CONT $pids 2>/dev/null
  sleep 3
  timeout 180 "$BIN/pgchorus" recover --config "$W/c/node2/pgchorus.toml" "$FREEZE" --wait > "$W/recover2.log" 2>&1 && r2=online
  migrate 4 6
  wait "${loads[@]}"
  sleep 3
  local tx=0 failed=0
  for f in t1 t2 e1 e2; do
    tx=$(( tx + $(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$W/$f.out" | head -1 | grep . || echo 0) ))
    failed=$(( failed + $(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$W/$f.out" | head -1 | grep . || echo 0) ))
    grep -q "aborted" "$W/$f.out" && failed="$failed (a client aborted)"
  done
  local stall; stall=$(cat "$W"/t1.[0-9]* "$W"/t2.[0-9]* "$W"/e1.[0-9]* "$W"/e2.[0-9]* 2>/dev/null | awk 'BEGIN { m = 0 } { if ($3 > m) m = $3 } END { printf "%.2f", m / 1e6 }')
  local sums same online prepared=0
  sums=$(for b in 1 2 3; do
    psql -h 127.0.0.1 -p $(( P + b )) -U postgres -At postgres -c "select string_agg(c.relname || ':' || (xpath('/row/m/text()', query_to_xml(format('select md5(coalesce(string_agg(x::text, ''|'' order by x::text), '''')) as m from %I.%I x', n.nspname, c.relname), false, false, '')))[1]::text, ' ' order by c.relname) from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind = 'r' and n.nspname = 'public'"
  done)
  same=$(echo "$sums" | sort -u | wc -l)
  online=$("$BIN/pgchorus" backends --config "$W/c/node1/pgchorus.toml" 2>/dev/null | grep -c " online ")
  for b in 1 2 3; do prepared=$(( prepared + $(psql -h 127.0.0.1 -p $(( P + b )) -U postgres -At postgres -c "select count(*) from pg_prepared_xacts") )); done
  echo "| $run | $tx | $failed | $stall | $(wc -l < "$W/mig.ok" 2>/dev/null || echo 0) of 6 | $r1 | $r2 | $([ "$same" = 1 ] && echo yes || echo "no ($same)") | $online of 3 | $prepared |" | tee -a "$OUT"
  kill -INT "$demo" 2>/dev/null; wait "$demo" 2>/dev/null
  if [ -z "${KEEP:-}" ] && [ "$same" = 1 ] && [ "$r1" = online ] && [ "$r2" = online ]; then rm -rf "$W"; else echo "kept for a look: $W" >&2; fi
}

for run in $(seq 1 "$RUNS"); do run_case "$run"; done
