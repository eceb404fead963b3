#!/usr/bin/env bash
# Builds the libFuzzer harnesses (CMake option MEMAUDIT_FUZZ, clang,
# ASan+UBSan) in build-fuzz/ and runs each for a set time, one after the
# other, from its seed corpus in fuzz/corpus/<harness>/. New inputs go to
# build-fuzz/fuzz-runs/<harness>/corpus/ (kept between runs), findings to
# build-fuzz/fuzz-runs/<harness>/crash-* (and leak-*, timeout-*, oom-*).
# Prints executions, coverage and the result per harness; exits 1 on any
# finding. Not part of the test suite.
# Usage: scripts/fuzz.sh [seconds per harness, default 600] [harness...]
# A first build takes about half an hour on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-600}"
shift || true
harnesses=("$@")
if ((${#harnesses[@]} == 0)); then
  harnesses=(fuzz_model_config fuzz_tensor_codec fuzz_plans fuzz_tokenizer)
fi

CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMEMAUDIT_UNITY_BUILD=OFF \
  -DMEMAUDIT_FUZZ=ON >/dev/null
cmake --build build-fuzz -j "${MEMAUDIT_BUILD_JOBS:-2}" --target "${harnesses[@]}"

# As scripts/test_sanitized.sh: LibTorch and OpenBLAS are not instrumented
# (their one-time allocations leak-suppressed, no ODR report).
export ASAN_OPTIONS="detect_leaks=1:detect_odr_violation=0:${ASAN_OPTIONS:-}"
export LSAN_OPTIONS="suppressions=$PWD/scripts/sanitize.supp:print_suppressions=0:${LSAN_OPTIONS:-}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:${UBSAN_OPTIONS:-}"
# One core per fuzzer: no intra-op thread pools.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

failed=0
summary=()
for harness in "${harnesses[@]}"; do
  run="build-fuzz/fuzz-runs/$harness"
  mkdir -p "$run/corpus"
  options=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=4096
           -print_final_stats=1 -artifact_prefix="$run/")
  if [[ -f "fuzz/$harness.dict" ]]; then options+=(-dict="fuzz/$harness.dict"); fi
  echo "fuzz: $harness for ${seconds}s (log: $run/log)"
  status=0
  "build-fuzz/fuzz/$harness" "${options[@]}" "$run/corpus" "fuzz/corpus/$harness" \
    >"$run/log" 2>&1 || status=$?
  executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$run/log" | tail -1)"
  coverage="$(grep -E '^#[0-9]+' "$run/log" | grep -oE 'cov: [0-9]+ ft: [0-9]+' | tail -1)"
  if ((status == 0)); then
    result="no finding"
  else
    failed=1
    artifact="$(grep -oE "Test unit written to [^ ]+" "$run/log" | tail -1 | cut -d' ' -f5)"
    result="FINDING (exit $status${artifact:+, input $artifact}); see $run/log"
    grep -m1 -E "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|FUZZ_CHECK" \
      "$run/log" || true
  fi
  summary+=("$harness: ${executions:-?} executions, ${coverage:-no coverage line}: $result")
done
echo
printf '%s\n' "${summary[@]}"
exit "$failed"
