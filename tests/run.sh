#!/usr/bin/env bash
# Runs every test binary given on the command line (from tests/unit/test_*.c),
# shows their output, and ends with the one summary line "N passed, N failed".
# A binary that dies without its own summary counts as one failure.
set -u
pass=0; fail=0; skip=0
for t in "$@"; do
    echo "== $t"
    out=$($t 2>&1); rc=$?
    printf '%s\n' "$out" | grep -v '^## '
    line=$(printf '%s\n' "$out" | grep '^## ' | tail -n 1)
    if [ -n "$line" ]; then
        read -r p f s <<<"$(printf '%s' "$line" | sed -E 's/^## ([0-9]+) passed, ([0-9]+) failed, ([0-9]+) skipped.*/\1 \2 \3/')"
        pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
        if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail=$((fail + 1)); echo "FAIL  $(basename "$t") exited $rc"; fi
    else
        fail=$((fail + 1)); echo "FAIL  $(basename "$t") (no summary, exit $rc)"
    fi
done
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
