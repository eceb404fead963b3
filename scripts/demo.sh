#!/usr/bin/env bash
# The main job (README.md): installs what is missing, builds, trains the
# bundled toy models (the seed's toy experiment) into ./models, and prints
# the curvature table: samples that copy the duplicated training point
# against the rest.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
TOY=build/tools/toy/memaudit-toy
REPOSITORY=${MEMAUDIT_MODELS:-models}

echo "== training toy2d: 2-D Gaussian cloud (400 points) + one point x100"
"$TOY" train --repository "$REPOSITORY" --name toy2d --dim 2 --steps 12000 | tail -n 1
echo "== training toy8d: 8-D data on a 3-D subspace (400 points) + one point x100"
"$TOY" train --repository "$REPOSITORY" --name toy8d --dim 8 --intrinsic-dim 3 --steps 12000 \
  | tail -n 1

for model in toy2d toy8d; do
  echo
  echo "== $model: 200 DDIM samples, dense spectrum at the first step with sigma_t < 0.1"
  "$TOY" experiment --model "$REPOSITORY/$model" --samples 200
done
