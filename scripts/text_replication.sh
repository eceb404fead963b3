#!/usr/bin/env bash
# The text-to-image memorization experiment through the service
# (checkpoints/textmnist/README.md): serves checkpoints/textmnist (or a
# retrained copy with --retrain), audits every prompt of
# prompts/eval.jsonl (4 generations each, guidance 5), calibrates the
# first-step metrics (Wen, Jeon: AUC, TPR at 1% FPR) on the memorized against the
# not-memorized prompts for n ∈ {1, 4} generations and K ∈ {1, 10} steps,
# runs a flag-early audit with the calibrated policy on fresh seeds,
# and writes the JSON reports, their summary and two sample grids to
# out/textmnist/.
#   MEMAUDIT_TEXT_SAMPLES  generations per prompt in the audit (default 4)
set -euo pipefail
cd "$(dirname "$0")/.."
SAMPLES=${MEMAUDIT_TEXT_SAMPLES:-4}
REPOSITORY=checkpoints
OUT=out/textmnist
mkdir -p "$OUT"
scripts/setup.sh
scripts/build.sh
if [[ "${1:-}" == "--retrain" ]]; then
  scripts/fetch_mnist.sh
  REPOSITORY=$OUT/models
  /usr/bin/python3 tools/textmnist/train_text_mnist.py --out "$REPOSITORY" --name textmnist \
    | tail -n 1
fi
PROMPTS=$REPOSITORY/textmnist/prompts
source scripts/serve.sh
start_server "$REPOSITORY" "$OUT"

# Per-prompt verdicts (dense spectra at the default evaluation step) and
# nearest-neighbour truth for each generation.
"${CLI[@]}" audit --model textmnist --prompts "$PROMPTS/eval.jsonl" --samples "$SAMPLES" \
  --guidance 5 --fail-on never --json > "$OUT/audit.json"

# The same prompts with spectra at t = 50 (sigma 0.17) instead of the default
# step (the first with sigma < 0.1, t = 20 here), on fresh seeds (1000+): at
# t = 20 this model's copies keep one slightly positive direction
# (docs/REPLICATION.md).
"${CLI[@]}" audit --model textmnist --prompts "$PROMPTS/eval.jsonl" --samples "$SAMPLES" \
  --seed 1000 --t 50 --guidance 5 --fail-on never --json > "$OUT/audit_t50.json"

# First-step metrics: per prompt, n = 4 generations (seeds 0-3) averaged over
# the first K steps, K = 1 and 10 (memaudit early, one call per prompt and
# K); the summary takes n = 1 as the first generation. One calibration
# (n = 1, K = 1) gives the product's own AUCs for the same numbers and the
# verdict_policy that scripts/text_flag_early.sh then tests on fresh seeds.
for k in 1 10; do
  : > "$OUT/early_k${k}.jsonl"
  while IFS= read -r line; do
    [[ -z "$line" ]] && continue
    id=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$line")
    prompt=$(/usr/bin/python3 -c 'import json,sys; print(json.loads(sys.argv[1])["prompt"])' "$line")
    early=$("${CLI[@]}" early --model textmnist --prompt "$prompt" --count 4 --seed 0 \
      --early-steps "$k" --guidance 5 --json)
    /usr/bin/python3 -c 'import json,sys; print(json.dumps({"id": sys.argv[1], "early": json.loads(sys.argv[2])}))' \
      "$id" "$early" >> "$OUT/early_k${k}.jsonl"
  done < "$PROMPTS/eval.jsonl"
done
"${CLI[@]}" calibrate --model textmnist \
  --memorized-prompts "$PROMPTS/memorized.txt" \
  --not-memorized-prompts "$PROMPTS/not_memorized.txt" \
  --samples 1 --early-steps 1 --guidance 5 --json > "$OUT/calibrate_n1_k1.json"

{
  echo "## Default evaluation step (seeds 0-$((SAMPLES - 1)))"
  /usr/bin/python3 tools/textmnist/summarize_text_replication.py --audit "$OUT/audit.json" \
    --prompts "$PROMPTS/eval.jsonl" --early-dir "$OUT" --calibration "$OUT/calibrate_n1_k1.json"
  echo
  echo "## t = 50 (seeds 1000-$((999 + SAMPLES)))"
  /usr/bin/python3 tools/textmnist/summarize_text_replication.py --audit "$OUT/audit_t50.json" \
    --prompts "$PROMPTS/eval.jsonl"
  echo
  echo "## Flag-early audit with the calibrated policy (seed 2000)"
  scripts/text_flag_early.sh "$OUT/calibrate_n1_k1.json" "$REPOSITORY/textmnist"
} | tee "$OUT/summary.md"

# Figures: 16 generations of the first memorized prompt and of the same
# caption without its title (the first not-memorized prompt).
"${CLI[@]}" sample --model textmnist --prompt "$(head -n 1 "$PROMPTS/memorized.txt")" \
  --count 16 --guidance 5 --out "$OUT/memorized_prompt.png"
"${CLI[@]}" sample --model textmnist --prompt "$(head -n 1 "$PROMPTS/not_memorized.txt")" \
  --count 16 --guidance 5 --out "$OUT/not_memorized_prompt.png"
