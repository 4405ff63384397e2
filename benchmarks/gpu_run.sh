#!/usr/bin/env bash
# Every GPU check and timing, in priority order under one time budget, for a lent CUDA machine
# whose python3 already has torch. The other dependencies travel as wheels in .whl/
# (`bash scripts/gpu_wheels.sh` here first) and are installed under /tmp/site.
#
#   OUT=gpu_out BUDGET=540 bash benchmarks/gpu_run.sh        # as many steps as 540 s allow
#   OUT=gpu_out STEPS="tests published_scale" bash benchmarks/gpu_run.sh   # only these, in this order
#
# Steps, most important first; each runs under its own time limit, cut to what is left of
# BUDGET (seconds, default 540), and is skipped when less than its minimum is left. The last
# lines say which steps did not run and give the STEPS= for the next call.
#   wholebrain_clinical   benchmarks/wholebrain.py --device cuda on the clinical brain phantom:
#                         predict, predict in bfloat16, DIPY CSD with joblib on every core
#   fit                   the same volume: `shdeconv fit` at its defaults, end to end, scored
#   tests                 tests/cuda: predict GPU == CPU, fit and train --amp lower the loss,
#                         torchrun with one rank per GPU trains through nccl
#   wholebrain_multishell the HCP-like brain: predict, predict in bfloat16, --overlap 0.125
#   published_scale       layer and U-Net at published scale (with REF=DIR, a copy of the
#                         authors' conv_benchmark folder, their code is timed beside ours),
#                         float32, then every arm in bfloat16 (8^3 only)
#   predict_batch         tiles per pass on the GPU
#   train_speed           training steps per second, float32 vs --amp
# Everything goes to $OUT/run.log; the tables to $OUT/*.md and $OUT/*.json.
set -u
START=$SECONDS
OUT=${OUT:-gpu_out}
BUDGET=${BUDGET:-540}
ALL="wholebrain_clinical fit tests wholebrain_multishell published_scale predict_batch train_speed"
STEPS=${STEPS:-$ALL}
for s in $STEPS; do
  [[ " $ALL " == *" $s "* ]] || { echo "unknown step $s (steps: $ALL)" >&2; exit 2; }
done
mkdir -p "$OUT"
LOG=$OUT/run.log
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
WB=/tmp/wb

left() { echo $((BUDGET - (SECONDS - START))); }

run() {  # run NAME LIMIT_S COMMAND...: one command under min(LIMIT_S, what is left)
  local name=$1 limit=$2 t0=$SECONDS rest
  shift 2
  rest=$(left)
  ((limit > rest)) && limit=$rest
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  echo "== $name: exit $? after $((SECONDS - t0)) s" | tee -a "$LOG"
}

wholebrain() {  # wholebrain SCHEME METHODS NAME [more arguments]
  local scheme=$1 methods=$2 name=$3
  shift 3
  "$PY" benchmarks/wholebrain.py --device cuda --schemes "$scheme" --methods "$methods" -o "$WB" \
    --markdown "$OUT/wholebrain_gpu_$name.md" "$@" && cp "$WB/results.json" "$OUT/wholebrain_gpu_$name.json"
}

step() {  # step NAME: the commands of one step
  case $1 in
    wholebrain_clinical) run "$1" 200 wholebrain clinical predict,predict-bf16,csd-parallel clinical ;;
    fit) run "$1" 400 wholebrain clinical fit clinical_fit --score ;;
    tests) run "$1" 160 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/cuda -rA ;;
    wholebrain_multishell)
      run "$1" 170 wholebrain multishell predict,predict-bf16,predict-overlap0.125 multishell ;;
    published_scale)
      run "$1" 150 "$PY" benchmarks/published_scale.py --device cuda --reps 10 ${REF:+--reference "$REF"} \
        --markdown "$OUT/published_scale_gpu.md"
      run "$1"_bf16 90 "$PY" benchmarks/published_scale.py --device cuda --reps 10 --dtype bfloat16 --patches 8 \
        ${REF:+--reference "$REF"} --markdown "$OUT/published_scale_bf16_gpu.md" ;;
    predict_batch) run "$1" 70 "$PY" benchmarks/predict_batch.py --device cuda --batches 16,64,256,1024 --repeats 2 \
      --markdown "$OUT/predict_batch_gpu.md" ;;
    train_speed) run "$1" 120 "$PY" benchmarks/train_speed.py --device cuda --batches 4,16 --steps 40 -o /tmp/ts \
      --markdown "$OUT/train_speed_gpu.md" ;;
  esac
}

minimum() {  # seconds a step needs to give a usable number
  case $1 in fit) echo 120 ;; wholebrain_*) echo 60 ;; *) echo 40 ;; esac
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee -a "$LOG"
run env 60 "$PY" -c "import torch, healpy, dipy, nibabel, isal, shdeconv; print(torch.__version__, \
torch.cuda.get_device_name(0), healpy.__version__, dipy.__version__, nibabel.__version__, shdeconv.__file__)"
skipped=""
for s in $STEPS; do
  if (($(left) < $(minimum "$s"))); then
    skipped="$skipped $s"
    continue
  fi
  step "$s"
done
grep -E "passed|failed|error" "$LOG" | tail -5
cat "$OUT"/*.md 2>/dev/null
echo "== used $((SECONDS - START)) of ${BUDGET} s"
if [[ -n $skipped ]]; then
  echo "== not run for lack of time:$skipped"
  echo "== next call: STEPS=\"${skipped# }\" bash benchmarks/gpu_run.sh"
fi
