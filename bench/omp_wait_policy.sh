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
BUILD=${BUILD:-build}
SERVER=$BUILD/server/memaudit-server CLI=$BUILD/client/memaudit
[[ -x $SERVER && -x $CLI ]] || { echo "$SERVER or $CLI is not built: scripts/build.sh" >&2; exit 1; }
WORK=$(mktemp -d)
server_pid=""
cleanup() {
  [[ -n $server_pid ]] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
audit=(audit --model mnist39 --class 9 --class 3 --samples 2 --seed 9100 --guidance 7.5
       --quiet --fail-on never --json)
seconds_since() { echo "$(date +%s.%N) - $1" | bc | xargs printf '%.1f'; }

for policy in default PASSIVE; do
  rm -f "$WORK/ports"
  setting=(-u OMP_WAIT_POLICY)
  [[ $policy == default ]] || setting=(OMP_WAIT_POLICY="$policy")
  env "${setting[@]}" "$SERVER" --model_repository checkpoints --listen 127.0.0.1:0 \
    --metrics_listen 127.0.0.1:0 --port_file "$WORK/ports" >"$WORK/server.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 600); do [[ -s $WORK/ports ]] && break; sleep 0.1; done
  [[ -s $WORK/ports ]] || { cat "$WORK/server.log" >&2; exit 1; }
  client=("$CLI" --server "127.0.0.1:$(cut -d' ' -f1 "$WORK/ports")")
  "${client[@]}" health --wait 120 >/dev/null
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
  kill "$server_pid"
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
done
