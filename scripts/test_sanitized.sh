#!/usr/bin/env bash
# Builds everything with AddressSanitizer and UndefinedBehaviorSanitizer
# (CMake option MEMAUDIT_SANITIZE) in build-sanitize/ and runs the test
# suite there. Any sanitizer report fails the test that triggered it.
# A first build takes about half an hour on 2 cores (ccache helps after).
# Usage: scripts/test_sanitized.sh [ctest arguments, e.g. -E integration_test]
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cmake -S . -B build-sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMEMAUDIT_SANITIZE=ON \
  -DMEMAUDIT_UNITY_BUILD=OFF
cmake --build build-sanitize -j "${MEMAUDIT_BUILD_JOBS:-2}"
# LibTorch and OpenBLAS are not instrumented: no leak checking of their
# one-time allocations (suppressed by library in sanitize.supp), and no ODR
# report for the duplicate protobuf descriptors of two uninstrumented libs.
export ASAN_OPTIONS="detect_leaks=1:detect_odr_violation=0:abort_on_error=1:${ASAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$PWD/scripts/sanitize.supp:print_suppressions=0:${LSAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
cd build-sanitize
ctest --output-on-failure -j "${MEMAUDIT_TEST_JOBS:-2}" "$@"
