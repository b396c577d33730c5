#!/usr/bin/env bash
# Configures and builds one clang sanitizer tree of fattn (CPU only) for the hardening tests.
#   subbuild.sh fuzz SOURCE_DIR BINARY_DIR [GENERATOR]   ASan+UBSan with libFuzzer coverage:
#                                                        fattn_fuzz, hardening_faults, hardening_edges
#   subbuild.sh tsan SOURCE_DIR BINARY_DIR [GENERATOR]   ThreadSanitizer with LLVM's libomp:
#                                                        hardening_soak, fattn_tests
# Fails, naming the Debian packages to install, when the toolchain is missing: CI must install
# them (clang libclang-rt-14-dev libomp-14-dev), so a missing tool is an error, never a skip.
set -euo pipefail
kind=$1 source_dir=$2 binary_dir=$3 generator=${4:-Ninja}
packages="clang libclang-rt-14-dev libomp-14-dev"

missing() {
    echo "subbuild.sh: $1" >&2
    echo "subbuild.sh: install the hardening toolchain: apt-get install -y $packages" >&2
    exit 1
}

command -v clang++ >/dev/null || missing "clang++ not found"
probe_dir=$(mktemp -d)
trap 'rm -rf "$probe_dir"' EXIT
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' > "$probe_dir/probe.cpp"

case $kind in
fuzz)
    clang++ -fsanitize=fuzzer,address,undefined "$probe_dir/probe.cpp" -o "$probe_dir/probe" 2>/dev/null ||
        missing "clang++ cannot link -fsanitize=fuzzer,address,undefined (libFuzzer runtime missing)"
    sanitize="address,undefined,fuzzer-no-link"  # coverage feedback from the library too
    targets="fattn_fuzz hardening_faults hardening_edges"
    extra=(-DFATTN_HARDENING_FUZZER=ON)
    ;;
tsan)
    archer=$(dirname "$(clang++ -print-resource-dir)")/../libarcher.so
    [[ -f $archer ]] || missing "LLVM's OpenMP TSan tool libarcher.so not found next to clang's resources"
    echo 'int main() { int s = 0;
#pragma omp parallel for reduction(+ : s)
for (int i = 0; i < 8; ++i) s += i; return s == 28 ? 0 : 1; }' > "$probe_dir/omp.cpp"
    clang++ -fopenmp -fsanitize=thread "$probe_dir/omp.cpp" -o "$probe_dir/omp" 2>/dev/null ||
        missing "clang++ cannot link -fopenmp -fsanitize=thread (libomp or the TSan runtime missing)"
    sanitize="thread"
    targets="hardening_soak fattn_tests"
    extra=()
    ;;
*) echo "subbuild.sh: unknown kind '$kind' (fuzz or tsan)" >&2; exit 2 ;;
esac

cmake -S "$source_dir" -B "$binary_dir" -G "$generator" \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DFATTN_CUDA=OFF -DFATTN_BUILD_BENCH=OFF -DFATTN_BUILD_EXAMPLES=OFF \
    "-DFATTN_SANITIZE=$sanitize" "${extra[@]}" >/dev/null
# shellcheck disable=SC2086
cmake --build "$binary_dir" --target $targets -j "${FATTN_BUILD_JOBS:-2}"
