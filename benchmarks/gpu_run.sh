#!/usr/bin/env bash
# Every GPU check and timing in one call, for a lent CUDA machine whose python3 already has
# torch (the wheels of the other dependencies travel in .whl/, see the README's GPU section).
#
#   OUT=gpu_out bash benchmarks/gpu_run.sh            # every step
#   OUT=gpu_out STEPS="wholebrain" bash benchmarks/gpu_run.sh   # some of: tests train_speed predict_batch wholebrain fit published_scale
#
# Steps, each under its own time limit so that one slow step cannot eat the others:
#   1. the CUDA tests (tests/cuda: predict GPU == CPU, fit and train --amp lower the loss,
#      torchrun with one rank per GPU trains through nccl);
#   2. benchmarks/train_speed.py --device cuda (training steps per second, float32 vs --amp);
#   3. benchmarks/predict_batch.py --device cuda (tiles per pass on the GPU);
#   4. benchmarks/wholebrain.py --device cuda on the clinical volume (predict at both overlaps and
#      in bfloat16, DIPY CSD with joblib on every core of that machine) and the HCP-like one
#      (predict, also in bfloat16);
#   5. benchmarks/direct_speed.py --device cuda: a whole-brain `fit` (direct, 300 steps, 342k voxels);
#   6. benchmarks/published_scale.py --device cuda (layer and U-Net at published scale; with
#      REF=DIR, a copy of the authors' conv_benchmark folder, their code is timed beside ours),
#      in float32 and then with every arm in bfloat16 (8^3 only).
# Everything goes to $OUT/run.log; the tables to $OUT/*.md and $OUT/*.json.
set -u
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
if compgen -G ".whl/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
LOG=$OUT/run.log

STEPS=${STEPS:-tests train_speed predict_batch wholebrain fit published_scale}
want() { [[ " $STEPS " == *" $1 "* ]]; }

step() {  # step NAME LIMIT_S COMMAND...
  local name=$1 limit=$2 t0=$SECONDS
  shift 2
  echo "== $name (limit ${limit}s)" | tee -a "$LOG"
  timeout "$limit" "$@" >>"$LOG" 2>&1
  echo "== $name: exit $? after $((SECONDS - t0)) s" | tee -a "$LOG"
}

nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv | tee -a "$LOG"
step env 40 "$PY" -c "import torch, healpy, dipy, nibabel, shdeconv; print(torch.__version__, \
torch.cuda.get_device_name(0), healpy.__version__, dipy.__version__, nibabel.__version__, shdeconv.__file__)"
want tests && step tests 160 "$PY" -m pytest -q -p no:cacheprovider -m cuda tests/cuda -rA
want train_speed && step train_speed 120 "$PY" benchmarks/train_speed.py --device cuda --batches 4,16 --steps 40 \
  -o /tmp/ts --markdown "$OUT/train_speed_gpu.md"
want predict_batch && step predict_batch 70 "$PY" benchmarks/predict_batch.py --device cuda --batches 16,64,256,1024 --repeats 2 \
  --markdown "$OUT/predict_batch_gpu.md"
if want wholebrain; then
  step wholebrain_clinical 220 "$PY" benchmarks/wholebrain.py --device cuda --schemes clinical \
    --methods predict,predict-bf16,predict-overlap0.125,csd-parallel -o /tmp/wb --markdown "$OUT/wholebrain_gpu_clinical.md"
  cp /tmp/wb/results.json "$OUT/wholebrain_gpu_clinical.json" 2>/dev/null
  step wholebrain_multishell 170 "$PY" benchmarks/wholebrain.py --device cuda --schemes multishell \
    --methods predict,predict-bf16,predict-overlap0.125 -o /tmp/wb --markdown "$OUT/wholebrain_gpu_multishell.md"
  cp /tmp/wb/results.json "$OUT/wholebrain_gpu_multishell.json" 2>/dev/null
fi
want fit && step fit 300 "$PY" benchmarks/direct_speed.py --device cuda --shape 90,108,90 --iterations 300 \
  --rounds 1 --arms blocked -o /tmp/ds --markdown "$OUT/direct_speed_gpu.md"
want published_scale && step published_scale 150 "$PY" benchmarks/published_scale.py --device cuda --reps 10 \
  ${REF:+--reference "$REF"} --markdown "$OUT/published_scale_gpu.md"
want published_scale && step published_scale_bf16 90 "$PY" benchmarks/published_scale.py --device cuda --reps 10 \
  --dtype bfloat16 --patches 8 ${REF:+--reference "$REF"} --markdown "$OUT/published_scale_bf16_gpu.md"
grep -E "passed|failed|error" "$LOG" | tail -5
cat "$OUT"/*.md 2>/dev/null
