#!/usr/bin/env bash
# Install the Debian packages brokerd needs; idempotent (does nothing, and
# touches no network, when everything is already installed).
# Usage: scripts/deps.sh [build|test|perf]   (test adds what the test suites
# need; perf adds haproxy, the control in perf/broker_vs_direct.py)
set -euo pipefail
want=(build-essential cmake pkg-config liburing-dev libjemalloc-dev libjansson-dev
      libxxhash-dev libck-dev libcriterion-dev python3 socat)
case "${1:-build}" in
  build) ;;
  test) want+=(clang libclang-rt-14-dev llvm valgrind) ;;  # llvm: llvm-symbolizer (fuzz.sh, sanitizers)
  perf) want+=(haproxy) ;;
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
