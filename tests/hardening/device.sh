#!/usr/bin/env bash
# The device half of the hardening suite (issue 6), for the GPU machine. Usage, from the repository
# root:   bash tests/hardening/device.sh [BUILD_DIR]      (default build-device)
# Builds the project with CUDA in BUILD_DIR if it has no build yet, then runs, writing one log per
# step and summary.txt to $OUT (or BUILD_DIR/hardening-logs):
#   1. compute-sanitizer memcheck (with leak check), racecheck, initcheck and synccheck over the
#      CUDA cases ("cuda: *") of the hardening fault/edge suites and of the core suite
#      (FATTN_TEST_QUICK=1 keeps the core suite's long sequences short under the sanitizers);
#   2. the soak: CPU and CUDA threads, separate handles and non-blocking streams, every result
#      checked against the float64 reference, for SOAK_SECONDS (default 180);
#   3. the CUDA out-of-memory check (cuda_oom.cpp).
# Exits non-zero if any step failed. Environment: SOAK_SECONDS, SOAK_THREADS (default 4),
# SANITIZER_TIMEOUT per run in seconds (default 900), CORE_FILTER (default "cuda: *").
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
core_filter=${CORE_FILTER:-cuda: *}

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

for tool in memcheck racecheck initcheck synccheck; do
    extra=()
    [[ $tool == memcheck ]] && extra=(--leak-check full)
    for program in hardening_faults hardening_edges; do
        step "$tool-$program" timeout "${SANITIZER_TIMEOUT:-900}" "$sanitizer" --tool "$tool" "${extra[@]}" --error-exitcode 99 \
            "$build/tests/hardening/$program" "--test-case=cuda: *"
    done
    step "$tool-fattn_tests" env FATTN_TEST_QUICK=1 timeout "${SANITIZER_TIMEOUT:-900}" "$sanitizer" --tool "$tool" "${extra[@]}" \
        --error-exitcode 99 "$build/tests/fattn_tests" "--test-case=$core_filter"
done

step soak "$build/tests/hardening/hardening_soak" --backend all --seconds "${SOAK_SECONDS:-180}" --threads "${SOAK_THREADS:-4}"
step cuda_oom "$build/tests/hardening/hardening_cuda_oom"

echo "device hardening: $([[ $failed == 0 ]] && echo all steps passed || echo SOME STEPS FAILED); logs in $out" | tee -a "$summary"
exit $failed
