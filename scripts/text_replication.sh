#!/usr/bin/env bash
# The text-to-image memorization experiment through the service
# (checkpoints/textmnist/README.md): serves checkpoints/textmnist (or a
# retrained copy with --retrain), audits every prompt of
# prompts/eval.jsonl (4 generations each, guidance 5), calibrates the
# first-step metrics (Wen, Jeon) on the memorized against the
# not-memorized prompts for n ∈ {1, 4} generations and K ∈ {1, 10} steps,
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
build/server/memaudit-server --model_repository "$REPOSITORY" --listen 127.0.0.1:0 \
  --metrics_listen 127.0.0.1:0 --port_file "$OUT/ports" 2>"$OUT/server.log" &
SERVER=$!
trap 'kill -TERM $SERVER; wait $SERVER || true' EXIT
for _ in $(seq 1 200); do [[ -s "$OUT/ports" ]] && break; sleep 0.1; done
read -r PORT _ < "$OUT/ports"
CLI=(build/client/memaudit --server "127.0.0.1:$PORT" --timeout 0)
for _ in $(seq 1 100); do "${CLI[@]}" health >/dev/null 2>&1 && break; sleep 0.1; done

# Per-prompt verdicts (dense spectra at the default evaluation step) and
# nearest-neighbour truth for each generation.
"${CLI[@]}" audit --model textmnist --prompts "$PROMPTS/eval.jsonl" --samples "$SAMPLES" \
  --guidance 5 --fail-on never --json > "$OUT/audit.json"

# First-step metrics: n generations per prompt, averaged over the first K steps.
for n in 1 4; do
  for k in 1 10; do
    "${CLI[@]}" calibrate --model textmnist \
      --memorized-prompts "$PROMPTS/memorized.txt" \
      --not-memorized-prompts "$PROMPTS/not_memorized.txt" \
      --samples "$n" --early-steps "$k" --guidance 5 --json > "$OUT/calibrate_n${n}_k${k}.json"
  done
done

/usr/bin/python3 tools/textmnist/summarize_text_replication.py --audit "$OUT/audit.json" \
  --prompts "$PROMPTS/eval.jsonl" --calibration-dir "$OUT" | tee "$OUT/summary.md"

# Figures: 16 generations of the first memorized prompt and of the same
# caption without its title (the first not-memorized prompt).
"${CLI[@]}" sample --model textmnist --prompt "$(head -n 1 "$PROMPTS/memorized.txt")" \
  --count 16 --guidance 5 --out "$OUT/memorized_prompt.png"
"${CLI[@]}" sample --model textmnist --prompt "$(head -n 1 "$PROMPTS/not_memorized.txt")" \
  --count 16 --guidance 5 --out "$OUT/not_memorized_prompt.png"
