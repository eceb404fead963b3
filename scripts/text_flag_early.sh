#!/usr/bin/env bash
# Flag-early audit of the text model with the policy `memaudit calibrate`
# suggested, on seeds no threshold was read from: copies the model directory
# into out/textmnist/calibrated/, appends the verdict_policy block of a
# calibration report (default out/textmnist/calibrate_n1_k1.json, written by
# scripts/text_replication.sh from seed 0), serves it, and runs
#   memaudit audit --early-only --prompts eval.jsonl --samples 1 --seed 2000
# then prints each prompt's verdict against its label.
#   $1  calibration report (JSON)      $2  model directory (checkpoints/textmnist)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=out/textmnist
CALIBRATION=${1:-$OUT/calibrate_n1_k1.json}
MODEL=${2:-checkpoints/textmnist}
REPOSITORY=$OUT/calibrated
rm -rf "$REPOSITORY"
mkdir -p "$REPOSITORY"
cp -r "$MODEL" "$REPOSITORY/textmnist"
/usr/bin/python3 - "$CALIBRATION" "$REPOSITORY/textmnist/config.pbtxt" <<'PY'
import json, sys
policy = json.load(open(sys.argv[1]))["verdict_policy"]
with open(sys.argv[2], "a") as config:
    config.write("\n# from memaudit calibrate (" + sys.argv[1] + ")\n" + policy + "\n")
print(policy, end="")
PY
source scripts/serve.sh
start_server "$REPOSITORY" "$REPOSITORY"
"${CLI[@]}" audit --model textmnist --prompts "$MODEL/prompts/eval.jsonl" --early-only \
  --samples 1 --seed 2000 --guidance 5 --fail-on never --json > "$OUT/flag_early.json"
/usr/bin/python3 - "$OUT/flag_early.json" "$MODEL/prompts/eval.jsonl" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
labels = {}
for line in open(sys.argv[2]):
    if line.strip():
        record = json.loads(line)
        labels[str(record["id"])] = record["memorized"]
counts = {}
for condition in report["conditions"]:
    key = (labels[condition["label"]], condition["verdict"])
    counts[key] = counts.get(key, 0) + 1
print("| prompts | MEMORIZED | NOT_MEMORIZED |\n|---|---|---|")
for memorized, name in ((True, "memorized"), (False, "not memorized")):
    print(f"| {name} ({sum(v for (m, _), v in counts.items() if m == memorized)}) | "
          f"{counts.get((memorized, 'MEMORIZED'), 0)} | {counts.get((memorized, 'NOT_MEMORIZED'), 0)} |")
print("rule:", report.get("policy", {}).get("early_rule", ""))
PY
