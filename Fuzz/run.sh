#!/bin/bash
# Runs every fuzz target (built by `make fuzz`): first the kept crash inputs of Fuzz/regressions
# (each must now pass), then FUZZ_RUNS new inputs from the seed corpus (Fuzz/corpus, captured
# traffic) at most FUZZ_SECONDS each. A crash stops with its input in Fuzz/crashes/; copy it into
# Fuzz/regressions/<corpus>/ once fixed. Prints one line of figures per target.
set -euo pipefail
cd "$(dirname "$0")"
BIN=../.build/fuzz/release
RUNS=${FUZZ_RUNS:-1000000}
SECONDS_EACH=${FUZZ_SECONDS:-600}
TARGETS=${FUZZ_TARGETS:-"FuzzClientMessages:client FuzzBackendMessages:backend FuzzStartupPhase:startup FuzzSCRAM:scram"}
mkdir -p crashes
for pair in $TARGETS; do
    target=${pair%%:*} corpus=${pair##*:}
    if compgen -G "regressions/$corpus/*" >/dev/null; then
        "$BIN/$target" -runs=1 regressions/"$corpus"/* >/dev/null 2>&1 || { echo "fuzz: $target fails a kept regression input (regressions/$corpus)"; exit 1; }
    fi
    mkdir -p corpus-run/"$corpus"
    log=crashes/$target.log
    start=$(date +%s)
    if ! "$BIN/$target" -runs="$RUNS" -max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix=crashes/"$target"- corpus-run/"$corpus" corpus/"$corpus" >"$log" 2>&1; then
        tail -30 "$log"
        echo "fuzz: $target found a failing input: $(ls crashes/"$target"-* 2>/dev/null | head -1)"
        exit 1
    fi
    end=$(date +%s)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    printf 'fuzz: %-20s %10s inputs in %6d s, %s, corpus %s, no crash\n' "$target" "$runs" "$((end - start))" "$cov" "$(ls corpus-run/"$corpus" | wc -l)"
done
