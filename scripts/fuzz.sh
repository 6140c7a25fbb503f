#!/usr/bin/env bash
# Fuzz campaigns: build the libFuzzer targets (clang, -DBROKER_FUZZ=ON, in
# build-fuzz/) and run each for a bounded time over a copy of its seed
# corpus, so generated inputs never land in the source tree. Fails (exit 1)
# if any target crashes, leaks, times out or breaks an invariant; the input
# that did it is kept in build-fuzz/fuzz-artifacts/ (add it to
# tests/fuzz/<target>/ as regress-* once fixed).
# Usage: scripts/fuzz.sh [--time SECONDS] [--runs N] [TARGET...]
#   TARGET: request, frame, config (default: all three); SECONDS default 60
#   (CI uses 30); --runs N stops a target after N executions instead.
set -euo pipefail
cd "$(dirname "$0")/.."
time_s=60
runs=""
targets=()
while [ $# -gt 0 ]; do
  case $1 in
    --time) time_s=${2:?--time needs SECONDS}; shift 2 ;;
    --runs) runs=${2:?--runs needs N}; shift 2 ;;
    -h|--help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
    request|frame|config) targets+=("$1"); shift ;;
    *) echo "fuzz.sh: unknown argument '$1' (targets: request frame config)" >&2; exit 2 ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(request frame config)

scripts/deps.sh test
dir=build-fuzz
cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_C_COMPILER=clang \
      -DBROKER_FUZZ=ON >/dev/null
cmake --build "$dir" -j"$(nproc)" --target "${targets[@]/#/fuzz_}" >/dev/null

logs=$dir/fuzz-logs
artifacts=$dir/fuzz-artifacts
mkdir -p "$logs" "$artifacts"
work=$(mktemp -d /tmp/brokerd-fuzz.XXXXXX)
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

limit=(-max_total_time="$time_s")
[ -n "$runs" ] && limit=(-runs="$runs")
failed=()
for t in "${targets[@]}"; do
  corpus=$work/$t
  mkdir -p "$corpus"
  cp tests/fuzz/"$t"/* "$corpus"/
  log=$logs/$t.log
  rc=0
  # -timeout: one input taking 10 s is a hang; -max_len: 4 KiB like the
  # default but fixed, so a large seed does not change the campaign.
  "$dir"/bin/fuzz_"$t" "${limit[@]}" -timeout=10 -max_len=4096 -print_final_stats=1 \
      -dict=tests/fuzz/"$t".dict -artifact_prefix="$artifacts/$t-" "$corpus" >"$log" 2>&1 || rc=$?
  final=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
  execs=$(sed -n 's/^stat::number_of_executed_units: //p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: //p' "$log")
  echo "fuzz_$t: rc=$rc executions=${execs:-?} exec/s=${rate// /} corpus=$(ls "$corpus" | wc -l) files; ${final:-no final stats line}"
  if [ "$rc" -ne 0 ]; then
    failed+=("$t")
    grep -E 'invariant failed|ERROR: |SUMMARY: |Test unit written' "$log" >&2 || tail -n 30 "$log" >&2
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]} (logs in $logs, inputs in $artifacts)" >&2
  exit 1
fi
