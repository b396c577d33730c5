# Shared by .ci/demo and .ci/test: install what is missing, then configure and build.
# Sourced, not run. Honors BUILD_DIR (default build) and FATTN_CMAKE_ARGS (extra -D options).
set -euo pipefail

FATTN_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$FATTN_ROOT/build}
JOBS=${JOBS:-$(nproc)}

log() { printf '\n== %s ==\n' "$*"; }

# Debian packages the build and the test suites need; installed only when missing.
install_deps() {
    local wanted=(cmake ninja-build g++ pkg-config libeigen3-dev doctest-dev clang libclang-rt-dev libomp-dev llvm valgrind)
    local missing=()
    for package in "${wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
    done
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ! python3 -c "import numpy, pytest" 2>/dev/null; then
        log "installing numpy and pytest from PyPI"
        python3 -m pip install -q numpy pytest
    fi
    # The Rust crates need rustc >= 1.77 (rustup's); without cargo their tests are not registered.
    command -v cargo >/dev/null || echo "warning: cargo not found: the Rust binding's tests will not run"
}

configure_and_build() {
    log "configuring $BUILD_DIR"
    cmake -S "$FATTN_ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release ${FATTN_CMAKE_ARGS:-}
    log "building with $JOBS jobs"
    local start=$SECONDS
    cmake --build "$BUILD_DIR" -j "$JOBS"
    echo "build took $((SECONDS - start)) s"
}
