#!/usr/bin/env bash
# The MNIST memorization experiment through the service (docs/REPLICATION.md):
# serves checkpoints/mnist39 (or a retrained copy with --retrain), audits
# classes 9 and 3 with guidance 5 (dense spectra at t = 20, the default
# evaluation step, and at t = 1 as in the paper; first-step metrics), and
# writes the report, its summary and two spectrum plots to out/mnist/.
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLES=${MEMAUDIT_MNIST_SAMPLES:-100}
REPOSITORY=checkpoints
OUT=out/mnist
mkdir -p "$OUT"
scripts/setup.sh
scripts/build.sh --tools
if [[ "${1:-}" == "--retrain" ]]; then
  scripts/fetch_mnist.sh
  REPOSITORY=$OUT/models
  build/tools/mnist/memaudit-mnist train --repository "$REPOSITORY" --name mnist39 \
    --channels 16 --steps 6000 --batch 64 | tail -n 1
fi
source scripts/serve.sh
start_server "$REPOSITORY" "$OUT"
"${CLI[@]}" audit --model mnist39 --class 9 --class 3 --samples "$SAMPLES" --guidance 5 \
  --t 20 --t 1 --early-steps 1 --fail-on never --json > "$OUT/report.json"
/usr/bin/python3 tools/mnist/summarize_audit.py "$OUT/report.json" | tee "$OUT/summary.txt"
# Figures: the curvature spectrum of a generated 9 and of a generated 3.
"${CLI[@]}" spectrum --model mnist39 --class 9 --seed 2 --guidance 5 --top 3 \
  --plot "$OUT/spectrum_nine_seed2.svg"
"${CLI[@]}" spectrum --model mnist39 --class 3 --seed 0 --guidance 5 --top 3 \
  --plot "$OUT/spectrum_three_seed0.svg"
"${CLI[@]}" sample --model mnist39 --class 9 --count 16 --guidance 5 --out "$OUT/nines.png"
"${CLI[@]}" sample --model mnist39 --class 3 --count 16 --guidance 5 --out "$OUT/threes.png"
