#!/usr/bin/env bash
# Runs a program built in the ThreadSanitizer tree with LLVM's OpenMP TSan tool (Archer) loaded,
# so TSan sees the OpenMP fork/join and barrier synchronization instead of reporting false races.
# Fails unless Archer announced itself and TSan stayed silent. Usage: tsan_run.sh PROGRAM [ARGS...]
set -uo pipefail
archer=$(dirname "$(clang++ -print-resource-dir)")/../libarcher.so
log=$(mktemp)
trap 'rm -f "$log"' EXIT
OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OMP_TOOL_LIBRARIES=$archer ARCHER_OPTIONS=verbose=1 \
    TSAN_OPTIONS="ignore_noninstrumented_modules=1 halt_on_error=1 exitcode=66 ${TSAN_OPTIONS:-}" \
    "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
grep -q "Archer detected OpenMP application with TSan" "$log" ||
    { echo "tsan_run.sh: Archer did not load ($archer); OpenMP regions would be unchecked" >&2; exit 1; }
exit "$status"
