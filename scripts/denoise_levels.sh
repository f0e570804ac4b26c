#!/usr/bin/env bash
# One denoising RIM over sigma 15-50 against one RIM per noise level (the RIM paper trained one
# per level), everything else equal: the stage-1 config of the shipped-model candidate
# (configs/pretrained/denoise_rim.yaml, the full-resolution cell on the photographs) with
# train.max_steps=STEPS (the warm-up, STEPS / 5, and cosine schedule end there) and either its sigma range or
# one fixed sigma. Two trainings at a time, one per core; then every run is scored at sigma 15,
# 25 and 50 on the same 256 patches of the held-out test photographs (scripts/operator_table.py).
#   bash scripts/denoise_levels.sh [STEPS]        (default 300, the measured table; runs/denoise_levels/, docs/benchmarks/rim_denoise_sigma15_50.*)
set -euo pipefail
L2I=${L2I:-l2i}
PYTHON=${PYTHON:-python}
STEPS=${1:-300}
RUNS=runs/denoise_levels
mkdir -p "$RUNS"
train() {  # NAME [--set ...]
  local name=$1; shift
  [ -f "$RUNS/$name/model.safetensors" ] && return 0
  OMP_NUM_THREADS=1 $L2I train configs/pretrained/denoise_rim.yaml --out "$RUNS/$name" \
    --set train.max_steps="$STEPS" --set train.schedule.warmup_steps=$((STEPS / 5)) --set train.val_every=$((STEPS / 2)) "$@" > "$RUNS/$name.log" 2>&1
}
train one_rim &
train rim_s15 --set operator.noise_sigma=0.058823529411764705 &
wait
train rim_s25 --set operator.noise_sigma=0.09803921568627451 &
train rim_s50 --set operator.noise_sigma=0.19607843137254902 &
wait
OMP_NUM_THREADS=2 $PYTHON scripts/operator_table.py --operators configs/pretrained/denoise_rim.yaml --set operator.name=mixture \
  --set 'operator.mixture=[{label: s15, name: denoising, noise_sigma: 0.058823529411764705}, {label: s25, name: denoising, noise_sigma: 0.09803921568627451}, {label: s50, name: denoising, noise_sigma: 0.19607843137254902}]' \
  one_rim=$RUNS/one_rim rim_s15=$RUNS/rim_s15 rim_s25=$RUNS/rim_s25 rim_s50=$RUNS/rim_s50 \
  --samples 256 --out docs/benchmarks/rim_denoise_sigma15_50
