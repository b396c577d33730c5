#!/usr/bin/env bash
# Kernel changes prepared without a GPU, and the one device call that measures them
# (bench/NOTES.md: "Prepared" under the Hopper backward, "Eighteenth session" under the forward).
#   stsm.patch      the Hopper backward stores dS^T by stmatrix.x4
#   stsmu.patch     on top of stsm: the backward's group index warp-uniform at kHeadDim 128 too
#   halfdiag.patch  the Hopper forward's P V over half of a group's last key tile where its rows
#                   see none of the tile's second half
#
# Here (no GPU), from a clean main:
#   bash bench/experiments/measure.sh prepare
# makes branches stsm, stsmu and halfdiag from the patches and builds the archives under .devcarry
# (10-15 minutes on 2 cores). On the device, carrying .devcarry:
#   bash bench/experiments/measure.sh run [ab|tests]
# times the backward of main (base), stsm, stsmu and a control copy of main, and the forward of
# base, halfdiag and the control, interleaved beside cuDNN (bench/ab_cuda.py), prints paired
# medians (paired.py) (part ab), then runs the CUDA tests of stsmu and halfdiag and memcheck over
# the edge suite's CUDA cases of halfdiag (part tests); both parts unless one is named, for calls
# where device time is short. Results and logs go to $OUT.
set -u
repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/bench/experiments
case ${1:-} in
prepare)
    set -e
    cd "$repo"
    git branch -f stsm main && git checkout -q stsm && git am -q "$here/stsm.patch"
    git branch -f stsmu stsm && git checkout -q stsmu && git am -q "$here/stsmu.patch"
    git branch -f halfdiag main && git checkout -q halfdiag && git am -q "$here/halfdiag.patch"
    git checkout -q main
    bench/variants.sh build .devcarry/bwd.tar.xz --tests stsmu base=main stsm=stsm stsmu=stsmu
    bench/variants.sh build .devcarry/fwd.tar.xz --tests half base=main half=halfdiag
    ;;
run)
    cd "$repo"
    W=/tmp/fattn-experiments; rm -rf $W
    for archive in bwd fwd; do
        mkdir -p $W/$archive
        python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" .devcarry/$archive.tar.xz $W/$archive
    done
    cp $W/bwd/libs/base.so $W/bwd/libs/ctrl.so
    part=${2:-all}
    export PYTHONUNBUFFERED=1  # a call cut off by its limit still returns the rows timed so far
    if [[ $part != tests ]]; then
        nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv > $OUT/gpu.txt 2>&1
        cd bench
        L="--lib base=$W/bwd/libs/base.so --lib stsm=$W/bwd/libs/stsm.so --lib stsmu=$W/bwd/libs/stsmu.so --lib ctrl=$W/bwd/libs/ctrl.so"
        timeout 150 python3 ab_cuda.py $L --backward --rounds 7 --shape 128,1024 --shape 128,1024,causal \
            --shape 128,4096,causal --shape 128,16384 --shape 64,1024,causal --shape 64,4096 --shape 64,16384 > $OUT/ab.txt 2>&1
        L="--lib base=$W/bwd/libs/base.so --lib half=$W/fwd/libs/half.so --lib ctrl=$W/bwd/libs/ctrl.so"
        timeout 80 python3 ab_cuda.py $L --rounds 7 --shape 128,1024,causal --shape 64,1024,causal \
            --shape 128,4096,causal --shape 64,4096,causal --shape 128,1024 >> $OUT/ab.txt 2>&1
        for direction in bwd fwd; do python3 "$here/paired.py" $OUT/ab-$direction.json >> $OUT/paired.txt 2>&1; done
        cd ..
        cat $OUT/paired.txt
    fi
    [[ $part == ab ]] && exit 0
    T=$OUT/tests.log; : > $T
    t() {
        local start=$SECONDS; echo "== $*" >> $T
        "$@" > $W/last.log 2>&1; local rc=$?
        grep -E "test cases|Status|ERROR SUMMARY|skipp" $W/last.log | tail -3 >> $T
        echo "rc=$rc $((SECONDS - start))s" >> $T
        [[ $rc == 0 ]] || tail -30 $W/last.log >> $T
    }
    t timeout 60 $W/fwd/bin/half/fattn_tests -tc="cuda:*"
    t timeout 60 $W/bwd/bin/stsmu/fattn_tests -tc="cuda:*"
    t timeout 40 $W/fwd/bin/half/hardening_edges -tc="cuda:*"
    t timeout 40 $W/bwd/bin/stsmu/hardening_edges -tc="cuda:*"
    t timeout 60 compute-sanitizer --tool memcheck --error-exitcode 9 $W/fwd/bin/half/hardening_edges -tc="cuda:*"
    cat $T
    ;;
*) sed -n 2,18p "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
