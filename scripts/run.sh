#!/usr/bin/env bash
# The README's run command: install dependencies, build, start brokerd with
# the embedded defaults (client socket ./broker.sock, backend "blender" at
# 127.0.0.1:9876). If nothing answers at 127.0.0.1:9876 (no Blender add-on
# running), start the bundled mock backend there first and say so.
# Extra arguments go to brokerd (e.g. --config FILE; then no mock is started).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)" --target brokerd mockd >/dev/null

mock_pid=""
cleanup() { [ -n "$mock_pid" ] && kill "$mock_pid" 2>/dev/null || true; }
trap cleanup EXIT
if [ $# -eq 0 ]; then
  if (exec 3<>/dev/tcp/127.0.0.1/9876) 2>/dev/null; then
    echo "run.sh: a backend answers at 127.0.0.1:9876 (Blender's MCP add-on?): brokerd will use it" >&2
  else
    echo "run.sh: nothing answers at 127.0.0.1:9876, so this starts the bundled MOCK backend" >&2
    echo "        (build/bin/mockd) there. Start Blender's add-on server instead to use Blender." >&2
    build/bin/mockd --listen 127.0.0.1:9876 --quiet &
    mock_pid=$!
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/9876) 2>/dev/null && break; sleep 0.1; done
  fi
fi
sock="$PWD/broker.sock"
echo "run.sh: starting brokerd; in another terminal try:" >&2
echo "  printf '{\"id\":1,\"type\":\"get_scene_info\"}\\n' | socat - UNIX:$sock" >&2
echo "run.sh: Ctrl-C (SIGINT) drains in-flight requests and stops it." >&2
status=0
build/bin/brokerd "$@" || status=$?
exit $status
