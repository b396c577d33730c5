#!/usr/bin/env bash
# Builds of libfattn to compare on the GPU machine, made here and carried there in one archive.
#
# Device time is short and machines often fail to start, so everything is compiled on this
# machine (nvcc needs no GPU) and a device call only unpacks and times. Two halves:
#
#   bench/variants.sh build ARCHIVE [--tests NAME[,NAME...]] NAME=REV[:CUDA_FLAGS] ...
#       (here) builds the library of each revision into ARCHIVE (a .tar.xz): REV is any git
#       revision, or "worktree" for the working tree as it is (tracked files, edits included);
#       CUDA_FLAGS, if given, are extra nvcc flags (for instance -DSOME_SWITCH=1). --tests NAME also
#       packs that build's test binaries (fattn_tests, hardening_edges) under bin/NAME/.
#   bench/variants.sh run ARCHIVE [ab_cuda.py arguments ...]
#       (device) unpacks ARCHIVE and runs bench/ab_cuda.py with every packed library, in the
#       order given to build (the first is the baseline), beside cuDNN.
#
# Typical use, with the archive under an ignored folder that the device call carries:
#   bench/variants.sh build .devcarry/carry.tar.xz base=HEAD new=worktree
#   run(carry=[".devcarry"]): bench/variants.sh run .devcarry/carry.tar.xz --shape 128,16384 --rounds 9
set -euo pipefail

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${FATTN_VARIANTS_DIR:-/tmp/fattn-variants}

build() {
    local archive=$1; shift
    local tests=""
    if [[ ${1:-} == --tests ]]; then tests=$2; shift 2; fi
    (($# > 0)) || usage
    rm -rf "$work/pack" && mkdir -p "$work/pack/libs"
    local order=()
    for spec in "$@"; do
        local name=${spec%%=*} rest=${spec#*=}
        local rev=${rest%%:*} flags=""
        [[ $rest == *:* ]] && flags=${rest#*:}
        [[ $name =~ ^[A-Za-z0-9_-]+$ && $name != "$spec" ]] || { echo "bad NAME=REV: $spec" >&2; exit 2; }
        local commit
        if [[ $rev == worktree ]]; then
            commit=$(git -C "$repo" stash create)
            [[ -n $commit ]] || commit=$(git -C "$repo" rev-parse HEAD)  # no edits: HEAD is the tree
        else
            commit=$(git -C "$repo" rev-parse --verify "$rev^{commit}")
        fi
        # One source and build folder per NAME, unpacked again only when its tree changed, so that
        # rebuilding an unchanged variant costs nothing and a changed one only what changed.
        local src="$work/src-$name" bld="$work/build-$name" tree
        tree=$(git -C "$repo" rev-parse "$commit^{tree}")
        if [[ $(cat "$src/.tree" 2>/dev/null) != "$tree" ]]; then
            rm -rf "$src" && mkdir -p "$src"
            git -C "$repo" archive "$commit" | tar -x -C "$src"
            echo "$tree" > "$src/.tree"
        fi
        local targets=(fattn) options=(-DFATTN_BUILD_TESTS=OFF)
        if [[ ,$tests, == *,$name,* ]]; then
            targets+=(fattn_tests hardening_edges)
            options=(-DFATTN_BUILD_TESTS=ON)
        fi
        echo "== $name: $(git -C "$repo" log -1 --format='%h %s' "$commit" | cut -c1-70) ${flags:+[$flags]}"
        cmake -S "$src" -B "$bld" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFATTN_CUDA=ON -DFATTN_NATIVE=OFF \
            -DFATTN_BUILD_BENCH=OFF -DFATTN_BUILD_EXAMPLES=OFF "${options[@]}" \
            "-DCMAKE_CUDA_FLAGS=$flags" > "$work/configure-$name.log"
        ninja -C "$bld" "${targets[@]}" > "$work/build-$name.log" || { tail -30 "$work/build-$name.log"; exit 1; }
        cp "$bld/src/libfattn.so.0" "$work/pack/libs/$name.so"
        if [[ ,$tests, == *,$name,* ]]; then
            mkdir -p "$work/pack/bin/$name"
            cp "$bld/tests/fattn_tests" "$bld/tests/hardening/hardening_edges" "$work/pack/bin/$name/"
        fi
        order+=("$name")
    done
    printf '%s\n' "${order[@]}" > "$work/pack/order"
    mkdir -p "$(dirname "$archive")"
    # xz: the libraries' fatbins shrink about 4.5x, which keeps several builds under a call's carry
    # limit; Python's lzma unpacks it where no xz binary is installed.
    tar -cJf "$archive" -C "$work/pack" .
    echo "packed ${order[*]} into $archive ($(du -h "$archive" | cut -f1))"
}

run() {
    local archive=$1; shift
    rm -rf "$work/run" && mkdir -p "$work/run"
    python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$archive" "$work/run"
    local libs=()
    while read -r name; do libs+=(--lib "$name=$work/run/libs/$name.so"); done < "$work/run/order"
    cd "$repo/bench"
    python3 ab_cuda.py "${libs[@]}" "$@"
}

case ${1:-} in
    build) shift; (($# >= 2)) || usage; build "$@" ;;
    run) shift; (($# >= 1)) || usage; run "$@" ;;
    *) usage ;;
esac
