#!/usr/bin/env bash
# A job queue through pgchorusd: `pgchorus demo --backends 2`, workers taking their next job with
# `SELECT … FOR UPDATE SKIP LOCKED` and marking it by key in the same transaction (pgbench
# `-M prepared`, 8 clients), against the same workload straight on the first backend; then leader
# election by `pg_try_advisory_lock()` the same way. Interleaved runs, medians; afterwards the two
# backends' queues identical, both online, each job taken once.
#
#   bench/job-queue.sh [seconds per run] [runs]      (as root; default 10 s, 3 runs)
#
# Writes bench/results/job-queue-<date>.md and prints the same table. Everything on 127.0.0.1.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/lib/postgresql/15/bin:$PATH"
DUR=${1:-10}; RUNS=${2:-3}
P=${PGCHORUS_BENCH_PORT:-18532}
. bench/lib.sh
pick_bin bench/job-queue.sh pgchorus pgchorusd
OUT="bench/results/job-queue-$(date +%Y%m%d-%H%M).md"
mkdir -p bench/results
W=$(mktemp -d /tmp/pgchorus-jobq-XXXXXX); chmod 755 "$W"
"$BIN/pgchorus" demo --backends 2 --port "$P" --dir "$W/c" > "$W/demo.log" 2>&1 &
demo=$!
trap 'kill -INT $demo 2>/dev/null; wait $demo 2>/dev/null' EXIT
for _ in $(seq 1 120); do grep -q "demo ready" "$W/demo.log" && break; sleep 1; done
through=(-h 127.0.0.1 -p "$P" -U postgres)
direct=(-h 127.0.0.1 -p $(( P + 1 )) -U postgres)
jobs=$(( DUR * RUNS * 4000 ))
# The direct runs use a database of their own on the first backend (pgchorusd's stays identical).
psql "${direct[@]}" -q -c "create database direct" postgres > "$W/setup.log" 2>&1
for target in "${through[*]} postgres" "${direct[*]} direct"; do
  psql ${target% *} -q -v ON_ERROR_STOP=1 "${target##* }" >> "$W/setup.log" 2>&1 <<SQL
create table jobs (id int primary key, taken bool not null default false, worker int);
insert into jobs (id) select g from generate_series(1, $jobs) g;
create table rounds (id int primary key, n bigint not null);
insert into rounds values (1, 0);
SQL
done
printf '%s\n' '\set w random(1, 1000000)' 'begin;' 'select id from jobs where not taken order by id limit 1 for update skip locked \gset' \
  'update jobs set taken = true, worker = :w where id = :id;' 'end;' > "$W/take.sql"
printf '%s\n' 'select pg_try_advisory_lock(7451) as led \gset' '\if :led' 'update rounds set n = n + 1 where id = 1;' 'select pg_advisory_unlock(7451);' '\endif' > "$W/elect.sql"
tps() { sed -n 's/^tps = \([0-9.]*\) .*/\1/p' "$1" | head -1; }
median() { sort -n | awk '{ a[NR] = $1 } END { print (NR ? a[int((NR + 1) / 2)] : 0) }'; }
declare -A got
for run in $(seq 1 "$RUNS"); do
  for script in take elect; do
    for side in direct through; do
      if [ "$side" = direct ]; then args=("${direct[@]}" direct); else args=("${through[@]}" postgres); fi
      pgbench -n -M prepared -c 8 -j 2 -T "$DUR" -f "$W/$script.sql" "${args[@]}" > "$W/$script-$side-$run.out" 2>&1
      got[$script-$side]+="$(tps "$W/$script-$side-$run.out") "
      grep -q "number of failed transactions: 0 " "$W/$script-$side-$run.out" || echo "failed transactions in $script $side run $run (see $W)" >&2
    done
  done
done
check="select (select md5(string_agg(id || ':' || taken || ':' || coalesce(worker, 0), ',' order by id)) from jobs) || ' ' || (select n from rounds) || ' ' || (select count(*) from jobs where taken)"
same=$(for b in 1 2; do psql -h 127.0.0.1 -p $(( P + b )) -U postgres -At postgres -c "$check"; done | sort -u | wc -l)
taken=$(psql -h 127.0.0.1 -p $(( P + 1 )) -U postgres -At postgres -c "select count(*) from jobs where taken")
online=$("$BIN/pgchorus" backends --config "$W/c/pgchorus.toml" 2>/dev/null | grep -c " online ")
{
  echo "# A job queue and leader election through pgchorusd (2 backends) against direct"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, PostgreSQL $(psql --version | awk '{print $3}'), \`$BIN\`, \`bench/job-queue.sh $DUR $RUNS\`, pgbench -M prepared -c 8, medians of $RUNS interleaved runs."
  echo
  echo "| workload | direct (tps) | pgchorus, 2 backends (tps) | ratio |"
  echo "|---|---|---|---|"
  for script in take elect; do
    d=$(echo "${got[$script-direct]}" | tr ' ' '\n' | grep . | median); t=$(echo "${got[$script-through]}" | tr ' ' '\n' | grep . | median)
    name=$([ "$script" = take ] && echo "take a job (SELECT … FOR UPDATE SKIP LOCKED, UPDATE by key)" || echo "leader election (pg_try_advisory_lock, UPDATE, unlock)")
    echo "| $name | $d | $t | $(awk -v d="$d" -v t="$t" 'BEGIN { printf "%.2f×", (d > 0 ? t / d : 0) }') |"
  done
  echo
  echo "Through pgchorusd: $taken jobs taken, failed transactions $(cat "$W"/*-through-*.out | sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }'), the two backends' queues and round counter identical: $([ "$same" = 1 ] && echo yes || echo no), backends online: $online of 2."
} | tee "$OUT"
