#!/usr/bin/env bash
# Configures and builds memaudit into ./build (Ninja; Release at -O2 in
# batches unless the tree was configured otherwise: CMakeLists.txt).
# Usage: scripts/build.sh [--bench] [--tools] [--target T]... [extra cmake args...]
#   --bench      also the benchmarks (bench/); kept on in ./build once asked
#   --tools      also the research tools' commands (memaudit-mnist)
#   --target T   build only T (and what it needs); repeatable
# MEMAUDIT_WERROR=ON (CI) turns warnings into errors.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake_args=() targets=()
while (($#)); do
  case $1 in
    --bench) cmake_args+=(-DMEMAUDIT_BUILD_BENCH=ON) ;;
    --tools) cmake_args+=(-DMEMAUDIT_BUILD_TOOLS=ON) ;;
    --target) targets+=("$2"); shift ;;
    *) cmake_args+=("$1") ;;
  esac
  shift
done
if [[ -n ${MEMAUDIT_WERROR:-} ]]; then
  cmake_args+=(-DMEMAUDIT_WERROR="$MEMAUDIT_WERROR")
fi
cmake -S . -B build -G Ninja "${cmake_args[@]}" >/dev/null
# Two parallel jobs: each LibTorch translation unit needs ~1 GiB and 15-20 s.
ninja -C build -j "${MEMAUDIT_BUILD_JOBS:-2}" "${targets[@]}"
