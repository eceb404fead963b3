#!/usr/bin/env bash
# Fan-out speed-up: the same audit (mnist39, 6 classes x 4 samples, dense
# d = 784) through 1, 2 and 3 local replicas of memaudit-server, each with
# --threads 1, and through one server with --threads 2; prints the wall time
# of each and whether the reports equal the one-replica report (timing, job
# ids and device left out). Needs a build (scripts/build.sh). A benchmark,
# not a test: run it on an idle machine.
#
#   bash bench/fanout_speedup.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-$(mktemp -d)}
mkdir -p "$out"

run() {  # run REPLICAS THREADS
  local replicas=$1 threads=$2 pids=() addresses=() port
  for r in $(seq 1 "$replicas"); do
    rm -f "$out/ports$r"
    build/server/memaudit-server --model_repository checkpoints --listen 127.0.0.1:0 \
      --metrics_listen 127.0.0.1:0 --port_file "$out/ports$r" --threads "$threads" \
      2>"$out/server$r.log" &
    pids+=($!)
  done
  for r in $(seq 1 "$replicas"); do
    for _ in $(seq 1 300); do [[ -s "$out/ports$r" ]] && break; sleep 0.1; done
    read -r port _ < "$out/ports$r"
    addresses+=("127.0.0.1:$port")
    for _ in $(seq 1 300); do
      build/client/memaudit --server "127.0.0.1:$port" health >/dev/null 2>&1 && break
      sleep 0.2
    done
  done
  local list start end
  list=$(IFS=,; echo "${addresses[*]}")
  start=$(date +%s.%N)
  build/client/memaudit --server "$list" audit --model mnist39 --class 0 --class 1 --class 2 \
    --class 3 --class 4 --class 5 --samples 4 --seed 0 --quiet --fail-on never --json \
    > "$out/report_${replicas}_${threads}.json"
  end=$(date +%s.%N)
  kill "${pids[@]}"
  wait "${pids[@]}" 2>/dev/null || true
  printf 'replicas %d, --threads %d each: %.1f s\n' "$replicas" "$threads" \
    "$(echo "$end - $start" | bc)"
}

run 1 1
run 2 1
run 3 1
run 1 2
/usr/bin/python3 - "$out" <<'PY'
import json, sys
def load(name):
    report = json.load(open(f"{sys.argv[1]}/{name}"))
    for key in ("timing", "job_id", "device"):
        report.pop(key, None)
    return report
one = load("report_1_1.json")
for name in ("report_2_1.json", "report_3_1.json", "report_1_2.json"):
    print(f"{name}: {'equal to' if load(name) == one else 'differs from'} the one-replica report")
PY
