#!/usr/bin/env bash
# run.sh [SECONDS] [HARNESS...] — builds the fuzz library and harnesses, then runs each harness
# (default: api, program, config) for SECONDS (default 45), one after another.
#
# Each run starts from the committed seeds and regression inputs (Tests/fuzz/corpus/NAME, which
# libFuzzer executes first, so a crash that came back fails at once) plus what earlier runs on
# this machine found (.build-fuzz/corpus/NAME, where new inputs go; it is gitignored). A crash,
# leak, timeout or out-of-memory input is written to .build-fuzz/artifacts/NAME/ and its report
# shown. Each harness ends with a line "fuzz_NAME: N runs in S s (R/s), corpus C inputs, coverage
# E edges: ok|FAILED", and the whole with "fuzz: P passed, F failed (N runs)".
# Exits 0 when every harness ran its time without a finding.
#
#   Tests/fuzz/run.sh                 CI's short run (Scripts/test)
#   Tests/fuzz/run.sh 1200 program    a long run of one harness (README "Fuzzing")
#
# Environment: FUZZ_FLAGS adds libFuzzer flags (e.g. "-jobs=2 -workers=2"); FUZZ_SKIP_BUILD=1
# uses what is built.
set -uo pipefail
cd "$(dirname "$0")/../.."

seconds=${1:-45}
shift || true
harnesses=("$@")
[ ${#harnesses[@]} -gt 0 ] || harnesses=(api program config)

scratch=.build-fuzz
if [ "${FUZZ_SKIP_BUILD:-0}" != 1 ]; then
    # The library with its Swift code instrumented for libFuzzer's coverage and for ASan (the
    # harnesses supply both runtimes). Only the library product: -sanitize=fuzzer would give
    # the package's executables libFuzzer's main.
    if ! swift build --scratch-path "$scratch" --product vtrn -Xswiftc -sanitize=fuzzer,address 2>&1 | { grep -v '^\[' || true; }; then
        echo "fuzz: building the instrumented library failed"
        exit 1
    fi
fi
bin=$(swift build --scratch-path "$scratch" --show-bin-path)
if ! make -s -C Tests/fuzz BIN="$bin"; then
    echo "fuzz: building the harnesses failed"
    exit 1
fi

passed=0
failed=0
total_runs=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for name in "${harnesses[@]}"; do
    program=Tests/fuzz/build/fuzz_$name
    [ -x "$program" ] || { echo "fuzz: no harness $name"; failed=$((failed + 1)); continue; }
    work=$scratch/corpus/$name
    artifacts=$scratch/artifacts/$name
    mkdir -p "$work" "$artifacts"
    max_len=4096
    [ "$name" = config ] && max_len=512
    # detect_leaks: LeakSanitizer after each input that allocated more than it freed, and at exit.
    ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0} \
    "$program" "$work" "Tests/fuzz/corpus/$name" -max_total_time="$seconds" -timeout=60 -report_slow_units=60 -rss_limit_mb=3072 \
        -max_len="$max_len" -print_final_stats=1 -artifact_prefix="$artifacts/" ${FUZZ_FLAGS:-} >"$log" 2>&1
    status=$?
    runs=$(grep -Eo 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    rate=$(grep -Eo 'stat::average_exec_per_sec: *[0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
    coverage=$(grep -Eo 'cov: [0-9]+' "$log" | tail -1 | grep -Eo '[0-9]+')
    corpus=$(find "$work" -type f | wc -l)
    total_runs=$((total_runs + ${runs:-0}))
    summary="fuzz_$name: ${runs:-0} runs in $seconds s (${rate:-0}/s), corpus $corpus inputs, coverage ${coverage:-0} edges"
    if [ $status -eq 0 ] && ! grep -qE '^==[0-9]+==ERROR|^SUMMARY: |Test unit written' "$log"; then
        echo "$summary: ok"
        passed=$((passed + 1))
    else
        # The report: libFuzzer's and the sanitizer's lines, without the shadow-memory dump.
        grep -vE '^\s+0x[0-9a-f]+:|^  [A-Z][a-z].*: +[0-9a-f ]+$|^#[0-9]+\s+(NEW|REDUCE|pulse)' "$log" | tail -60
        echo "$summary: FAILED (exit $status; the input is in $artifacts/)"
        failed=$((failed + 1))
    fi
done
echo "fuzz: $passed passed, $failed failed ($total_runs runs)"
[ $failed -eq 0 ]
