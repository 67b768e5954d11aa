#!/usr/bin/env bash
# psycopg2's own test suite (the source distribution of the installed version, its tests/ run against
# the installed module) directly against one backend and through pgchorusd in front of three
# (`pgchorus demo --backends 3`, release build). Prints the comparison,
# every test that passes directly but not through pgchorus, and the backends' status afterwards;
# exits 1 when a test fails through pgchorus that is not in KNOWN below, or a backend is not online.
#
#   bench/psycopg2-suite.sh            (as root; needs python3-psycopg2, python3-pip and PyPI for the sdist)
#   PSYCOPG2_NODES=2 bench/psycopg2-suite.sh   (through node 1 of a two-node demo cluster: every
#                                       sequence-drawing statement also takes the cluster-wide turn)
#
# Writes bench/results/psycopg2-<date>.md (or $PSYCOPG2_SUITE_OUT) and prints the same. `make test`
# runs it as its compatibility stage with the debug build (`make test-psycopg2`).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="/opt/swift/usr/bin:/usr/lib/postgresql/15/bin:$PATH"
PORT=${PGCHORUS_BENCH_PORT:-18432}
NODES=${PSYCOPG2_NODES:-1}
# With several nodes, node 1 listens on 127.0.0.2 and its configuration is node1/pgchorus.toml.
if [ "$NODES" -gt 1 ]; then HOST=127.0.0.2; CONF=node1/pgchorus.toml; else HOST=127.0.0.1; CONF=pgchorus.toml; fi
# The release build, brought up to date (PGCHORUS_BIN=.build/debug to use the debug build as it is).
BIN=${PGCHORUS_BIN:-.build/release}
[ -n "${PGCHORUS_BIN:-}" ] || make -s release >/dev/null
# Tests expected to fail through pgchorus (none since named cursors over clock_timestamp() live on the lead).
KNOWN="${KNOWN:-}"

version=$(/usr/bin/python3 -c 'import psycopg2; print(psycopg2.__version__.split()[0])')
work=$(mktemp -d /tmp/pgchorus-psycopg2-XXXXXX); chmod 755 "$work"
trap 'kill "$demo" 2>/dev/null || true; wait "$demo" 2>/dev/null || true; rm -rf "$work"' EXIT
/usr/bin/python3 -m pip download --quiet --no-deps --no-binary :all: -d "$work" "psycopg2==$version"
tar xzf "$work/psycopg2-$version.tar.gz" -C "$work"
cat > "$work/run.py" <<'PY'
import sys, time, unittest
sys.path.insert(0, '.')
import tests
class Timed(unittest.TextTestResult):
    # Each test's start time (UTC, as pgchorusd logs), to find what ran when pgchorusd logged a failure.
    def startTest(self, test):
        self.stream.write(time.strftime("%H:%M:%S ", time.gmtime()))
        super().startTest(test)
result = unittest.TextTestRunner(verbosity=2, stream=sys.stdout, resultclass=Timed).run(tests.test_suite())
PY

"$BIN/pgchorus" demo --backends 3 --nodes "$NODES" --port "$PORT" --dir "$work/cluster" >"$work/demo.log" 2>&1 &
demo=$!
for _ in $(seq 1 120); do grep -q "demo ready" "$work/demo.log" && break; sleep 1; done
grep -q "demo ready" "$work/demo.log" || { echo "the demo did not start:"; tail -20 "$work/demo.log"; exit 1; }

suite() { # label host port database
  psql -h "$2" -p "$3" -U postgres -X -q -c "create database $4" >/dev/null
  (cd "$work/psycopg2-$version" && PSYCOPG2_TESTDB=$4 PSYCOPG2_TESTDB_HOST=$2 PSYCOPG2_TESTDB_PORT=$3 PSYCOPG2_TESTDB_USER=postgres \
    timeout 1200 /usr/bin/python3 "$work/run.py" >"$work/$1.log" 2>&1) || true
}
# Through pgchorusd first, then directly against db1 (a database of its own): a direct run first
# would move db1's OID counter ahead of the others' (large objects take server-chosen OIDs).
suite pgchorus "$HOST" "$PORT" psycopg2_test
status=$("$BIN/pgchorus" backends --config "$work/cluster/$CONF" || true)

suite direct 127.0.0.1 $((PORT + 1)) psycopg2_direct
outcomes() { grep -E ' \.\.\. (ok|FAIL|ERROR|skipped.*|expected failure)$' "$work/$1.log" | sed -E 's/^([0-9:]+ )?([^ ]+) \(([^)]+)\).* \.\.\. (ok|FAIL|ERROR|skipped|expected failure).*/\3 \4/' | sort; }
outcomes direct >"$work/direct.txt"; outcomes pgchorus >"$work/pgchorus.txt"
count() { awk -v k="$2" '$2 == k' "$work/$1.txt" | wc -l; }
regressions=$(join "$work/direct.txt" "$work/pgchorus.txt" | awk '$2 == "ok" && $3 != "ok" { print $1 " " $3 }')
unknown=$(echo "$regressions" | awk 'NF' | while read -r t _; do n=${t##*.}; case " $KNOWN " in *" $n "*) ;; *) echo "$t";; esac; done)
# Every table of the test database, row by row (as the integration tests compare backends).
checksum="select coalesce(string_agg(tbl || ':' || h, ' ' order by tbl), 'no tables') from (select c.relname as tbl, (xpath('/row/h/text()', query_to_xml(format('select md5(coalesce(string_agg(t::text, %L order by t::text), %L)) as h from %I.%I t', ',', '', n.nspname, c.relname), false, true, '')))[1]::text as h from pg_class c join pg_namespace n on n.oid = c.relnamespace where c.relkind = 'r' and n.nspname = 'public') x"
sums=$(for p in 1 2 3; do psql -h 127.0.0.1 -p $((PORT + p)) -U postgres -X -At -d psycopg2_test -c "$checksum"; done | sort -u | wc -l)

OUT=${PSYCOPG2_SUITE_OUT:-bench/results/psycopg2-$(date +%Y%m%d-%H%M).md}
mkdir -p bench/results
{
  echo "# psycopg2 $version's test suite, directly and through pgchorusd (3 backends$([ "$NODES" -gt 1 ] && echo ", node 1 of $NODES"))"
  echo
  echo "$(date -u '+%Y-%m-%d %H:%M UTC'), PostgreSQL $(psql --version | awk '{print $3}'), \`bench/psycopg2-suite.sh\` ($BIN)."
  echo
  echo "| | ok | FAIL | ERROR | skipped |"
  echo "|---|---|---|---|---|"
  for r in direct pgchorus; do echo "| $r | $(count $r ok) | $(count $r FAIL) | $(count $r ERROR) | $(count $r skipped) |"; done
  echo
  echo "Passing directly, not through pgchorusd:"
  echo
  echo "${regressions:-none}" | sed 's/^/    /'
  echo
  echo "Backends afterwards (every table of the test database identical on the three: $([ "$sums" = 1 ] && echo yes || echo no)):"
  echo
  echo "$status" | sed 's/^/    /'
} | tee "$OUT"
if [ -n "$unknown" ] || echo "$status" | grep -qE ' (failed|down|recovering) ' || [ "$sums" != 1 ]; then
  # What pgchorusd said about it: the reasons are in its log, which goes with the work directory.
  echo; echo "pgchorusd's warnings and errors (last 60):"
  grep -E ' (warning|error|critical) ' "$work/demo.log" | tail -60 | cut -c1-400
  # The tests that ran in the 15 s before pgchorusd first failed a backend.
  first=$(grep -m1 -E ' error .*backend failed' "$work/demo.log" | sed -E 's/^[0-9-]+T([0-9:]+).*/\1/' || true)
  if [ -n "$first" ]; then
    echo; echo "psycopg2 tests started in the 15 s before the first backend failed ($first UTC):"
    awk -v end="$first" 'function s(t, a) { split(t, a, ":"); return a[1] * 3600 + a[2] * 60 + a[3] }
      $1 ~ /^[0-9][0-9]:[0-9][0-9]:[0-9][0-9]$/ && s($1) <= s(end) && s($1) >= s(end) - 15 { print "    " $1, $2, $3 }' "$work/pgchorus.log" | tail -40
  fi
  cp "$work/pgchorus.log" "${PSYCOPG2_RUN_LOG:-/tmp/pgchorus-psycopg2-run.log}" 2>/dev/null || true
  cp "$work/demo.log" "${PSYCOPG2_DEMO_LOG:-/tmp/pgchorus-psycopg2-demo.log}" 2>/dev/null || true
  exit 1
fi
