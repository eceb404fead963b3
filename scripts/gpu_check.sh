#!/usr/bin/env bash
# The GPU check: an SD-shaped workload through the engine on a CUDA device,
# in float32 and float16, with peak device memory -- the figures
# docs/PERFORMANCE.md "On a GPU" needs -- and the CUDA device tests. Without a
# GPU it runs its CPU fallback (a smaller network, float32 and bfloat16), which
# checks every step of the script in a few minutes.
#
#   scripts/gpu_check.sh [--cpu] [--out DIR]
#   scripts/gpu_check.sh --pack-deps
#
# Where it runs:
#   * a machine with this repository's Debian build (scripts/setup.sh and
#     scripts/build.sh done): uses build/ as it is;
#   * the lent GPU machine (PyTorch with CUDA, its C++ LibTorch inside the
#     Python package, nvcc, CMake, ninja, but no Abseil, protobuf, ICU, CLI11,
#     Eigen or Spectra): configures build-gpu/ with MEMAUDIT_CORE_ONLY against
#     that LibTorch and the Debian packages that `scripts/gpu_check.sh
#     --pack-deps` packed into gpu-deps.tar.xz beforehand on a Debian 12
#     machine (14 MiB; carry it to the GPU machine, where it is unpacked
#     into gpu-deps/).
# Steps (each prints its time; the whole run is meant to fit 8 minutes):
# (the workload's sizes: step 1 below)
#   1. the SD-shaped model directories (bench/sd_shaped.py), one per dtype;
#   2. the build of memaudit-bench-sd (and, with a full build, the CUDA tests);
#   3. on CUDA: CheckpointTest's CUDA test where a full build exists, the
#      exporter's CUDA test (tools/export/test_export_diffusers_cuda.py), and
#      the spectrum of one sample on the GPU compared with the CPU in float32;
#   4. memaudit-bench-sd per dtype: load, one guided call, the spectrum (k = 24)
#      of one sample, first-step metrics per prompt, an audit of prompts ×
#      samples, peak device memory. Output also lands in DIR (default
#      $OUT, else gpu-check-out/) as one JSON line per dtype.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
start=$SECONDS
say() { echo "gpu-check [$((SECONDS - start)) s]: $*"; }

out="${OUT:-$repo/gpu-check-out}"
force_cpu=0
pack=0
while (($#)); do
  case "$1" in
    --cpu) force_cpu=1 ;;
    --out) out=$2; shift ;;
    --pack-deps) pack=1 ;;
    *) echo "gpu-check: unknown argument '$1'" >&2; exit 2 ;;
  esac
  shift
done

# Debian 12 packages the core-only build needs beyond LibTorch, unpacked into
# gpu-deps/ so that they can travel to a machine without a package manager.
DEPS=(libabsl-dev libabsl20220623 libprotobuf-dev libprotobuf32 libprotoc32 protobuf-compiler
      libicu-dev libicu72 icu-devtools libcli11-dev libeigen3-dev libspectra-dev
      nlohmann-json3-dev zlib1g-dev)
if ((pack)); then
  rm -rf gpu-deps gpu-deps.tar.xz && mkdir -p gpu-deps/debs
  (cd gpu-deps/debs && apt-get download "${DEPS[@]}" >/dev/null 2>&1)
  for deb in gpu-deps/debs/*.deb; do dpkg -x "$deb" gpu-deps/root; done
  # Shared libraries only (the static ones double the size), no docs.
  rm -rf gpu-deps/debs gpu-deps/root/usr/share/doc gpu-deps/root/usr/share/man
  find gpu-deps/root -name '*.a' -delete
  tar -C gpu-deps -cJf gpu-deps.tar.xz root
  say "gpu-deps.tar.xz: $(du -h gpu-deps.tar.xz | cut -f1) (gpu-deps/ $(du -sh gpu-deps | cut -f1)); carry it to the GPU machine"
  exit 0
fi
if [[ -f gpu-deps.tar.xz && ! -d gpu-deps/root ]]; then
  mkdir -p gpu-deps && tar -C gpu-deps -xJf gpu-deps.tar.xz
fi

python=/usr/bin/python3
[[ -x $python ]] && "$python" -c 'import torch' 2>/dev/null || python=python3
device=cpu
if ((!force_cpu)) && "$python" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  device=cuda
fi
say "python $("$python" -c 'import torch; print(torch.__version__)') on $device"

# 1. Models. GPU: latents 4×64×64, 8 blocks at width 320 (~120 GFLOPs per
#    row, a third of SD 1.5's U-Net), float32 and float16, k = 24, the audit
#    of 8 prompts × 4 samples cut at 150 s per dtype (the JSON says how many
#    prompts were done). CPU fallback: latents 4×16×16, one block at width
#    16, k = 8 by Arnoldi, 2 prompts × 2 samples, float32 and bfloat16
#    (float16 convolutions need CUDA or a recent torch on the CPU): it checks
#    the steps, its figures are not SD's.
models="$out/models"
mkdir -p "$models"
if [[ $device == cuda ]]; then
  size=64 width=320 blocks=8 dtypes=(float32 float16) prompts=8 samples=4 k=24
  run=(--method auto --audit-budget-seconds 150)
else
  size=16 width=16 blocks=1 dtypes=(float32 bfloat16) prompts=2 samples=2 k=8
  run=(--method arnoldi)
fi
for dtype in "${dtypes[@]}"; do
  "$python" bench/sd_shaped.py "$models" "sd_$dtype" --width "$width" --blocks "$blocks" \
    --sample-size "$size" --dtype "$dtype" --device "$device" 2>&1 | grep -v -i warn | tail -1
done
say "models written"

# 2. The benchmark binary.
if [[ -x build/bench/memaudit-bench-sd && $device == cpu ]]; then
  bench=build/bench/memaudit-bench-sd
elif [[ -f build/CMakeCache.txt && $device == cpu ]]; then
  scripts/build.sh --bench --target memaudit-bench-sd >/dev/null
  bench=build/bench/memaudit-bench-sd
else
  prefix=$("$python" -c 'import torch; print(torch.utils.cmake_prefix_path)')
  extra=()
  if [[ -d gpu-deps/root ]]; then
    deps=$repo/gpu-deps/root
    export LD_LIBRARY_PATH="$deps/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}"
    export PATH="$deps/usr/bin:$PATH"
    extra+=("-DCMAKE_PREFIX_PATH=$prefix;$deps/usr;$deps/usr/lib/x86_64-linux-gnu/cmake"
            "-DCMAKE_CXX_FLAGS=-isystem $deps/usr/include -isystem $deps/usr/include/eigen3"
            "-DProtobuf_PROTOC_EXECUTABLE=$deps/usr/bin/protoc"
            "-DPROTOC_EXECUTABLE=$deps/usr/bin/protoc"
            "-DICU_ROOT=$deps/usr")
  else
    extra+=("-DCMAKE_PREFIX_PATH=$prefix")
  fi
  cmake -S . -B build-gpu -G Ninja -DCMAKE_BUILD_TYPE=Release -DMEMAUDIT_CORE_ONLY=ON \
    "${extra[@]}" >"$out/configure.log" 2>&1 || { tail -30 "$out/configure.log"; exit 1; }
  ninja -C build-gpu memaudit-bench-sd >"$out/build.log" 2>&1 || { tail -30 "$out/build.log"; exit 1; }
  bench=build-gpu/bench/memaudit-bench-sd
fi
say "benchmark: $bench"

# 3. CUDA device tests (a full build only), and GPU against CPU.
compare=()
if [[ $device == cuda ]]; then
  if [[ -x build/tests/core_test ]]; then
    build/tests/core_test --gtest_filter='*Cuda*' | tail -3
  fi
  # The exporter's float16/float32 exports on the device (not in the suite,
  # which has no GPU and skips nothing).
  "$python" tools/export/test_export_diffusers_cuda.py >"$out/export_cuda.log" 2>&1 \
    && say "exporter on cuda: ok" || { tail -20 "$out/export_cuda.log"; say "exporter on cuda: FAILED"; }
  compare=(--compare-cpu)
fi

# 4. The workload per dtype.
for dtype in "${dtypes[@]}"; do
  say "memaudit-bench-sd sd_$dtype on $device"
  check=()
  [[ $dtype == float32 ]] && check=("${compare[@]}")  # a reduced export has its dtype baked in
  "$bench" --model "$models/sd_$dtype" --device "$device" --prompts "$prompts" \
    --samples "$samples" --steps 50 --guidance 7.5 --steps-offset 1 -k "$k" "${run[@]}" \
    "${check[@]}" \
    | tee "$out/sd_$dtype.txt"
  tail -1 "$out/sd_$dtype.txt" >>"$out/results.jsonl"
done
say "done; JSON lines in $out/results.jsonl"
