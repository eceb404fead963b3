#!/usr/bin/env bash
# The verdict zoo (bench/zoo/README.md): builds every zoo model once (cached,
# seeded), measures each against nearest-neighbour truth with fixed seeds,
# and prints the table: the default rule's TPR/FPR with and without the
# reference set, and the ROC AUC of each statistic.
#
#   bench/zoo/run.sh            # everything (the first run trains 3 U-Nets: about an hour on 2 cores)
#   MEMAUDIT_ZOO=DIR            # where models and results live (default ~/.cache/memaudit/zoo)
# The U-Nets' training steps are those of the table in docs/VERDICTS.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$(pwd)
ZOO=${MEMAUDIT_ZOO:-$HOME/.cache/memaudit/zoo}
PY=/usr/bin/python3
TRAIN="$PY $ROOT/bench/zoo/zoo_python.py"
EVAL=$ROOT/build/bench/memaudit-zoo-eval
TOY=$ROOT/build/tools/toy/memaudit-toy
scripts/setup.sh >/dev/null
scripts/build.sh
scripts/fetch_mnist.sh
mkdir -p "$ZOO/results"

have() { [[ -f "$ZOO/$1/model.pt" ]]; }
echo "== building the zoo in $ZOO (models already there are kept)"
have gmm16 || $TRAIN gmm --out "$ZOO" --name gmm16 --shape 16 --seed 1
have gmm_latent || $TRAIN gmm --out "$ZOO" --name gmm_latent --shape 4,64,64 --seed 2
have mlp2d || "$TOY" train --repository "$ZOO" --name mlp2d --dim 2 --steps 12000 | tail -n 1
have mlp8d || "$TOY" train --repository "$ZOO" --name mlp8d --dim 8 --intrinsic-dim 3 \
  --steps 12000 --seed 7 | tail -n 1
if ! have mnist39; then
  # The committed checkpoint, C++-trained (checkpoints/mnist39/README.md).
  cp -r checkpoints/mnist39 "$ZOO/mnist39"
fi
have unet_classes_eps || $TRAIN unet --out "$ZOO" --name unet_classes_eps --kind classes \
  --steps 3000
have unet_uncond || $TRAIN unet --out "$ZOO" --name unet_uncond --kind unconditional \
  --steps 6000
have unet_classes_v_cosine || $TRAIN unet --out "$ZOO" --name unet_classes_v_cosine \
  --kind classes --prediction v_prediction --schedule cosine --steps 2000

echo "== measuring (seeds from 1000; one JSON line per sample in $ZOO/results)"
run() {  # run NAME OUTPUT [eval options...]
  local name=$1 out=$2
  shift 2
  if [[ ! -s "$ZOO/results/$out.jsonl" ]]; then
    "$EVAL" --model "$ZOO/$name" "$@" > "$ZOO/results/$out.jsonl.tmp"
    mv "$ZOO/results/$out.jsonl.tmp" "$ZOO/results/$out.jsonl"
  fi
}
run gmm16 gmm16 --samples 64
run gmm_latent gmm_latent --samples 12
run mlp2d mlp2d --samples 64
run mlp8d mlp8d --samples 64
run mnist39 mnist39 --class 9 --class 3 --samples 16
run unet_classes_eps unet_classes_eps --class 0 --class 1 --class 2 --samples 16
run unet_classes_eps unet_classes_eps_ddpm --class 0 --class 1 --class 2 --samples 8 \
  --sampler ddpm --steps 100
run unet_uncond unet_uncond --samples 64
run unet_classes_v_cosine unet_classes_v_cosine --class 0 --class 1 --class 2 --samples 16

echo "== the zoo table"
$PY bench/zoo/summarize.py "$ZOO"/results/*.jsonl | tee "$ZOO/results/table.md"
