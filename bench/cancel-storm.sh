#!/usr/bin/env bash
# Clients' cancels racing their statements (bench/cancel-storm.py) through `pgchorus demo --backends N`:
# afterwards every backend must be online, the tables identical on all of them, and no prepared
# transaction left. A cancel that lands on a statement of pgchorus' own, or on one backend's copy of
# the client's statement alone, shows as a failed backend or differing tables.
#
#   [CANCEL_GAP_MS=10] [NODES=1] [STATEMENT_TIMEOUT_MS=30000] bench/cancel-storm.sh [seconds] [workers] [backends]
#   (as root; default 30 s, 8 workers, 2 backends)
#
# NODES=2 (or 3) runs `pgchorus demo --nodes` and spreads the workers over the nodes (127.0.0.2, …):
# their sequence-drawing inserts then take the cluster-wide sequence lock, which the cancels race too.
#
# Prints the counts, the backends' states and whether the tables are identical; exits 1 if not all
# online or not identical. Everything on 127.0.0.1.
set -uo pipefail
cd "$(dirname "$0")/.."
export PATH="/usr/lib/postgresql/15/bin:$PATH"
DUR=${1:-30}; WORKERS=${2:-8}; N=${3:-2}
P=${PGCHORUS_BENCH_PORT:-18532}
. bench/lib.sh
pick_bin bench/cancel-storm.sh pgchorus pgchorusd
dpkg -s python3-psycopg2 >/dev/null 2>&1 || apt-get install -y -qq python3-psycopg2 >/dev/null
W=$(mktemp -d /tmp/pgchorus-storm-XXXXXX); chmod 755 "$W"
NODES=${NODES:-1}
"$BIN/pgchorus" demo --backends "$N" --nodes "$NODES" --port "$P" --dir "$W/c" > "$W/demo.log" 2>&1 &
DEMO=$!
trap 'kill $DEMO 2>/dev/null; wait $DEMO 2>/dev/null; rm -rf "$W"' EXIT
for _ in $(seq 1 120); do grep -qs "demo ready" "$W/demo.log" && break; sleep 1; done
grep -q "demo ready" "$W/demo.log" || { tail -20 "$W/demo.log"; exit 1; }
echo "CANCEL_GAP_MS=${CANCEL_GAP_MS:-10} NODES=$NODES STATEMENT_TIMEOUT_MS=${STATEMENT_TIMEOUT_MS:-30000} bench/cancel-storm.sh $DUR $WORKERS $N, $(date -u '+%Y-%m-%d %H:%M UTC'), \`$BIN\`"
if [ "$NODES" = 1 ]; then
  DSNS="host=127.0.0.1 port=$P user=postgres dbname=postgres"; CONF="$W/c/pgchorus.toml"
else
  DSNS=$(for i in $(seq 1 "$NODES"); do printf 'host=127.0.0.%d port=%d user=postgres dbname=postgres;' $((i + 1)) "$P"; done)
  DSNS=${DSNS%;}; CONF="$W/c/node1/pgchorus.toml"
fi
timeout $((DUR * 2 + 60)) /usr/bin/python3 bench/cancel-storm.py "$DSNS" "$WORKERS" "$DUR"
rc=$?
[ "$rc" = 124 ] && { echo "THE RUN DID NOT END (a stall?)"; exit 1; }
[ "$rc" = 0 ] || { echo "cancel-storm.py exited $rc"; exit 1; }
sleep 2
status=$("$BIN/pgchorus" status --config "$CONF" 2>&1)
echo "$status" | grep -E '^backends:|^ *db[0-9]' || echo "$status"
ok=0
online=$(echo "$status" | grep -cE '^ *db[0-9].*online')
[ "$online" = "$N" ] || { echo "NOT ALL ONLINE ($online of $N)"; ok=1; }
sums=()
for i in $(seq 1 "$N"); do
  sums+=("$(psql -h 127.0.0.1 -p $((P + i)) -U postgres -At -c "select md5(string_agg(x, '|' order by x)) from (select 'a'||id||':'||v x from storm_acc union all select 'l'||id||':'||acc||':'||at||':'||u from storm_log) t" postgres)")
done
prepared=$(for i in $(seq 1 "$N"); do psql -h 127.0.0.1 -p $((P + i)) -U postgres -At -c "select count(*) from pg_prepared_xacts" postgres; done | paste -sd+ | bc)
echo "table digests: ${sums[*]}; prepared transactions left: $prepared"
[ "$(printf '%s\n' "${sums[@]}" | sort -u | wc -l)" = 1 ] || { echo "TABLES DIFFER"; ok=1; }
[ "$prepared" = 0 ] || ok=1
exit $ok
