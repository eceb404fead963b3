#!/usr/bin/env bash
# The main job (README.md): installs what is missing, builds, writes the
# bundled toy model repository (the seed's toy experiment: ε-MLPs trained on
# a Gaussian cloud plus one point duplicated 100 times), starts
# memaudit-server on loopback, audits toy2d with the memaudit CLI, prints the
# verdicts next to the nearest-neighbour truth, and stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh --target memaudit-server --target memaudit --target memaudit-toy

REPOSITORY=${MEMAUDIT_MODELS:-models}
SAMPLES=${MEMAUDIT_DEMO_SAMPLES:-200}
TOY=build/tools/toy/memaudit-toy
WORK=$(mktemp -d)
SERVER_PID=""
cleanup() {
  if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID"
    wait "$SERVER_PID" || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== writing the toy model repository ($REPOSITORY)"
"$TOY" train --repository "$REPOSITORY" --name toy2d --dim 2 --steps 12000 | tail -n 1
"$TOY" train --repository "$REPOSITORY" --name toy8d --dim 8 --intrinsic-dim 3 --steps 12000 \
  | tail -n 1

echo "== starting memaudit-server on loopback"
build/server/memaudit-server --model_repository "$REPOSITORY" --listen 127.0.0.1:0 \
  --metrics_listen 127.0.0.1:0 --port_file "$WORK/ports" 2>"$WORK/server.log" &
SERVER_PID=$!
for _ in $(seq 1 200); do [[ -s "$WORK/ports" ]] && break; sleep 0.1; done
read -r GRPC_PORT METRICS_PORT < "$WORK/ports"
CLI=(build/client/memaudit --server "127.0.0.1:$GRPC_PORT")
# SERVING once the first model load pass is over (a health Watch, no polling).
"${CLI[@]}" health --wait 120 >/dev/null ||
  { echo "memaudit-server is not serving; its log: $WORK/server.log" >&2; exit 1; }
"${CLI[@]}" models

for model in toy2d toy8d; do
  echo
  echo "== memaudit audit --model $model --samples $SAMPLES"
  # --fail-on never: the demo shows the verdicts; a release gate would use
  # the default (exit 3 when the model memorizes).
  "${CLI[@]}" audit --model "$model" --samples "$SAMPLES" --fail-on never --quiet \
    | grep -v '^ *seed\|^ *[0-9]' || true
  "${CLI[@]}" audit --model "$model" --samples "$SAMPLES" --fail-on never --json --quiet \
    > "$WORK/$model.json"
  # Verdicts against the truth: is the sample a copy (d1/d2 < 1/3) of the
  # point that the training set repeats?
  /usr/bin/python3 - "$WORK/$model.json" <<'PY'
import collections, json, sys
report = json.load(open(sys.argv[1]))
table = collections.Counter()
for sample in report["conditions"][0]["samples"]:
    truth = ("copy of the duplicated point" if sample["copy"] and sample["nearest_multiplicity"] > 1
             else "not a copy of it")
    table[(truth, sample["verdict"])] += 1
print(f"{'truth':32s} {'MEMORIZED':>10s} {'PARTIAL':>8s} {'NOT_MEMORIZED':>14s}")
for truth in ("copy of the duplicated point", "not a copy of it"):
    print(f"{truth:32s} {table[(truth, 'MEMORIZED')]:10d} {table[(truth, 'PARTIAL')]:8d}"
          f" {table[(truth, 'NOT_MEMORIZED')]:14d}")
PY
done

echo
echo "== a curvature spectrum (seed 8 of toy2d) and the metrics endpoint"
"${CLI[@]}" spectrum --model toy2d --seed 8
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^memaudit_(audits_total|jobs\{)' || true
