#!/usr/bin/env bash
# Runs the ABI fuzzer for a bounded time: fuzz.sh FUZZER SEED_CORPUS WORK_DIR SECONDS
# The committed seeds are replayed first (a regression check), then libFuzzer mutates for SECONDS
# into WORK_DIR/corpus. A crash, leak, sanitizer report or oracle failure leaves its reproducer in
# WORK_DIR/artifacts/ (replay: FUZZER WORK_DIR/artifacts/<file>) and fails the test.
set -euo pipefail
fuzzer=$1 seeds=$2 work=$3 seconds=$4
mkdir -p "$work/corpus" "$work/artifacts"
[[ -x $fuzzer ]] || { echo "fuzz.sh: $fuzzer was not built (see hardening.fuzz.build)" >&2; exit 1; }
"$fuzzer" -max_total_time="$seconds" -timeout=30 -rss_limit_mb=4096 -max_len=512 -len_control=0 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/" "$work/corpus" "$seeds"
