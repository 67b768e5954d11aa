# Helpers shared by the bench scripts (sourced; they run from the repository's root).

# The share of this machine's CPU time the hypervisor took (steal) between two /proc/stat `cpu` lines,
# in whole percent: runs with much of it are not comparable with the others (a busy host slows every
# system, unevenly).
steal_pct() { printf '%s\n%s\n' "$1" "$2" | awk '{ t = 0; for (f = 2; f <= 9; f++) t += $f; tot[NR] = t; st[NR] = $9 } END { d = tot[2] - tot[1]; printf "%.0f", (d > 0 ? 100 * (st[2] - st[1]) / d : 0) }'; }

# Sets BIN to the build to measure — .build/release when it holds `$2`, else .build/debug, unless BIN
# is set — and stops script `$1` when that build lacks `$2`.
pick_bin() {
  if [ -z "${BIN:-}" ]; then BIN=.build/debug; [ -x ".build/release/$2" ] && BIN=.build/release; fi
  [ -x "$BIN/$2" ] || { echo "$1: no $BIN/$2; run swift build (or make demo) first" >&2; exit 2; }
}
