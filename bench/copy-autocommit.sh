#!/usr/bin/env bash
# What an autocommit COPY costs through pgchorusd, for one or more builds side by side: each build
# runs `pgchorus demo --backends N` (2 unless -n), then psql runs COPIES autocommit `\copy` of ROWS
# rows each (one session, one after the other), ROUNDS times, the builds interleaved; prints the
# median time per COPY. (Since 2026-12-06 an autocommit COPY sent as a simple Query goes through the
# vote: BEGIN pipelined in front, PREPARE TRANSACTION and COMMIT PREPARED after.)
#
#   bench/copy-autocommit.sh [-n BACKENDS] BIN_DIR [BIN_DIR …]     (as root)
#
# ROUNDS (5), COPIES (300), ROWS (100) in the environment.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/lib.sh
export PATH="/usr/lib/postgresql/15/bin:$PATH"
N=2; [ "${1:-}" = "-n" ] && { N=$2; shift 2; }
[ $# -ge 1 ] || { echo "usage: bench/copy-autocommit.sh [-n BACKENDS] BIN_DIR [BIN_DIR …]" >&2; exit 2; }
ROUNDS=${ROUNDS:-5}; COPIES=${COPIES:-300}; ROWS=${ROWS:-100}
WORK=$(mktemp -d /tmp/pgchorus-copy-XXXXXX); chmod 755 "$WORK"
DEMOS=()
trap 'for d in "${DEMOS[@]:-}"; do [ -n "$d" ] && kill "$d" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$WORK"' EXIT

seq 1 "$ROWS" | awk '{ print $1 "\trow " $1 }' >"$WORK/rows.tsv"
for _ in $(seq 1 "$COPIES"); do echo "\\copy loaded (id, v) from '$WORK/rows.tsv'"; done >"$WORK/copies.sql"

k=0; PORTS=()
for bin in "$@"; do
  port=$((26800 + 10 * k))
  start_demo "$bin" "$port" "$N" "$WORK/demo$k"
  psql -X -q -h 127.0.0.1 -p "$port" -U postgres -c "create table loaded (id int, v text)" postgres
  PORTS+=("$port")
  k=$((k + 1))
done

for r in $(seq 1 "$ROUNDS"); do
  for i in $(seq 0 $((k - 1))); do
    start=$(date +%s.%N)
    psql -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "${PORTS[$i]}" -U postgres -f "$WORK/copies.sql" postgres
    end=$(date +%s.%N)
    echo "$i $(echo "$start $end" | awk -v n="$COPIES" '{ printf "%.0f", ($2 - $1) * 1e6 / n }')" >>"$WORK/results"
  done
done
echo "| build | backends | µs per autocommit COPY of $ROWS rows (median of $ROUNDS × $COPIES) |"
echo "|---|---|---|"
i=0
for bin in "$@"; do
  echo "| $bin | $N | $(awk -v i="$i" '$1 == i { print $2 }' "$WORK/results" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }') |"
  i=$((i + 1))
done
