#!/usr/bin/env bash
# perf/bench.sh - the end-to-end perf suite (issue 12): loadgen against mockd
# directly, through brokerd, through HAProxy and through nginx, side by side
# in one run, with every relay's CPU per request against the kernel floor.
#
# Design note
# - One command. Configs are generated in a temp dir; every peer (mockd,
#   brokerd, haproxy, nginx) is started and stopped here, and a trap stops
#   what is left on any exit. Relays are started fresh for each row, so one
#   row's CPU figure contains nothing of another's; mockd lives for the run.
# - Each row: loadgen (1 thread) runs warm-up + measured seconds; this script
#   reads utime+stime of the relay (/proc/PID/stat covers all its threads;
#   nginx: master + workers) and of mockd at the start and end of the
#   measured window, and perf/benchlib.py turns that into CPU per request.
# - Fair comparison. HAProxy and nginx relay bytes: they do not know NDJSON
#   ids or the add-on's one-request-at-a-time rule, so a client connection is
#   pinned to one backend connection for its life and can have one request
#   in flight (the add-on would fail on a second). Rows compare them only
#   where that holds for every path:
#     eq-d1     N persistent clients, depth 1, N backend connections everywhere
#               (brokerd pool_size N, HAProxy server maxconn N): the relays'
#               own cost at equal connection counts;
#     cpr       connection per request (connect, ask, close): brokerd keeps
#               pool_size P persistent backend connections; HAProxy queues
#               the clients on server maxconn P, so it too has at most P
#               backend connections, but opens one per request; nginx stream
#               has no queueing per-server limit (its max_conns refuses instead
#               of queueing; the queue is NGINX Plus only), so it runs
#               unlimited: up to N backend connections, one per request;
#     blender   a backend like Blender (mockd --work-us 85 --threads 1): direct
#               and the byte relays with one backend connection per client,
#               brokerd with its small pool (4); blender-cache: the same
#               with cacheable reads only (Zipf 0.99 over 1,000 keys, cache
#               on); blender-open50: open loop at 50 % of direct's maximum
#               against this backend (the backend sets the maximum here, so
#               the rows show the latency a relay adds, not queueing);
#     open50    open loop (loadgen --rate) at 50 % of direct's eq-d1 maximum
#               at 64 clients: the latency each relay adds at a fixed load
#               (full runs add open25: on 2 vCPUs 50 % of direct can exceed
#               what a relay sustains, and then the figure is queueing);
#               open50-pool: brokerd with its pool of P instead.
#   Only brokerd can carry pipelined clients over a small pool (pool-d1,
#   pool-d16: N clients over pool_size P; the direct reference is P
#   connections, all the backend can take at once) and cache reads (cache:
#   Zipf 0.99 over 1,000 keys, cache on, against direct).
# - Output (OUTDIR, default perf/out/bench-DATE): results.jsonl (one JSON line
#   per measurement: {"bench":"e2e",...}, {"bench":"floor",...}, plus an env
#   line with machine and load), table.txt (the readable table with ratios
#   and the issue's targets, also printed), PNG charts per scenario.
# - --quick (CI smoke, < 60 s): the floor, eq-d1 at 64 clients for every
#   path, cpr at 64 for brokerd and HAProxy, open50 for direct, brokerd and
#   HAProxy; 2 s per row. No thresholds: figures on a shared 2-vCPU host are
#   only good for ratios within one run.
#
# usage: perf/bench.sh [--quick] [--bin DIR] [--out DIR] [--seconds S]
#        [--warmup S] [--rounds R] [--threads T] [--pool P]
#        [--no-haproxy] [--no-nginx] [--scenarios a,b,...]
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
quick=0 bin="" out="" seconds=3 warmup=1 rounds=1 threads=1 pool=8
use_haproxy=1 use_nginx=1 scenarios="eq-d1,pool-d1,pool-d16,cpr,cache,blender,open50"

usage() { sed -n '/^# usage:/,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1; seconds=2; warmup=0.5 ;;
    --bin) bin=$2; shift ;;
    --out) out=$2; shift ;;
    --seconds) seconds=$2; shift ;;
    --warmup) warmup=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --threads) threads=$2; shift ;;
    --pool) pool=$2; shift ;;
    --no-haproxy) use_haproxy=0 ;;
    --no-nginx) use_nginx=0 ;;
    --scenarios) scenarios=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

if [ -z "$bin" ]; then
  for d in "$root/build/bin" "$root/build-p/bin"; do
    [ -x "$d/brokerd" ] && [ -x "$d/loadgen" ] && [ -x "$d/mockd" ] && [ -x "$d/floor" ] &&
      { bin=$d; break; }
  done
fi
for p in brokerd loadgen mockd floor; do
  [ -x "$bin/$p" ] || { echo "bench.sh: $bin/$p missing: build first (cmake --build build)" >&2; exit 2; }
done
haproxy_exe=$(command -v haproxy || true)
nginx_exe=$(command -v nginx || true)
[ $use_haproxy -eq 1 ] && [ -n "$haproxy_exe" ] || { use_haproxy=0; echo "bench.sh: no haproxy: its rows are skipped (scripts/deps.sh perf installs it)" >&2; }
nginx_mod=""
if [ $use_nginx -eq 1 ] && [ -n "$nginx_exe" ]; then
  if [ -f /usr/lib/nginx/modules/ngx_stream_module.so ]; then
    nginx_mod="load_module /usr/lib/nginx/modules/ngx_stream_module.so;"
  elif ! "$nginx_exe" -V 2>&1 | grep -q -- '--with-stream\b'; then
    use_nginx=0; echo "bench.sh: nginx has no stream module (libnginx-mod-stream): its rows are skipped" >&2
  fi
else
  use_nginx=0; echo "bench.sh: no nginx: its rows are skipped" >&2
fi
[ -n "$out" ] || out="$root/perf/out/bench-$(date +%Y%m%d-%H%M%S)"
mkdir -p "$out"
out=$(cd "$out" && pwd)
results="$out/results.jsonl"
: > "$results"
lib="$here/benchlib.py"
# shellcheck source=perf/relays.sh
. "$here/relays.sh"
tck=$(getconf CLK_TCK)
tmp=$(mktemp -d /tmp/bench.XXXXXX)
pids=()

cleanup() {
  local p
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

# Stop one peer started by start_* (TERM, then KILL after 5 s).
stop_pid() {
  local p=$1 i
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
  local keep=()
  for i in "${pids[@]}"; do [ "$i" = "$p" ] || keep+=("$i"); done
  pids=("${keep[@]+"${keep[@]}"}")
}

# Ready = a connection to the socket succeeds (the file appears at bind,
# before listen: a client that connects in between is refused).
wait_file() { # path seconds what errfile
  local i
  for i in $(seq $(( $2 * 20 ))); do
    [ -S "$1" ] && socat -u OPEN:/dev/null "UNIX-CONNECT:$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench.sh: $3 did not start:" >&2; cat "$4" >&2 2>/dev/null || true; exit 1
}

# utime+stime ticks of a process and its direct children (nginx workers).
cpu_ticks() {
  local total=0 p line rest
  for p in "$1" $(pgrep -P "$1" 2>/dev/null || true); do
    line=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    rest=${line##*) }
    # shellcheck disable=SC2086
    set -- $rest
    total=$(( total + ${12} + ${13} ))
  done
  echo "$total"
}

start_mockd() { # name work_us -> sets mock_addr, mock_pid
  local name=$1 err="$tmp/$1.err"
  "$bin/mockd" --listen 127.0.0.1:0 --threads 1 --work-us "$2" --quiet >/dev/null 2>"$err" &
  mock_pid=$!; pids+=("$mock_pid")
  local i
  for i in $(seq 100); do grep -q "listening on" "$err" 2>/dev/null && break; sleep 0.05; done
  mock_addr=$(grep -o 'listening on [^ ]*' "$err" | cut -d' ' -f3)
  [ -n "$mock_addr" ] || { echo "bench.sh: mockd did not start" >&2; cat "$err" >&2; exit 1; }
}

start_broker() { # backend pool cache(0|1) -> relay_pid relay_sock
  local sock="$tmp/b.sock" cfg="$tmp/b.json"
  rm -f "$sock"
  broker_config "$sock" "$tmp/b.admin.sock" "$1" "$2" "$3" "$threads" > "$cfg"
  "$bin/brokerd" --config "$cfg" 2>>"$tmp/brokerd.err" >/dev/null &
  relay_pid=$!; pids+=("$relay_pid"); relay_sock=$sock
  wait_file "$sock" 5 brokerd "$tmp/brokerd.err"
}

start_haproxy() { # backend maxconn -> relay_pid relay_sock
  local sock="$tmp/h.sock" cfg="$tmp/haproxy.cfg"
  rm -f "$sock"
  haproxy_config "$sock" "$1" "$2" "$threads" > "$cfg"
  "$haproxy_exe" -f "$cfg" -db >/dev/null 2>>"$tmp/haproxy.err" &
  relay_pid=$!; pids+=("$relay_pid"); relay_sock=$sock
  wait_file "$sock" 5 haproxy "$tmp/haproxy.err"
}

start_nginx() { # backend -> relay_pid relay_sock
  local sock="$tmp/n.sock" cfg="$tmp/nginx.conf"
  rm -f "$sock"
  cat > "$cfg" <<EOF
$nginx_mod
daemon off;
worker_processes $threads;
pid $tmp/nginx.pid;
error_log $tmp/nginx.err warn;
events { worker_connections 4096; }
stream {
    upstream m { server $1; }
    server { listen unix:$sock; proxy_pass m; }
}
EOF
  "$nginx_exe" -p "$tmp" -e "$tmp/nginx.err" -c "$cfg" >/dev/null 2>>"$tmp/nginx.err" &
  relay_pid=$!; pids+=("$relay_pid"); relay_sock=$sock
  wait_file "$sock" 5 nginx "$tmp/nginx.err"
}

# One measurement. run_row PATH SCENARIO GROUP CLIENTS DEPTH BCONNS ROUND -- LOADGEN_ARGS
# Uses relay_pid ("" for direct) and mock_pid/mock_addr.
run_row() {
  local path=$1 scen=$2 group=$3 clients=$4 depth=$5 bconns=$6 round=$7
  shift 8
  local lg="$tmp/lg.out" rc=0 r0="" r1="" m0 m1 t0 t1 live=""
  "$bin/loadgen" "$@" --connections "$clients" --warmup "$warmup" --duration "$seconds" \
    --threads 1 > "$lg" 2>"$tmp/lg.err" &
  local lpid=$!
  sleep "$warmup"
  t0=$EPOCHREALTIME; m0=$(cpu_ticks "$mock_pid"); [ -n "$relay_pid" ] && r0=$(cpu_ticks "$relay_pid")
  # backend connections actually open (minus the stats connection itself)
  live=$(python3 "$lib" mockstats "$mock_addr" 2>/dev/null |
         python3 -c 'import json,sys; print(json.load(sys.stdin)["connections_open"]-1)' 2>/dev/null || echo "")
  sleep "$(python3 -c "print(max(0.0, $seconds - ($EPOCHREALTIME - $t0)))")"
  t1=$EPOCHREALTIME; m1=$(cpu_ticks "$mock_pid"); [ -n "$relay_pid" ] && r1=$(cpu_ticks "$relay_pid")
  wait "$lpid" || rc=$?
  python3 "$lib" row "$lg" path="$path" scenario="$scen" group="$group" clients="$clients" \
    depth="$depth" backend_conns="$bconns" round="$round" clk_tck="$tck" \
    wall_s="$(python3 -c "print($t1 - $t0)")" mockd_ticks=$(( m1 - m0 )) \
    ${relay_pid:+relay_ticks=$(( r1 - r0 ))} loadgen_rc=$rc \
    ${live:+backend_conns_seen=$live} threads="$threads" \
    >> "$results"
  tail -n 1 "$results" | python3 -c '
import json,sys; r=json.load(sys.stdin)
print("  %-8s %-9s %-12s c=%-4d d=%-3d bconn=%-4s %8s req/s  p50 %8s us  p99 %8s us  relay CPU %s us/req%s" % (
  r["path"], r["scenario"], r["group"], r["clients"], r["depth"], r.get("backend_conns_seen", "?"),
  r.get("req_per_s"), r.get("p50_us"), r.get("p99_us"), r.get("relay_cpu_us_per_req"),
  "  ERR " + json.dumps(r.get("error_codes")) + " lost %s" % r.get("lost") if r.get("errors") or r.get("lost") else ""))' >&2
  [ $rc -eq 0 ] || echo "    (loadgen exit $rc: $(head -c 300 "$tmp/lg.err"))" >&2
}

want() { case ",$scenarios," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
direct_args() { echo --tcp "$mock_addr" --mode direct; }

# A relay row: start the relay, measure, stop it.
relay_row() { # path scen group clients depth bconns round backend maxconn cache -- args
  local path=$1 scen=$2 group=$3 clients=$4 depth=$5 bconns=$6 round=$7 backend=$8 maxc=$9 cache=${10}
  shift 11
  case $path in
    broker) start_broker "$backend" "$maxc" "$cache"
            run_row broker "$scen" "$group" "$clients" "$depth" "$bconns" "$round" -- \
              --unix "$relay_sock" --mode broker "$@" ;;
    haproxy) [ $use_haproxy -eq 1 ] || return 0
             start_haproxy "$backend" "$maxc"
             run_row haproxy "$scen" "$group" "$clients" "$depth" "$bconns" "$round" -- \
               --unix "$relay_sock" --mode direct "$@" ;;
    nginx) [ $use_nginx -eq 1 ] || return 0
           start_nginx "$backend"
           run_row nginx "$scen" "$group" "$clients" "$depth" "$bconns" "$round" -- \
             --unix "$relay_sock" --mode direct "$@" ;;
  esac
  stop_pid "$relay_pid"; relay_pid=""
}

env_line() {
  python3 - "$@" <<'EOF'
import json, os, platform, sys
kv = dict(a.split("=", 1) for a in sys.argv[1:])
kv.update(bench="env", cpus=os.cpu_count(), kernel=platform.release(),
          machine="%s, %d vCPUs, Linux %s" % (platform.machine(), os.cpu_count(), platform.release()))
print(json.dumps(kv))
EOF
}

load_now() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(load_now)
echo "bench.sh: $(uptime)" >&2
echo "bench.sh: bin=$bin out=$out seconds=$seconds warmup=$warmup rounds=$rounds threads=$threads pool=$pool quick=$quick" >&2

# ---- the kernel floor
if [ $quick -eq 1 ]; then "$bin/floor" --iterations 20000 --rounds 3 >> "$results"
else "$bin/floor" --iterations 100000 --rounds 5 >> "$results"; fi
echo "  floor: $(tail -n 1 "$results")" >&2

relay_pid=""
start_mockd mock 0
mock0_addr=$mock_addr mock0_pid=$mock_pid
if [ $quick -eq 1 ]; then
  eq_clients="64" cpr_clients="64" pool_clients="" d16_clients=""
else
  eq_clients="1 8 64 256" cpr_clients="8 64 256" pool_clients="8 64 256" d16_clients="1 8 64 256"
fi

for round in $(seq "$rounds"); do
  mock_addr=$mock0_addr mock_pid=$mock0_pid
  direct64=""
  if want eq-d1; then
    for n in $eq_clients; do
      g="eq-d1/$n"
      run_row direct eq-d1 "$g" "$n" 1 "$n" "$round" -- $(direct_args)
      [ "$n" = 64 ] && direct64=$(tail -n 1 "$results" | python3 -c 'import json,sys; print(json.load(sys.stdin)["req_per_s"])')
      relay_row broker eq-d1 "$g" "$n" 1 "$n" "$round" "$mock_addr" "$n" 0 --
      relay_row haproxy eq-d1 "$g" "$n" 1 "$n" "$round" "$mock_addr" "$n" 0 --
      relay_row nginx eq-d1 "$g" "$n" 1 "$n" "$round" "$mock_addr" "$n" 0 --
    done
  fi
  if [ $quick -eq 0 ] && { want pool-d1 || want pool-d16; }; then
    g="pool"
    run_row direct pool "$g" "$pool" 1 "$pool" "$round" -- $(direct_args)
    if want pool-d1; then
      for n in $pool_clients; do
        relay_row broker pool-d1 "$g" "$n" 1 "$pool" "$round" "$mock_addr" "$pool" 0 --
      done
    fi
    if want pool-d16; then
      for n in $d16_clients; do
        relay_row broker pool-d16 "$g" "$n" 16 "$pool" "$round" "$mock_addr" "$pool" 0 -- --depth 16
      done
    fi
  fi
  if want cpr; then
    for n in $cpr_clients; do
      g="cpr/$n"
      [ $quick -eq 1 ] || run_row direct cpr "$g" "$n" 1 "$n" "$round" -- $(direct_args) --conn-per-request
      relay_row broker cpr "$g" "$n" 1 "$pool" "$round" "$mock_addr" "$pool" 0 -- --conn-per-request
      relay_row haproxy cpr "$g" "$n" 1 "$pool" "$round" "$mock_addr" "$pool" 0 -- --conn-per-request
      [ $quick -eq 1 ] || relay_row nginx cpr "$g" "$n" 1 "$n" "$round" "$mock_addr" 0 0 -- --conn-per-request
    done
  fi
  if [ $quick -eq 0 ] && want cache; then
    mix=(--type get_thing --keys 1000 --zipf 0.99)
    run_row direct cache cache 64 1 64 "$round" -- $(direct_args) "${mix[@]}"
    relay_row broker cache cache 64 1 "$pool" "$round" "$mock_addr" "$pool" 1 -- "${mix[@]}"
  fi
  if [ $quick -eq 0 ] && want blender; then
    start_mockd blender 85
    run_row direct blender blender 64 1 64 "$round" -- $(direct_args)
    relay_row broker blender blender 64 1 4 "$round" "$mock_addr" 4 0 --
    relay_row haproxy blender blender 64 1 64 "$round" "$mock_addr" 64 0 --
    relay_row nginx blender blender 64 1 64 "$round" "$mock_addr" 0 0 --
    dblender=$(grep '"path": *"direct"' "$results" | grep '"group": *"blender"' | tail -n 1 |
               python3 -c 'import json,sys; print(int(json.load(sys.stdin)["req_per_s"]))')
    # Cacheable reads only (a get_* command over Zipf keys): what the cache
    # buys in front of one serial backend. brokerd pool 4 with its cache,
    # direct over 64 connections as above.
    mix=(--type get_thing --keys 1000 --zipf 0.99)
    run_row direct blender-cache blender-cache 64 1 64 "$round" -- $(direct_args) "${mix[@]}"
    relay_row broker blender-cache blender-cache 64 1 4 "$round" "$mock_addr" 4 1 -- "${mix[@]}"
    # Latency added at 50 % of direct's maximum against this backend: here
    # the backend, not the host's CPUs, sets the maximum, so 50 % leaves
    # every relay far from its own limit and the figure is its added latency.
    if [ "${dblender:-0}" -ge 2 ]; then
      rate=$(( dblender / 2 ))
      g="blender-open50"
      run_row direct "$g" "$g" 64 1 64 "$round" -- $(direct_args) --rate "$rate"
      relay_row broker "$g" "$g" 64 1 4 "$round" "$mock_addr" 4 0 -- --rate "$rate"
      relay_row haproxy "$g" "$g" 64 1 64 "$round" "$mock_addr" 64 0 -- --rate "$rate"
      relay_row nginx "$g" "$g" 64 1 64 "$round" "$mock_addr" 0 0 -- --rate "$rate"
    fi
    stop_pid "$mock_pid"
    mock_addr=$mock0_addr mock_pid=$mock0_pid
  fi
  if want open50; then
    if [ -z "$direct64" ]; then
      run_row direct eq-d1 eq-d1/64 64 1 64 "$round" -- $(direct_args)
      direct64=$(tail -n 1 "$results" | python3 -c 'import json,sys; print(json.load(sys.stdin)["req_per_s"])')
    fi
    # 50 % of direct's maximum (the SPEC's point); in a full run also 25 %,
    # since on 2 vCPUs 50 % of direct can be past what any relay sustains.
    pcts="50"; [ $quick -eq 1 ] || pcts="50 25"
    for pct in $pcts; do
      rate=$(( direct64 * pct / 100 ))
      [ "$rate" -ge 1 ] || continue
      g="open$pct"
      run_row direct "$g" "$g" 64 1 64 "$round" -- $(direct_args) --rate "$rate"
      relay_row broker "$g" "$g" 64 1 64 "$round" "$mock_addr" 64 0 -- --rate "$rate"
      relay_row haproxy "$g" "$g" 64 1 64 "$round" "$mock_addr" 64 0 -- --rate "$rate"
      if [ $quick -eq 0 ]; then
        relay_row nginx "$g" "$g" 64 1 64 "$round" "$mock_addr" 0 0 -- --rate "$rate"
        relay_row broker "$g-pool" "$g-pool" 64 1 "$pool" "$round" "$mock_addr" "$pool" 0 -- --rate "$rate"
        run_row direct "$g-pool" "$g-pool" 64 1 64 "$round" -- $(direct_args) --rate "$rate"
      fi
    done
  fi
done

env_line date="$(date -u +%Y-%m-%dT%H:%M:%SZ)" load_before="$load_before" \
  load_after="$(load_now)" quick=$quick seconds="$seconds" warmup="$warmup" rounds="$rounds" \
  threads="$threads" pool="$pool" haproxy="$([ $use_haproxy -eq 1 ] && "$haproxy_exe" -v | head -n1 | cut -d' ' -f3 || echo none)" \
  nginx="$([ $use_nginx -eq 1 ] && "$nginx_exe" -v 2>&1 | cut -d/ -f2 || echo none)" >> "$results"
echo >&2
python3 "$lib" table "$results" "$out"
echo "Results: $results"
