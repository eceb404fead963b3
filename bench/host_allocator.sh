#!/usr/bin/env bash
# What the host allocator settings (core/runtime/host_allocator.h) change in
# a server's audits (docs/PERFORMANCE.md "Host memory"): one memaudit-server
# on the committed checkpoints, started alternately with the settings and
# with glibc's defaults (GLIBC_TUNABLES=glibc.malloc.check=0, which makes the
# server leave malloc alone), ROUNDS times each. In each start, AUDITS
# guided audits of mnist39 (dense spectra, d = 784) one after another; per
# audit the CLI's wall time, the server's CPU time and minor page faults
# (/proc/PID/stat), then the server's peak resident set and its resident set
# 4 s after the last audit (the idle release).
# A benchmark, not a test: about 2.5 minutes on 2 cores. Needs a built tree.
#
#   bench/host_allocator.sh             # BUILD=build ROUNDS=2 AUDITS=3
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-2} AUDITS=${AUDITS:-3}
source bench/server_bench_lib.sh
audit=(audit --model mnist39 --class 9 --class 3 --samples 4 --seed 9100 --guidance 7.5
       --quiet --fail-on never --json)
ticks=$(getconf CLK_TCK)
# Minor faults and CPU seconds (user + system) of the server so far.
counters() { awk -v hz="$ticks" '{printf "%d %.2f\n", $10, ($14 + $15) / hz}' "/proc/$server_pid/stat"; }
status_mib() { awk -v key="$1:" '$1 == key {printf "%.0f", $2 / 1024}' "/proc/$server_pid/status"; }

for round in $(seq "$ROUNDS"); do
  for allocator in settings defaults; do
    setting=(-u GLIBC_TUNABLES -u MALLOC_ARENA_MAX -u MALLOC_ARENA_TEST -u MALLOC_MMAP_MAX_
             -u MALLOC_MMAP_THRESHOLD_ -u MALLOC_TRIM_THRESHOLD_ -u MALLOC_TOP_PAD_)
    [[ $allocator == settings ]] || setting+=(GLIBC_TUNABLES=glibc.malloc.check=0)
    start_server "${setting[@]}"
    applied=settings
    if grep -q "malloc left as it is" "$WORK/server.log"; then applied=defaults; fi
    [[ $applied == "$allocator" ]] ||
      { echo "the $allocator run got the $applied (see the server's log)" >&2; exit 1; }
    for i in $(seq "$AUDITS"); do
      read -r faults cpu < <(counters)
      start=$(date +%s.%N)
      "${client[@]}" "${audit[@]}" >/dev/null
      wall=$(echo "$(date +%s.%N) - $start" | bc)
      read -r faults_after cpu_after < <(counters)
      printf 'round %d %-8s audit %d: %5.2f s wall, %5.2f s server CPU, %7d minor faults\n' \
        "$round" "$allocator" "$i" "$wall" "$(echo "$cpu_after - $cpu" | bc)" \
        $((faults_after - faults))
    done
    peak=$(status_mib VmHWM) now=$(status_mib VmRSS)
    sleep 4
    printf 'round %d %-8s peak RSS %s MiB, after the audits %s MiB, 4 s idle %s MiB\n' \
      "$round" "$allocator" "$peak" "$now" "$(status_mib VmRSS)"
    stop_server
  done
done
