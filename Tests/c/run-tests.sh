#!/usr/bin/env bash
# run-tests.sh PROGRAM...
#
# Runs each C test program (even after a failure), showing its output, and ends with the suite's
# one closing line "c: N passed, M failed" (SUITE names it otherwise), the sums of the programs' own closing lines
# "NAME: N passed, M failed" (test_framework.h's finish()). A program that exits non-zero without
# its closing line (a crash, an abort) counts as one failed check and is named.
# Exits 0 when every program exited 0 and nothing failed, 1 otherwise, 2 on bad usage.
set -uo pipefail

if [[ $# -eq 0 ]]; then
    echo "usage: $0 PROGRAM..." >&2
    exit 2
fi

output=$(mktemp)
trap 'rm -f "$output"' EXIT

passed=0
failed=0
status=0
for program in "$@"; do
    name=$(basename "$program")
    "$program" | tee "$output"
    result=${PIPESTATUS[0]}
    line=$(grep -E "^$name: [0-9]+ passed, [0-9]+ failed$" "$output" | tail -1)
    if [[ -z "$line" ]]; then
        echo "FAIL $name exited with status $result without its closing line \"$name: N passed, M failed\""
        failed=$((failed + 1))
        status=1
        continue
    fi
    read -r program_passed program_failed < <(sed -E 's/^.*: ([0-9]+) passed, ([0-9]+) failed$/\1 \2/' <<<"$line")
    passed=$((passed + program_passed))
    failed=$((failed + program_failed))
    if [[ $result -ne 0 ]]; then
        status=1
        if [[ $program_failed -eq 0 ]]; then
            echo "FAIL $name exited with status $result after reporting no failure"
            failed=$((failed + 1))
        fi
    fi
done

echo "${SUITE:-c}: $passed passed, $failed failed"
[[ $failed -eq 0 && $status -eq 0 ]]
