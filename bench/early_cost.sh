#!/usr/bin/env bash
# The cost of the denoiser-free anisotropy metric against Wen's and Jeon's
# early metrics (docs/PERFORMANCE.md "Early metrics without a derivative"):
# memaudit-bench-peer --method early on the trained MNIST U-Net (mnist39,
# d = 784, class labels), the text-to-image textmnist (d = 784, its 40
# evaluation prompts) and a class-conditional 4×64×64 conv ε-model with
# untrained weights (d = 16,384, memaudit-toy conv --classes 10) and an
# SD-shaped text-to-image model shrunk for the CPU (d = 16,384, prompts
# embedded to 77×768, bench/sd_shaped.py --width 64 --blocks 4), each at
# n = 1 and 4 generations per condition, K = 1, 40 conditions. Every line
# compares memaudit with its Python peer (bench/peer_early.py, the same
# formulas in torch) on the same x_T: agreement, then seconds per condition
# of Wen + Jeon (+ the anisotropy pair) and of the anisotropy alone, forward
# passes only, in the same run.
# A benchmark, not a test: about 6 minutes on 2 cores. Needs a built tree.
#
#   bench/early_cost.sh            # WORK=/tmp/memaudit-early-cost
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
WORK=${WORK:-/tmp/memaudit-early-cost}
PEER=$BUILD/bench/memaudit-bench-peer
[[ -x $PEER ]] || { echo "$PEER is not built: scripts/build.sh --bench" >&2; exit 1; }
mkdir -p "$WORK"
[[ -d "$WORK/repo/conv4x64c" ]] || "$BUILD/tools/toy/memaudit-toy" conv \
  --repository "$WORK/repo" --name conv4x64c --size 64 --classes 10 >/dev/null
[[ -d "$WORK/repo/sdsmall" ]] || /usr/bin/python3 bench/sd_shaped.py "$WORK/repo" sdsmall \
  --width 64 --blocks 4 --sample-size 64 >/dev/null
/usr/bin/python3 -c 'import json, sys; [print(json.loads(l)["prompt"]) for l in sys.stdin]' \
  <checkpoints/textmnist/prompts/eval.jsonl >"$WORK/prompts.txt"

run() {  # LABEL N [options...]
  local label=$1 n=$2
  shift 2
  echo "== $label, n = $n"
  "$PEER" --method early --generations "$n" --steps 1 --conditions 40 --work "$WORK" "$@" |
    grep -E "^(model|wen |jeon |agreement|network calls|memaudit early|Python peer|anisotropy)"
}
for n in 1 4; do
  run mnist39 "$n" --model checkpoints/mnist39
  run textmnist "$n" --model checkpoints/textmnist --prompts "$WORK/prompts.txt"
  run conv4x64c "$n" --model "$WORK/repo/conv4x64c"
  run sdsmall "$n" --model "$WORK/repo/sdsmall" --prompts "$WORK/prompts.txt"
done
