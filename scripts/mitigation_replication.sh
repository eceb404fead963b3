#!/usr/bin/env bash
# The guard against copying (docs/REPLICATION.md "Mitigation") on the two
# trained models, at matched seeds 4000 onward:
#   1. the trade-off over the step budget (build/bench/memaudit-bench-mitigation):
#      mnist39's memorized class 9 (16 seeds) and textmnist's 10 memorized
#      prompts (4 seeds each) at guidance 5 and 1, with the digit classifier
#      of checkpoints/digit_classifier as the class-fidelity measure;
#   2. through memaudit-server and `memaudit mitigate` (10 guard steps):
#      verdicts and truth before | after, PNG grids in out/mitigation/.
# Needs a built tree (scripts/build.sh --bench). Writes out/mitigation/.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=out/mitigation
mkdir -p "$OUT"
BENCH=build/bench/memaudit-bench-mitigation
[[ -x $BENCH ]] || { echo "$BENCH is not built: scripts/build.sh --bench" >&2; exit 1; }
BUDGETS=(--budgets 0 --budgets 2 --budgets 5 --budgets 10 --budgets 20)
"$BENCH" --model checkpoints/mnist39 --class 9 --seeds 16 --first-seed 4000 "${BUDGETS[@]}" |
  tee "$OUT/bench_mnist39_class9.md"
for guidance in 5 1; do
  "$BENCH" --model checkpoints/textmnist --prompts checkpoints/textmnist/prompts/memorized.txt \
    --guidance "$guidance" --seeds 4 --first-seed 4000 "${BUDGETS[@]}" |
    tee "$OUT/bench_textmnist_guidance$guidance.md"
done

source scripts/serve.sh
start_server checkpoints "$OUT/server"
"${CLI[@]}" mitigate --model mnist39 --class 9 --count 8 --seed 4000 --guard-steps 10 \
  --out "$OUT/mnist39_class9.png" | tee "$OUT/mitigate_mnist39_class9.txt"
"${CLI[@]}" mitigate --model textmnist --guidance 5 --count 4 --seed 4000 --guard-steps 10 \
  --prompt "$(head -1 checkpoints/textmnist/prompts/memorized.txt)" \
  --out "$OUT/textmnist_mem00.png" | tee "$OUT/mitigate_textmnist_mem00.txt"
