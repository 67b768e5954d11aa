#!/usr/bin/env bash
# Reprints, at the very end of a failed `swift test` run, each recorded issue on a few short lines:
# the issue itself and its report's lines that name an error, a difference or a status (CI shows the
# tail of a long log; the issues themselves may sit thousands of lines up, among other tests' output).
# Usage: failure-digest.sh LOG [MAX_LINES]
set -uo pipefail
log=$1
max=${2:-40}
[ -r "$log" ] || exit 0
echo "=== failure digest: every recorded issue of $log (details: the lines following it there) ==="
awk -v max="$max" '
    function cut(s) { gsub(/[ \t]+/, " ", s); return length(s) > 220 ? substr(s, 1, 220) "…" : s }
    /recorded an issue/ { inissue = 1; shown = 0; if (printed < max) { print cut($0); printed++ }; next }
    /^(✔|✘|◇) / { inissue = 0; next }
    inissue && shown < 4 && printed < max && /(ERROR|FATAL|error|warning|failed|differ|abort|quorum|online|offline|exit [1-9]|timeout|→)/ {
        print "    " cut($0); shown++; printed++
    }
' "$log"
echo "=== end of the failure digest ==="
