#!/usr/bin/env bash
# The test command (README.md): installs what is missing, builds, and runs
# the whole suite with CTest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
cd build
ctest --output-on-failure -j "${MEMAUDIT_TEST_JOBS:-2}"
