#!/usr/bin/env bash
# perf/profile.sh - where a relay's CPU goes: perf record (or perf stat) of
# brokerd or HAProxy under loadgen, then every sample put in one category by
# its call chain (perf/profile_cats.py): the socket calls themselves (TCP
# send incl. loopback delivery, Unix send, TCP/Unix recv), accept, close,
# sleep and wake-up, io_uring or epoll machinery, user space.
#
# Design note
# - One relay, one mockd (TCP, 1 thread, --work-us W), one loadgen (1
#   thread), as in perf/bench.sh (same generated configs: brokerd with
#   workers 1, cache off unless --cache; HAProxy nbthread 1, server maxconn =
#   the pool). perf attaches to the relay's pid for --seconds after 1.5 s of
#   load, and /proc/PID/stat gives the relay's CPU over the same window, so
#   categories come out in microseconds per request.
# - Needs perf and perf_event_paranoid <= 2 for a process of your own (root
#   is fine). On a VM without hardware counters perf uses cpu-clock, which
#   is what this wants (it samples kernel and user time alike).
# - Build brokerd with -fno-omit-frame-pointer for call chains through it
#   (cmake -DCMAKE_C_FLAGS=-fno-omit-frame-pointer); the kernel's are there
#   anyway, and the categories depend on kernel frames only.
#
# usage: perf/profile.sh [--relay broker|haproxy] [--clients N] [--pool P]
#        [--seconds S] [--work-us W] [--cache] [--stat] [--bin DIR]
#        [--out FILE.data] [-- LOADGEN_ARGS...]
#   e.g. perf/profile.sh --clients 64 --pool 64
#        perf/profile.sh --relay haproxy --clients 64 --pool 64
#        perf/profile.sh --clients 64 --pool 8 -- --conn-per-request
#        perf/profile.sh --cache --clients 64 --pool 8 -- --type get_thing --keys 1000 --zipf 0.99
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
relay=broker clients=64 pool=64 secs=5 work=0 cache=0 mode=record bin="" out=""
usage() { sed -n '/^# usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --relay) relay=$2; shift ;;
    --clients) clients=$2; shift ;;
    --pool) pool=$2; shift ;;
    --seconds) secs=$2; shift ;;
    --work-us) work=$2; shift ;;
    --cache) cache=1 ;;
    --stat) mode=stat ;;
    --bin) bin=$2; shift ;;
    --out) out=$2; shift ;;
    --) shift; break ;;
    -h|--help) usage; exit 0 ;;
    *) echo "profile.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
case $relay in broker|haproxy) ;; *) echo "profile.sh: --relay broker or haproxy" >&2; exit 2 ;; esac
[ -n "$bin" ] || for d in "$root/build-p/bin" "$root/build/bin"; do
  [ -x "$d/brokerd" ] && [ -x "$d/loadgen" ] && [ -x "$d/mockd" ] && { bin=$d; break; }
done
for p in brokerd loadgen mockd; do
  [ -x "$bin/$p" ] || { echo "profile.sh: $bin/$p missing: build first" >&2; exit 2; }
done
command -v perf >/dev/null || { echo "profile.sh: perf is not installed (Debian: linux-perf)" >&2; exit 2; }
[ "$relay" = broker ] || command -v haproxy >/dev/null ||
  { echo "profile.sh: haproxy is not installed (scripts/deps.sh perf)" >&2; exit 2; }
[ -n "$out" ] || out="$PWD/profile-$relay-c$clients.data"

tmp=$(mktemp -d /tmp/profile.XXXXXX)
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

"$bin/mockd" --listen 127.0.0.1:0 --threads 1 --work-us "$work" --quiet >/dev/null 2>"$tmp/m.err" &
pids+=($!)
for _ in $(seq 100); do grep -q "listening on" "$tmp/m.err" 2>/dev/null && break; sleep 0.05; done
addr=$(grep -o 'listening on [^ ]*' "$tmp/m.err" | cut -d' ' -f3)
[ -n "$addr" ] || { echo "profile.sh: mockd did not start" >&2; cat "$tmp/m.err" >&2; exit 1; }

# shellcheck source=perf/relays.sh
. "$here/relays.sh"
if [ "$relay" = haproxy ]; then
  haproxy_config "$tmp/r.sock" "$addr" "$pool" 1 > "$tmp/h.cfg"
  haproxy -f "$tmp/h.cfg" -db >/dev/null 2>"$tmp/r.err" &
  rpid=$!; lmode=direct
else
  broker_config "$tmp/r.sock" "$tmp/a.sock" "$addr" "$pool" "$cache" 1 > "$tmp/b.json"
  "$bin/brokerd" --config "$tmp/b.json" >/dev/null 2>"$tmp/r.err" &
  rpid=$!; lmode=broker
fi
pids+=("$rpid")
for _ in $(seq 100); do [ -S "$tmp/r.sock" ] && break; sleep 0.05; done
sleep 0.2
[ -S "$tmp/r.sock" ] || { echo "profile.sh: $relay did not start" >&2; cat "$tmp/r.err" >&2; exit 1; }

"$bin/loadgen" --unix "$tmp/r.sock" --mode $lmode --connections "$clients" --warmup 1 \
  --duration "$(python3 -c "print($secs + 2)")" --threads 1 "$@" >"$tmp/lg.out" 2>"$tmp/lg.err" &
lpid=$!
sleep 1.5
ticks() { awk '{print $14 + $15}' "/proc/$rpid/stat"; }
c0=$(ticks); t0=$EPOCHREALTIME
if [ $mode = stat ]; then
  perf stat -e task-clock,context-switches,cpu-migrations,page-faults -p "$rpid" -- sleep "$secs" 2>&1 |
    grep -v '^$' >&2
else
  perf record -F 4999 -g -p "$rpid" -o "$out" -- sleep "$secs" >/dev/null 2>&1
fi
c1=$(ticks); t1=$EPOCHREALTIME
wait "$lpid" || { echo "profile.sh: loadgen failed: $(head -c 300 "$tmp/lg.err")" >&2; exit 1; }
usreq=$(python3 - "$tmp/lg.out" "$c0" "$c1" "$t0" "$t1" "$(getconf CLK_TCK)" <<'P'
import json, sys
r = json.loads(open(sys.argv[1]).read().strip().splitlines()[-1])
cores = (int(sys.argv[3]) - int(sys.argv[2])) / int(sys.argv[6]) / (float(sys.argv[5]) - float(sys.argv[4]))
rps = float(r["rps"])
us = cores / rps * 1e6
print(json.dumps({"bench": "profile", "relay_cores": round(cores, 3), "relay_cpu_us_per_req": round(us, 2),
                  "req_per_s": round(rps), "p50_us": r.get("p50_us"), "p99_us": r.get("p99_us"),
                  "errors": r.get("errors")}), file=sys.stderr)
print(us)
P
)
echo "profile.sh: $relay, $clients clients, pool $pool, args: ${*:-none}" >&2
[ $mode = stat ] || python3 "$here/profile_cats.py" "$out" "$usreq"
