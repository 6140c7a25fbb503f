#!/usr/bin/env bash
# Sanitizer builds for CI.
#   scripts/sanitize.sh address   ASan+UBSan (+LSan), every unit and integration test
#   scripts/sanitize.sh thread    TSan: the concurrency tests (stress_all) and every
#                                 integration test against a TSan brokerd
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh test
kind=${1:?usage: sanitize.sh address|thread}
dir=build-$kind
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_C_COMPILER=clang -DBROKER_SANITIZE="$kind" >/dev/null
if [ "$kind" = thread ]; then
  # Criterion cannot start under TSan (tests/CMakeLists.txt): no unit binaries.
  cmake --build "$dir" -j"$(nproc)" --target stress_all brokerd brokerctl mockd loadgen
else
  cmake --build "$dir" -j"$(nproc)"
fi
cd "$dir"
case $kind in
  address)
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    ctest --output-on-failure -L 'unit|integration' ;;
  thread)
    # One suppression, for jemalloc's uninstrumented internals (see the file).
    export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$PWD/../tests/tsan.supp"
    ctest --output-on-failure -L 'concurrency|integration' ;;
  *) echo "sanitize.sh: unknown kind '$kind' (address|thread)" >&2; exit 2 ;;
esac
