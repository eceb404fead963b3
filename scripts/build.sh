#!/usr/bin/env bash
# Configures and builds memaudit into ./build (Ninja, RelWithDebInfo).
# Usage: scripts/build.sh [extra cmake args...]
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
# Two parallel jobs: each LibTorch translation unit needs ~1 GiB and 15-20 s.
ninja -C build -j "${MEMAUDIT_BUILD_JOBS:-2}"
