#!/usr/bin/env bash
# Early-metric quality (docs/REPLICATION.md "First-step metrics"): AUC,
# TPR at 1% FPR and label-free flags of every conditional early metric
# (Wen, Jeon, the anisotropy pair and their combination) on models with
# known memorized conditions, at seeds no threshold or choice was read from
# (3000+ and 4000+; the replication's were 0-3, 1000+, 2000):
#   - textmnist by prompt: its 10 memorized prompts against all 90 generic
#     training captions (3 to 40 images each; the memorized prompts without
#     their titles among them), n = 1 and 4 at K = 1 (every metric then at
#     x_T, before any guided step, so the guidance does not matter), and
#     K = 5 at guidance 7.5 (Wen's and Jeon's averaged over 5 guided steps;
#     the anisotropy pair is at x_T whatever K is);
#   - the zoo's class-conditional U-Nets per generation (their memorized
#     class against the others; only 2-3 classes each, so AUC over
#     generations, and no label-free flags), guidance 7.5.
# A benchmark, not a test: about 5 minutes on 2 cores. Needs a built tree;
# the zoo models from bench/zoo/run.sh (skipped when absent).
#
#   bench/early_quality.sh            # OUT=/tmp/memaudit-early-quality
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT=${OUT:-/tmp/memaudit-early-quality}
ZOO=${MEMAUDIT_ZOO:-$HOME/.cache/memaudit/zoo}
Q=$BUILD/bench/memaudit-bench-early-quality
[[ -x $Q ]] || { echo "$Q is not built: scripts/build.sh --bench" >&2; exit 1; }
mkdir -p "$OUT"

# The 10 memorized prompts and the 90 generic captions (every digit ×
# stroke tercile × slant tercile: checkpoints/textmnist/README.md).
/usr/bin/python3 - "$OUT/textmnist_prompts.jsonl" <<'PY'
import json, sys
memorized = [json.loads(line) for line in open("checkpoints/textmnist/prompts/eval.jsonl")]
memorized = [m["prompt"] for m in memorized if m["memorized"]]
digits = "zero one two three four five six seven eight nine".split()
with open(sys.argv[1], "w") as out:
    for prompt in memorized:
        out.write(json.dumps({"prompt": prompt, "memorized": True}) + "\n")
    for digit in digits:
        for stroke in ("thin", "medium", "thick"):
            for slant in ("slanted left", "upright", "slanted right"):
                prompt = f"a handwritten {digit}, {stroke} stroke, {slant}"
                out.write(json.dumps({"prompt": prompt, "memorized": False}) + "\n")
PY

textmnist() {  # SEED N K
  echo "== textmnist, seeds $1+, n = $2, K = $3, guidance 7.5"
  "$Q" --model checkpoints/textmnist --prompts "$OUT/textmnist_prompts.jsonl" \
    --generations "$2" --seed "$1" --steps "$3" --guidance 7.5 \
    --json "$OUT/textmnist_s$1_n$2_k$3.jsonl"
}
for seed in 3000 4000; do
  for n in 1 4; do textmnist "$seed" "$n" 1; done
  textmnist "$seed" 4 5
done

zoo() {  # NAME MEMORIZED_CLASS OTHER_CLASS... [-- extra options]
  local name=$1 memorized=$2
  shift 2
  local classes=(--class "$memorized" --memorized-class "$memorized")
  while (($#)) && [[ $1 != -- ]]; do classes+=(--class "$1"); shift; done
  (($#)) && shift
  if [[ ! -f "$ZOO/$name/model.pt" ]]; then
    echo "== $name: not in $ZOO (bench/zoo/run.sh builds it); skipped"
    return
  fi
  echo "== $name, guidance 7.5, 64 generations per class, seeds 3000+"
  "$Q" --model "$ZOO/$name" "${classes[@]}" --generations 64 --seed 3000 --guidance 7.5 "$@" \
    --json "$OUT/$name.jsonl"
}
zoo mnist39 9 3
zoo unet_classes_eps 1 0 2
zoo unet_classes_sd 1 0 2 -- --steps-offset 1
