#!/usr/bin/env bash
# perf/scale.sh - the cost of idle client connections (see perf/scale.py).
#   perf/scale.sh [--bin DIR] [--idle N] [--workers N] [--clients N] [--seconds S]
# Opens N idle connections (default 10000), prints brokerd's RSS and jemalloc
# allocated bytes per idle connection (JSON lines), then runs loadgen over a
# few more connections while the idle ones stay. Needs a descriptor hard
# limit above N (root raises it here).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec python3 "$here/scale.py" "$@"
