#!/usr/bin/env bash
# What holding a trigger's notifications for the vote costs: autocommit inserts through pgchorusd
# (release build, or PGCHORUS_BIN) in front of N backends into a table whose trigger calls pg_notify
# (a job queue's shape: held in pgchorus.held_notifications, released after each vote) and into the
# same table without the trigger, interleaved; a listener counts what arrives.
# Usage: bench/notify-hold.sh [backends] [seconds] [clients] [repetitions]
# Writes bench/results/notify-hold-<date>.md and prints the same table.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:/usr/lib/postgresql/15/bin:$PATH"
BACKENDS=${1:-3}; SECS=${2:-10}; CLIENTS=${3:-4}; REPS=${4:-2}
PORT=${PGCHORUS_BENCH_PORT:-17432}
BIN=${PGCHORUS_BIN:-}
if [ -z "$BIN" ]; then make -s release >/dev/null; BIN=.build/release; fi
DIR=$(mktemp -d /tmp/pgchorus-bench-XXXXXX); chmod 755 "$DIR"
"$BIN/pgchorus" demo --backends "$BACKENDS" --port "$PORT" --dir "$DIR/cluster" >"$DIR/demo.log" 2>&1 &
DEMO=$!
LISTENER=
cleanup() { [ -n "$LISTENER" ] && kill "$LISTENER" 2>/dev/null; kill -INT "$DEMO" 2>/dev/null || true; wait "$DEMO" 2>/dev/null || true; rm -rf "$DIR"; }
trap cleanup EXIT
for _ in $(seq 1 120); do grep -q "demo ready" "$DIR/demo.log" && break; sleep 1; done
grep -q "demo ready" "$DIR/demo.log" || { cat "$DIR/demo.log"; exit 1; }
PSQL=(psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PORT" -U postgres -d postgres)
"${PSQL[@]}" <<'SQL'
create table jobs (id bigserial primary key, queue text not null, payload text);
create table plain (id bigserial primary key, queue text not null, payload text);
create function jobs_notify() returns trigger language plpgsql as $$
begin perform pg_notify('jobs', new.id::text); return new; end $$;
create trigger jobs_notify after insert on jobs for each row execute function jobs_notify();
SQL
echo "insert into jobs (queue, payload) values ('default', 'x');" > "$DIR/jobs.sql"
echo "insert into plain (queue, payload) values ('default', 'x');" > "$DIR/plain.sql"
# The listener: one line per notification received, until it is stopped.
/usr/bin/python3 - "$PORT" >"$DIR/heard.txt" <<'PY' &
import select, sys, psycopg2
c = psycopg2.connect(host="127.0.0.1", port=int(sys.argv[1]), user="postgres", dbname="postgres")
c.autocommit = True
c.cursor().execute("listen jobs")
print("listening", flush=True)
while True:
    if select.select([c], [], [], 1) != ([], [], []):
        c.poll()
        while c.notifies:
            print(c.notifies.pop(0).payload, flush=True)
PY
LISTENER=$!
for _ in $(seq 50); do grep -q listening "$DIR/heard.txt" 2>/dev/null && break; sleep 0.1; done
OUT="bench/results/notify-hold-$(date +%Y%m%d-%H%M).md"
{
  echo "# Autocommit inserts through pgchorus ($BACKENDS backends): a trigger that notifies (held for the vote) vs none"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, PostgreSQL $(psql --version | awk '{print $3}'), $CLIENTS clients, ${SECS} s per run, $BIN."
  echo "Command: \`bench/notify-hold.sh $BACKENDS $SECS $CLIENTS $REPS\`"
  echo
  echo "| run | table | tps | failed |"
  echo "|---|---|---|---|"
} | tee "$OUT"
for rep in $(seq "$REPS"); do
  for table in plain jobs; do
    r=$(pgbench -h 127.0.0.1 -p "$PORT" -U postgres -n -c "$CLIENTS" -j 2 -T "$SECS" -f "$DIR/$table.sql" postgres 2>&1)
    tps=$(sed -n 's/^tps = \([0-9.]*\) .*/\1/p' <<<"$r" | head -1)
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$r")
    echo "| $rep | $table$([ "$table" = jobs ] && echo " (trigger notifies)") | $tps | ${failed:-?} |" | tee -a "$OUT"
  done
done
sleep 2
ROWS=$("${PSQL[@]}" -Atc "select count(*) from jobs")
HEARD=$(grep -vc listening "$DIR/heard.txt" || true)
DISTINCT=$(grep -v listening "$DIR/heard.txt" | sort -u | wc -l)
VOTES=$("${PSQL[@]}" -Atc "select count(*) from pgchorus.commit_log")
SUMS=$(for i in $(seq "$BACKENDS"); do
  psql -X -At -h 127.0.0.1 -p $((PORT + i)) -U postgres -d postgres \
    -c "select md5(string_agg(id || queue, ',' order by id)) || ':' || (select count(*) from pgchorus.held_notifications) from jobs"
done | sort -u | wc -l)
{
  echo
  echo "Rows inserted through the trigger: $ROWS; notifications heard by one listener: $HEARD ($DISTINCT distinct);"
  echo "commit-log rows (votes) on the lead: $VOTES; the backends' jobs tables and held rows identical: $([ "$SUMS" = 1 ] && echo yes || echo no)."
} | tee -a "$OUT"
[ "$HEARD" = "$ROWS" ] && [ "$DISTINCT" = "$ROWS" ] && [ "$SUMS" = 1 ]
