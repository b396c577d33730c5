#!/usr/bin/env bash
# The GPU half of the test and benchmark suites, for a machine with a CUDA GPU (CI has none).
# From the repository root:   bash tests/gpu_suite.sh [tests|bench|hardening]...   (default: all)
#   tests      the core doctest suite with its CUDA cases (again with FATTN_CUDA_KERNELS=sm80), the hardening fault/edge suites, the
#              Python binding's tests (torch CUDA cases included), and the demo on the GPU;
#   bench      bench/bench_cuda.py over the issue grid beside PyTorch SDPA's FLASH_ATTENTION and
#              CUDNN_ATTENTION backends in the same run (JSON + markdown to the log folder);
#   hardening  tests/hardening/device.sh: compute-sanitizer memcheck/racecheck/initcheck/synccheck,
#              the multi-threaded soak and the CUDA out-of-memory check.
# Builds into BUILD_DIR (default build-gpu) when needed; logs and results go to BUILD_DIR/gpu-logs
# and, when $OUT is set (the device machine hands back only a few files), into $OUT/gpu-logs.tgz.
# Prints a summary line per step; exits non-zero if any step failed.
set -uo pipefail
build=${BUILD_DIR:-build-gpu}
out=$build/gpu-logs
rm -rf "$out"
mkdir -p "$out"
parts=("$@")
((${#parts[@]})) || parts=(tests bench hardening)
failed=0

step() {  # step NAME COMMAND...: runs, logs to $out/NAME.log, prints one summary line
    local name=$1 start=$SECONDS
    shift
    "$@" > "$out/$name.log" 2>&1
    local status=$?
    printf '%-14s %-4s %4ds  %s\n' "$name" "$([[ $status == 0 ]] && echo ok || echo FAIL)" $((SECONDS - start)) \
        "$(grep -E '^\[doctest\] (test cases|Status)|passed|failed|PASSED|FAILED|skipped' "$out/$name.log" | tail -2 | tr '\n' ' ')"
    [[ $status == 0 ]] || failed=1
}

if [[ ! -f $build/CMakeCache.txt ]]; then
    cmake -S . -B "$build" -G Ninja -DFATTN_CUDA=ON -DFATTN_BUILD_BENCH=OFF > "$out/configure.log" 2>&1 ||
        { tail -30 "$out/configure.log"; exit 1; }
fi
step build cmake --build "$build" -j "$(nproc)" --target fattn fattn_tests fattn_demo hardening_faults \
    hardening_edges hardening_soak hardening_cuda_oom || { tail -40 "$out/build.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > "$out/gpu.txt" 2>&1

for part in "${parts[@]}"; do
    case $part in
        tests)
            step core "$build/tests/fattn_tests"
            # On a Hopper GPU the default run takes the Hopper kernels; test the sm_80 ones too.
            step core-sm80 env FATTN_CUDA_KERNELS=sm80 "$build/tests/fattn_tests" -tc="cuda:*"
            step faults "$build/tests/hardening/hardening_faults"
            step edges "$build/tests/hardening/hardening_edges"
            step python env FATTN_LIBRARY="$build/src/libfattn.so.0" PYTHONPATH=bindings/python \
                python3 -m pytest -q -rs -p no:cacheprovider bindings/python/tests
            step demo "$build/examples/fattn_demo"
            ;;
        bench)
            step bench python3 bench/bench_cuda.py --lib "$build/src/libfattn.so.0" --out "$out"
            ;;
        hardening)
            step hardening env OUT="$out/hardening" bash tests/hardening/device.sh "$build"
            ;;
        *) echo "unknown part: $part"; exit 2 ;;
    esac
done
echo "gpu suite: $([[ $failed == 0 ]] && echo all steps passed || echo SOME STEPS FAILED)" | tee "$out/summary.txt"
[[ -n ${OUT:-} ]] && tar czf "$OUT/gpu-logs.tgz" -C "$out" .
exit $failed
