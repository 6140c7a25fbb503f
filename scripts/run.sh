#!/usr/bin/env bash
# The README's run command: install dependencies, build (Release), run.
# While brokerd does not exist yet this runs what does: the ring benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh build
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
cmake --build build -j"$(nproc)"
if [ -x build/bin/brokerd ]; then
  exec build/bin/brokerd "$@"
fi
echo "run.sh: brokerd is not built yet; running build/bin/ring_bench instead" >&2
exec build/bin/ring_bench "$@"
