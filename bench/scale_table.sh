#!/usr/bin/env bash
# The spectra-at-scale table (docs/PERFORMANCE.md, issue #13): for d = 784
# (checkpoints/mnist39, the trained MNIST U-Net, class 9), 4,096 and 16,384
# (4×32×32 and 4×64×64 conv ε-models with untrained weights, written by
# memaudit-toy conv), in one run on this machine:
#   - a verdict-grade matrix-free spectrum (the service defaults: k = 24,
#     largest real part, tolerance 1e-4): seconds, network products, agreement
#     and time against the ARPACK peer (bench/peer_arnoldi.py) and against
#     memaudit as it computed spectra before (JVPs, subspace max(2k + 1, k + 16));
#     where dense runs (d <= 4,096), every eigenvalue found against the dense
#     spectrum of the same point;
#   - peak resident memory of memaudit's and the peer's processes;
#   - early metrics (n = 4, K = 1) in conditions per second against their
#     peer (bench/peer_early.py), per condition and with all conditions batched;
#   - an audit of 16 samples end to end through memaudit-server and the CLI
#     (sampling, Arnoldi spectra, nearest neighbours, verdicts), and the
#     server's peak resident memory.
# A benchmark, not a test: about 10 minutes on 2 cores. Needs a built tree
# (scripts/build.sh --bench).
#
#   bench/scale_table.sh                 # POINTS=5 spectra per model
#   POINTS=3 WORK=/tmp/scale bench/scale_table.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
WORK=${WORK:-/tmp/memaudit-scale}
POINTS=${POINTS:-5}
PEER=$BUILD/bench/memaudit-bench-peer
[[ -x $PEER ]] || { echo "$PEER is not built: scripts/build.sh --bench" >&2; exit 1; }
# One repository per model (the server refuses model directories that link
# outside its repository, so mnist39 is copied).
model_dir() { echo "$WORK/repo-$1/$1"; }
[[ -d "$(model_dir conv4x32)" ]] || "$BUILD/tools/toy/memaudit-toy" conv \
  --repository "$WORK/repo-conv4x32" --name conv4x32 --size 32 >/dev/null
[[ -d "$(model_dir conv4x64)" ]] || "$BUILD/tools/toy/memaudit-toy" conv \
  --repository "$WORK/repo-conv4x64" --name conv4x64 --size 64 >/dev/null
if [[ ! -d "$(model_dir mnist39)" ]]; then
  mkdir -p "$WORK/repo-mnist39"
  cp -r checkpoints/mnist39 "$(model_dir mnist39)"
fi

# field LINE_PATTERN SED_EXPRESSION FILE: the first matching line, edited.
field() { grep -m1 -- "$1" "$3" | sed -E "$2"; }

# One memaudit-server per model (so its peak memory is that model's), the
# audit timed around the CLI call.
audit_seconds_and_peak() {
  local model=$1 classes=$2 repo="$WORK/repo-$1"
  rm -f "$WORK/ports-$model"
  "$BUILD/server/memaudit-server" --model_repository "$repo" --listen 127.0.0.1:0 \
    --metrics_listen 127.0.0.1:0 --port_file "$WORK/ports-$model" 2>"$WORK/server-$model.log" &
  local pid=$!
  # The server goes with this function however it ends.
  trap 'kill -TERM "${pid:-}" 2>/dev/null || true' RETURN
  for _ in $(seq 1 300); do [[ -s "$WORK/ports-$model" ]] && break; sleep 0.1; done
  local port
  read -r port _ <"$WORK/ports-$model"
  local cli=("$BUILD/client/memaudit" --server "127.0.0.1:$port")
  for _ in $(seq 1 300); do "${cli[@]}" health >/dev/null 2>&1 && break; sleep 0.1; done
  local start end
  start=$(date +%s.%N)
  # shellcheck disable=SC2086
  if ! "${cli[@]}" audit --model "$model" $classes --samples 16 --method arnoldi --fail-on never \
    --quiet >"$WORK/audit-$model.txt"; then
    echo "the audit of $model failed (server log: $WORK/server-$model.log)" >&2
    echo "failed -"
    return 0
  fi
  end=$(date +%s.%N)
  local peak
  peak=$(awk '/VmHWM/ {printf "%.0f", $2 / 1024}' "/proc/$pid/status")
  kill -TERM "$pid"
  wait "$pid" || true
  rm -f "$WORK/ports-$model"
  echo "$(echo "$end - $start" | bc -l | xargs printf '%.1f') $peak"
}

rows=()
for spec in "mnist39 784 --label 9|--class 9" "conv4x32 4096 |" "conv4x64 16384 |"; do
  model=${spec%% *}
  rest=${spec#* }
  d=${rest%% *}
  label_args=${rest#* }
  label_args=${label_args%%|*}
  classes=${spec#*|}
  echo "== $model (d = $d)" >&2
  # shellcheck disable=SC2086
  rc=0
  "$PEER" --model "$(model_dir "$model")" $label_args --method arnoldi -k 24 --tolerance 1e-4 \
    --points "$POINTS" --compare-jvp --check-dense --work "$WORK/peer-$model" \
    >"$WORK/arnoldi-$model.txt" || rc=$?
  # Exit 2: the rank-wise check found the k-windows differing at a cluster's
  # edge; the set-wise and dense columns say more. Anything else is a failure.
  if [[ $rc -ne 0 && $rc -ne 2 ]]; then
    echo "memaudit-bench-peer --method arnoldi failed on $model (exit $rc):" >&2
    tail -n 5 "$WORK/arnoldi-$model.txt" >&2
    exit 1
  fi
  out="$WORK/arnoldi-$model.txt"
  ours=$(field "memaudit arnoldi spectrum" 's/.*: ([0-9.]+) s.*/\1/' "$out")
  peer=$(field "Python peer " 's/.*: ([0-9.]+) s.*/\1/' "$out")
  before=$(field "memaudit as before" 's/.*\): ([0-9.]+) s.*/\1/' "$out")
  products=$(field "network products per spectrum" 's/.*memaudit ([0-9]+) .*peer ([0-9]+) .*/\1 : \2/' "$out")
  before_jvps=$(field "memaudit as before" 's/.*median\), ([0-9]+) JVPs.*/\1/' "$out")
  agreement=$(field "eigenvalues found by both" 's/.*: ([0-9]+ of [0-9]+) within 1e-3, .* ([0-9.e+-]+)$/\1, \2/' "$out")
  against_dense=$(field "against memaudit's dense" 's/.*within ([0-9.e+-]+) of.*/\1/' "$out" || true)
  memory=$(field "peak resident memory" 's/.*memaudit ([0-9]+) MiB, peer ([0-9]+) MiB/\1 : \2/' "$out")
  # Early metrics, n = 4, K = 1 (mnist39: Wen + Jeon; conv: ‖s‖², ‖Hs‖², tr H).
  rc=0
  "$PEER" --model "$(model_dir "$model")" --method early --conditions 10 -n 4 --steps 1 --batched \
    --work "$WORK/early-$model" >"$WORK/early-$model.txt" || rc=$?
  if [[ $rc -ne 0 ]]; then
    echo "memaudit-bench-peer --method early failed on $model (exit $rc; 2: agreement above" \
      "1e-4):" >&2
    tail -n 5 "$WORK/early-$model.txt" >&2
    exit 1
  fi
  early="$WORK/early-$model.txt"
  early_ours=$(field "memaudit early metrics" 's/.*= ([0-9.]+) conditions.*/\1/' "$early")
  early_peer=$(field "Python peer " 's/.*= ([0-9.]+) conditions.*/\1/' "$early")
  early_batched=$(field "in one call" 's/.*= ([0-9.]+) conditions\/s.*/\1/' "$early")
  read -r audit_s server_peak < <(audit_seconds_and_peak "$model" "$classes")
  ratio() { echo "$1 / $2" | bc -l | xargs printf '%.2f'; }
  rows+=("| $model | $d | $ours | $products | ${against_dense:-–} | $agreement | $peer | $(ratio "$ours" "$peer") | $before ($before_jvps JVPs) | $(ratio "$ours" "$before") | $memory | $early_ours ($early_batched batched) | $early_peer | $(ratio "$early_peer" "$early_ours") ($(ratio "$early_peer" "$early_batched")) | $audit_s | $server_peak |")
done

echo "matrix-free spectrum: k = 24, largest real part, tolerance 1e-4, t = 20, median of points 1..$((POINTS - 1)); $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| model | d | memaudit s/spectrum | products memaudit : peer | vs dense (max dist / max\|λ\|) | found by both (of memaudit's), max diff | peer s | memaudit / peer | memaudit before s | memaudit / before | peak MiB memaudit : peer | early cond/s memaudit | early cond/s peer | early memaudit / peer (batched) | audit of 16 samples, s | server peak MiB |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
