#!/usr/bin/env bash
# perf/soak.sh - brokerd under a mixed, hostile workload for a chosen time,
# sampling its memory every second, then a verdict on growth and leaks.
#
# Design note
# - Everything runs at once against one brokerd (2 workers, pool 4, a small
#   cache so it churns past its bounds: cache.max_bytes 1 MiB against 200,000
#   keys, TTL 30 s, serve_stale on) and one mockd on a Unix socket:
#     load     loadgen, open loop (--rate, default 2000/s, so the soak does not
#              take the whole machine), 16 clients x depth 4, Zipf reads over
#              200,000 keys; runs of at most 20 s back to back (so its clients
#              reconnect too), alternately with 5 % writes (each invalidates
#              the cache, which then churns by invalidation) and read-only
#              (the full cache then churns by eviction);
#     churn    short loadgen runs in a loop: connection per request, and
#              clients that connect, send a few requests and leave;
#     faults   one mockd fault command a second through the broker
#              (close, partial, garbage, error, slow, hang past the 1 s
#              request timeout, drip, huge, empty, extra, array, nonascii),
#              declared read_only so that they are retried and do not
#              invalidate the cache (a write would empty it every second and
#              it would never fill to its bound); each with distinct params;
#     restart  mockd killed (SIGKILL) and restarted 2 s later at half time and
#              every 10 minutes: the broker's breaker, health checks and pool
#              reconnects run.
#   Each peer is started and stopped here; a trap stops what is left.
# - Sampling (1 s): brokerctl --json memory, stats, cache, pool on the admin
#   socket, plus /proc/PID (RSS, open fds, threads), into soak.csv.
# - Verdict (perf/benchlib.py soak-report): after the warm-up (minute 5 for
#   runs of 10 minutes or more; the first 20 %, at least 15 s, of shorter
#   runs), a
#   least-squares line through the lowest sample of each of up to 20 windows
#   of jemalloc `allocated` less the cache arena must grow by at most 0.1 %
#   over the rest of the run (the cache's fill level moves by up to its bound
#   as writes invalidate it; that is not growth), and the cache arena must
#   stay within cache.max_bytes (+5 %); `allocated` in all is reported too; the fd count less client and backend connections must
#   be flat (its fitted trend under 1 fd over the run); no request lost or answered twice (loadgen's exactly-once check);
#   with --lsan DIR, brokerd runs from DIR/bin (an ASan build,
#   scripts/sanitize.sh address or -DBROKER_SANITIZE=address) and its exit
#   report must show no leak. PASS/FAIL lines, soak_summary.json and
#   soak_memory.png (memory over time) in the output dir.
# - Exit: 0 PASS, 1 FAIL (a verdict), 2 the soak could not run.
#
# usage: perf/soak.sh [--duration 10m] [--rate 2000] [--bin DIR] [--out DIR]
#        [--lsan ASAN_BUILD_DIR] [--warmup S]
#   duration: N, Ns, Nm or Nh (e.g. 60s, 10m, 24h)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
duration=10m rate=2000 bin="" out="" lsan="" warm=""

usage() { sed -n '/^# usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --duration) duration=$2; shift ;;
    --rate) rate=$2; shift ;;
    --bin) bin=$2; shift ;;
    --out) out=$2; shift ;;
    --lsan) lsan=$2; shift ;;
    --warmup) warm=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "soak.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

to_seconds() {
  case "$1" in
    *h) echo $(( ${1%h} * 3600 )) ;;
    *m) echo $(( ${1%m} * 60 )) ;;
    *s) echo $(( ${1%s} )) ;;
    *) echo $(( $1 )) ;;
  esac
}
secs=$(to_seconds "$duration" 2>/dev/null) || { echo "soak.sh: bad --duration $duration (N, Ns, Nm, Nh)" >&2; exit 2; }
[ "$secs" -ge 10 ] || { echo "soak.sh: --duration must be at least 10s" >&2; exit 2; }
if [ -z "$warm" ]; then
  # minute 5 of long runs; 20 % of short ones, at least 15 s (the huge-read
  # priming and the cache fill take a few seconds)
  if [ "$secs" -ge 600 ]; then warm=300; else warm=$(( secs / 5 )); [ "$warm" -ge 15 ] || warm=$(( secs / 2 < 15 ? secs / 2 : 15 )); fi
fi

if [ -z "$bin" ]; then
  for d in "$root/build/bin" "$root/build-p/bin"; do
    [ -x "$d/brokerd" ] && [ -x "$d/loadgen" ] && [ -x "$d/mockd" ] && [ -x "$d/brokerctl" ] &&
      { bin=$d; break; }
  done
fi
for p in brokerd brokerctl loadgen mockd; do
  [ -x "$bin/$p" ] || { echo "soak.sh: $bin/$p missing: build first (cmake --build build)" >&2; exit 2; }
done
brokerd="$bin/brokerd"
if [ -n "$lsan" ]; then
  brokerd="$lsan/bin/brokerd"
  [ -x "$brokerd" ] || { echo "soak.sh: --lsan: $brokerd missing (an ASan build dir)" >&2; exit 2; }
fi
[ -n "$out" ] || out="$root/perf/out/soak-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
out=$(cd "$out" && pwd)
lib="$here/benchlib.py"
tmp=$(mktemp -d /tmp/soak.XXXXXX)
pids=()

cleanup() {
  local p
  touch "$tmp/stop" 2>/dev/null || true
  [ -f "$tmp/mock.pid" ] && pids+=("$(cat "$tmp/mock.pid")")
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

msock="$tmp/m.sock" bsock="$tmp/b.sock" asock="$tmp/a.sock"
start_mockd() {
  "$bin/mockd" --listen "unix:$msock" --threads 1 --quiet >/dev/null 2>>"$tmp/mockd.err" &
  mock_pid=$!
  disown "$mock_pid" 2>/dev/null || true # killed on purpose: no "Killed" job notice
  echo "$mock_pid" > "$tmp/mock.pid"
  local i
  for i in $(seq 100); do [ -S "$msock" ] && return 0; sleep 0.05; done
  echo "soak.sh: mockd did not start" >&2; cat "$tmp/mockd.err" >&2; exit 2
}
start_mockd

cat > "$tmp/b.json" <<EOF
{"listen": "$bsock", "admin_listen": "$asock", "workers": 2,
 "log": {"level": "error"}, "max_clients": 10000,
 "cache": {"max_bytes": 1048576, "max_entries": 100000, "ttl_ms": 30000, "serve_stale_ms": 2000},
 "rate_limit": {"rate": 10000000, "burst": 100000000},
 "backends": [{"name": "mock", "address": "unix:$msock", "pool_size": 4, "max_queue": 65536,
               "request_timeout_ms": 1000, "idle_timeout_ms": 1000,
               "read_only": ["get_*", "fault_*"],
               "health": {"interval_ms": 1000, "timeout_ms": 1000},
               "breaker": {"failures": 5, "open_ms": 500, "max_open_ms": 2000}}]}
EOF
# LSan: leaks are reported at exit; the report goes to brokerd's stderr.
ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:exitcode=23} \
  "$brokerd" --config "$tmp/b.json" 2>"$out/brokerd.err" >/dev/null &
broker_pid=$!
pids+=("$broker_pid")
for i in $(seq 200); do [ -S "$asock" ] && [ -S "$bsock" ] && break; sleep 0.05; done
[ -S "$bsock" ] || { echo "soak.sh: brokerd did not start:" >&2; cat "$out/brokerd.err" >&2; exit 2; }

start=$EPOCHSECONDS
deadline=$(( start + secs ))
echo "soak.sh: $(uptime)" >&2
echo "soak.sh: ${secs}s (warm-up ${warm}s), rate $rate/s, brokerd $brokerd, out $out" >&2
left() { echo $(( deadline - EPOCHSECONDS )); }

# load: open-loop mixed reads/writes, runs of at most 60 s
(
  n=0
  while [ ! -e "$tmp/stop" ] && [ "$(left)" -ge 2 ]; do
    d=$(left); [ "$d" -gt 20 ] && d=20
    w=0.05; [ $(( n % 2 )) -eq 1 ] && w=0
    "$bin/loadgen" --unix "$bsock" --connections 16 --depth 4 --threads 1 --rate "$rate" \
      --duration "$(( d - 1 ))" --drain 5 --type get_thing --keys 200000 --zipf 0.9 \
      --write-ratio "$w" --write-type set_thing --seed $(( n++ )) >> "$out/load.jsonl" 2>>"$tmp/load.err" || true
  done
) &
pids+=($!)

# churn: connection per request, and short-lived clients
(
  while [ ! -e "$tmp/stop" ] && [ "$(left)" -ge 3 ]; do
    "$bin/loadgen" --unix "$bsock" --connections 2 --conn-per-request --duration 0.3 \
      --threads 1 --type get_scene_info >> "$out/churn.jsonl" 2>>"$tmp/churn.err" || true
    "$bin/loadgen" --unix "$bsock" --connections 8 --depth 2 --rate 200 --duration 0.5 \
      --threads 1 --type get_object_info --params '{"name":"Cube"}' >> "$out/churn.jsonl" 2>>"$tmp/churn.err" || true
    sleep 1
  done
) &
pids+=($!)

# faults: one a second through the broker (answers are errors or successes)
(
  faults=('fault_close {' 'fault_partial {' 'fault_garbage {' 'fault_error {"message":"soak",'
          'fault_slow {"ms":300,' 'fault_hang {' 'fault_drip {"interval_ms":50,'
          'fault_huge {"bytes":2000000,' 'fault_empty {' 'fault_extra {' 'fault_array {'
          'fault_nonascii {')
  # A few huge reads first, in the warm-up: the allocator's size classes
  # for 2 MB answers (and, before SCRATCH_KEEP, each worker's scratch buffer:
  # perf/RESULTS.md, issue 12) reach their high-water mark before the growth
  # fit starts.
  for k in 1 2 3 4; do
    timeout 10 "$bin/brokerctl" --listen "$bsock" --json call fault_huge "{\"bytes\":2000000,\"n\":-$k}" >/dev/null 2>&1 || true
  done
  i=0
  while [ ! -e "$tmp/stop" ] && [ "$(left)" -ge 3 ]; do
    f=${faults[$(( i % ${#faults[@]} ))]}
    frc=0
    # "n" makes every call a distinct cache key: fault_* are reads here
    timeout 10 "$bin/brokerctl" --listen "$bsock" --json call ${f%% *} "${f#* }\"n\":$(( i++ ))}" >/dev/null 2>&1 || frc=$?
    echo "${f%% *} $frc" >> "$tmp/faults.log"
    sleep 1
  done
) &
pids+=($!)

# restart: kill mockd at half time and every 10 minutes after, back 2 s later
(
  next=$(( start + secs / 2 ))
  while [ ! -e "$tmp/stop" ] && [ "$EPOCHSECONDS" -lt $(( deadline - 5 )) ]; do
    if [ "$EPOCHSECONDS" -ge "$next" ]; then
      kill -KILL "$(cat "$tmp/mock.pid")" 2>/dev/null || true
      echo "$(( EPOCHSECONDS - start )) killed" >> "$out/restarts.log"
      sleep 2
      start_mockd
      echo "$(( EPOCHSECONDS - start )) restarted" >> "$out/restarts.log"
      next=$(( EPOCHSECONDS + 600 ))
    fi
    sleep 1
  done
) &
pids+=($!)

# sampler, in this shell: one CSV line a second
csv="$out/soak.csv"
python3 "$lib" soak-header > "$csv"
python3 "$lib" soak-sampler "$bin/brokerctl" "$asock" "$broker_pid" "$(left)" "$csv" ||
  echo "soak.sh: brokerd died" >&2
echo "soak.sh: load done at $(( EPOCHSECONDS - start ))s; $(uptime)" >&2

# wait for the load loops, then stop brokerd and read its exit report
touch "$tmp/stop"
for p in "${pids[@]}"; do [ "$p" = "$broker_pid" ] || wait "$p" 2>/dev/null || true; done
kill -TERM "$broker_pid" 2>/dev/null || true
brc=0
wait "$broker_pid" || brc=$?
kill -TERM "$(cat "$tmp/mock.pid")" 2>/dev/null || true
pids=()
lsan_verdict=""
if [ -n "$lsan" ]; then
  if grep -q "ERROR: LeakSanitizer" "$out/brokerd.err"; then
    lsan_verdict="LEAKS: $(grep -m1 'SUMMARY:' "$out/brokerd.err" || echo 'see brokerd.err')"
  elif grep -q "ERROR: AddressSanitizer" "$out/brokerd.err"; then
    lsan_verdict="ASan error: $(grep -m1 'SUMMARY:' "$out/brokerd.err" || echo 'see brokerd.err')"
  elif [ "$brc" -ne 0 ]; then
    lsan_verdict="brokerd exit $brc (see brokerd.err)"
  else
    lsan_verdict="none (brokerd exit 0, no LeakSanitizer report)"
  fi
fi

# exactly-once over every loadgen run, and what the faults got
python3 - "$out" "$tmp/faults.log" <<'EOF' | tee "$out/load_summary.txt"
import json, os, sys
out, flog = sys.argv[1], sys.argv[2]
tot = {"runs": 0, "requests": 0, "ok": 0, "errors": 0, "lost": 0, "duplicates": 0, "unknown_ids": 0}
codes = {}
for name in ("load.jsonl", "churn.jsonl"):
    p = os.path.join(out, name)
    if not os.path.exists(p):
        continue
    for line in open(p):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        tot["runs"] += 1
        for k in ("requests", "ok", "errors", "lost", "duplicates", "unknown_ids"):
            tot[k] += r.get(k, 0)
        for k, v in r.get("error_codes", {}).items():
            codes[k] = codes.get(k, 0) + v
faults = {}
if os.path.exists(flog):
    for line in open(flog):
        f, rc = line.split()
        faults.setdefault(f, []).append(int(rc))
print(json.dumps({"bench": "soak_load", **tot, "error_codes": codes,
                  "fault_calls": {k: len(v) for k, v in faults.items()},
                  "fault_unanswered": sum(1 for v in faults.values() for rc in v if rc not in (0, 1))}))
EOF
read -r lost dup < <(python3 -c 'import json,sys; r=json.loads(open(sys.argv[1]).readline()); print(r["lost"], r["duplicates"] + r["unknown_ids"])' "$out/load_summary.txt")
[ -f "$out/restarts.log" ] && sed 's/^/soak.sh: mockd /' "$out/restarts.log" >&2
rc=0
python3 "$lib" soak-report "$csv" "$out" "$warm" "$lsan_verdict" "$lost" "$dup" 1048576 > "$out/verdict.txt" || rc=$?
cat "$out/verdict.txt"
echo "soak.sh: files in $out: $(cd "$out" && ls | tr '\n' ' ')" >&2
exit $rc
