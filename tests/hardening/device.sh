#!/usr/bin/env bash
# The device half of the hardening suite (issue 6), for the GPU machine. Usage, from the repository
# root:   bash tests/hardening/device.sh [BUILD_DIR]      (default build-device)
# Builds the project with CUDA in BUILD_DIR if it has no build yet, then runs, writing one log per
# step and summary.txt to $OUT (or BUILD_DIR/hardening-logs):
#   1. compute-sanitizer memcheck (with leak check), racecheck, initcheck and synccheck over the
#      CUDA cases ("cuda: *") of the hardening fault and edge suites (small shapes: forward and
#      backward, causal, windows, GQA, rows with no key, NaN/Inf, huge magnitudes), and memcheck
#      also over the core suite's CUDA cases (FATTN_TEST_QUICK=1 keeps its long sequences short);
#      the slow tools (racecheck, initcheck, synccheck) see the core suite only with CORE_FILTER;
#   2. the soak: CPU and CUDA threads, separate handles and non-blocking streams, every result
#      checked against the float64 reference, for SOAK_SECONDS (default 120);
#   3. the CUDA out-of-memory check (cuda_oom.cpp).
# Exits non-zero if any step failed. Environment: STEPS (default "sanitizers soak oom"),
# SOAK_SECONDS, SOAK_THREADS (default 4), SANITIZER_TIMEOUT per run in seconds (default 300),
# CORE_FILTER (a doctest --test-case filter for the core suite under the slow tools, e.g. "cuda: *").
set -uo pipefail
build=${1:-build-device}
out=${OUT:-$build/hardening-logs}
mkdir -p "$out"
summary=$out/summary.txt
: > "$summary"
failed=0

if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S . -B "$build" -G Ninja -DFATTN_CUDA=ON -DFATTN_BUILD_BENCH=OFF -DFATTN_BUILD_EXAMPLES=OFF \
        > "$out/configure.log" 2>&1 || { echo "configure failed: see $out/configure.log"; exit 1; }
fi
cmake --build "$build" -j "$(nproc)" --target fattn_tests hardening_faults hardening_edges hardening_soak hardening_cuda_oom \
    > "$out/build.log" 2>&1 || { echo "build failed: see $out/build.log"; tail -30 "$out/build.log"; exit 1; }

sanitizer=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
steps=${STEPS:-sanitizers soak oom}
timeout_s=${SANITIZER_TIMEOUT:-300}

# step NAME COMMAND...: runs, logs to $out/NAME.log, records the outcome and the sanitizer's summary.
step() {
    local name=$1
    shift
    local start=$SECONDS
    "$@" > "$out/$name.log" 2>&1
    local status=$?
    local errors
    errors=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|LEAK SUMMARY|soak: [0-9]|cuda_oom:|test cases:" "$out/$name.log" | tr '\n' ' ')
    printf '%-32s %-4s %5ds  %s\n' "$name" "$([[ $status == 0 ]] && echo ok || echo FAIL)" $((SECONDS - start)) "$errors" | tee -a "$summary"
    [[ $status == 0 ]] || failed=1
}

if [[ " $steps " == *" sanitizers "* ]]; then
    for tool in memcheck racecheck initcheck synccheck; do
        extra=()
        [[ $tool == memcheck ]] && extra=(--leak-check full)
        for program in hardening_faults hardening_edges; do
            step "$tool-$program" timeout "$timeout_s" "$sanitizer" --tool "$tool" "${extra[@]}" --error-exitcode 99 \
                "$build/tests/hardening/$program" "--test-case=cuda: *"
        done
        core_filter=${CORE_FILTER:-}
        [[ $tool == memcheck ]] && core_filter=${CORE_FILTER:-cuda: *}
        if [[ -n $core_filter ]]; then
            step "$tool-fattn_tests" env FATTN_TEST_QUICK=1 timeout "$timeout_s" "$sanitizer" --tool "$tool" "${extra[@]}" \
                --error-exitcode 99 "$build/tests/fattn_tests" "--test-case=$core_filter"
        fi
    done
fi
[[ " $steps " == *" soak "* ]] &&
    step soak "$build/tests/hardening/hardening_soak" --backend all --seconds "${SOAK_SECONDS:-120}" --threads "${SOAK_THREADS:-4}"
[[ " $steps " == *" oom "* ]] && step cuda_oom "$build/tests/hardening/hardening_cuda_oom"

echo "device hardening: $([[ $failed == 0 ]] && echo all steps passed || echo SOME STEPS FAILED); logs in $out" | tee -a "$summary"
exit $failed
