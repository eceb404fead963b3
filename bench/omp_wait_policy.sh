#!/usr/bin/env bash
# How libgomp's wait policy (OMP_WAIT_POLICY) changes a server's audit time
# (docs/GUIDE.md "Build and test times"): one memaudit-server on the
# committed checkpoints, started once with the default policy and once with
# PASSIVE; for each, one audit of mnist39, two audits at once (the default
# --max_concurrent_jobs is 2) and one audit again, each timed by the wall
# clock of the CLI. The tests run with PASSIVE because two test processes
# share the cores; this shows why the server keeps the default.
# A benchmark, not a test: about 1 minute on 2 cores. Needs a built tree.
#
#   bench/omp_wait_policy.sh            # BUILD=build
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/server_bench_lib.sh
audit=(audit --model mnist39 --class 9 --class 3 --samples 2 --seed 9100 --guidance 7.5
       --quiet --fail-on never --json)
seconds_since() { echo "$(date +%s.%N) - $1" | bc | xargs printf '%.1f'; }

for policy in default PASSIVE; do
  setting=(-u OMP_WAIT_POLICY)
  [[ $policy == default ]] || setting=(OMP_WAIT_POLICY="$policy")
  start_server "${setting[@]}"
  start=$(date +%s.%N)
  "${client[@]}" "${audit[@]}" >/dev/null
  one=$(seconds_since "$start")
  start=$(date +%s.%N)
  "${client[@]}" "${audit[@]}" >/dev/null &
  other=$!
  "${client[@]}" "${audit[@]}" >/dev/null
  wait "$other"
  two=$(seconds_since "$start")
  start=$(date +%s.%N)
  "${client[@]}" "${audit[@]}" >/dev/null
  again=$(seconds_since "$start")
  echo "OMP_WAIT_POLICY=$policy: one audit ${one} s, two at once ${two} s, one again ${again} s"
  stop_server
done
