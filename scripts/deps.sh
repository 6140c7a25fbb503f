#!/usr/bin/env bash
# Install the Debian packages brokerd needs; idempotent (does nothing, and
# touches no network, when everything is already installed).
# Usage: scripts/deps.sh [build|test|perf]   (test adds what the test suites
# need, among them the man page and unit checkers, and the perf set, since CI
# runs the perf smoke stage; perf adds the perf suite's controls and charts)
set -euo pipefail
want=(build-essential cmake pkg-config liburing-dev libjemalloc-dev libjansson-dev
      libxxhash-dev libck-dev libcriterion-dev python3 socat)
# perf/bench.sh's controls (HAProxy in TCP mode; nginx with its stream module)
# and gnuplot for the charts of perf/bench.sh and perf/soak.sh. None is
# started as a service: the scripts run them with generated configs.
perf=(haproxy nginx libnginx-mod-stream gnuplot-nox)
case "${1:-build}" in
  build) ;;
  # llvm: llvm-symbolizer (fuzz.sh, sanitizers); groff-base, man-db: the man pages are checked; systemd: systemd-analyze
  # verify checks the units (nothing is started: it only parses them);
  # nodejs: the Node client's tests (examples/node, Debian 12 ships Node 18);
  # blender xvfb xauth: tests/integration/test_blender.py runs a real Blender
  # 3.4 headless (-b) and with its GUI under xvfb-run (apt-get install with
  # recommends took 195 packages, 787 MB, 62 s here; fewer without them)
  test) want+=(clang libclang-rt-14-dev llvm valgrind groff-base man-db systemd nodejs
               blender xvfb xauth "${perf[@]}") ;;
  perf) want+=("${perf[@]}") ;;
  *) echo "usage: scripts/deps.sh [build|test|perf]" >&2; exit 2 ;;
esac
missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  SUDO=sudo
fi
echo "deps.sh: installing ${missing[*]}" >&2
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
