#!/usr/bin/env bash
# Runs every test binary of an existing build three times with
# --gtest_shuffle (a different random order each time), to show that no test
# depends on another's order or leftovers. Usage: scripts/test_shuffled.sh
# [BUILD_DIR] (default build/). Exits non-zero on the first failing run.
set -euo pipefail
cd "$(dirname "$0")/.."
build="${1:-build}"
for round in 1 2 3; do
  for test in "$build"/tests/*_test; do
    [[ -x "$test" ]] || continue
    if ! "$test" --gtest_shuffle --gtest_random_seed=$((round * 7919 % 99991)) \
        > "$build/shuffled-$(basename "$test").log" 2>&1; then
      echo "FAILED: $test (round $round); see $build/shuffled-$(basename "$test").log" >&2
      exit 1
    fi
  done
  echo "round $round: every test binary passed in shuffled order"
done
