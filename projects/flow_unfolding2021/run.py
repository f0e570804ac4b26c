#!/usr/bin/env bash
# The flow-unfolding tables of docs/BENCHMARKS.md (paper Tables I-IV at laptop scale).
# 1. pre-train the GLOW prior by likelihood and the ResNet / U-Net proxes as denoisers;
# 2. per task (denoise, inpaint, deblur) train, for the same wall-clock budget each: ResNet prox,
#    U-Net prox, both initialised from the pre-trained denoisers (inpaint, deblur), plug-and-play
#    GLOW (frozen prior, only mu and lambda trained) and the GLOW prox (proposed);
# 3. score all of them in distribution, on out-of-distribution measurements and on an
#    out-of-distribution image family (ellipse phantoms): scripts/flow_tables.sh.
#   MINUTES=2.5 bash scripts/flow_experiments.sh
set -euo pipefail
MINUTES=${MINUTES:-2.5}
PRIOR_MINUTES=${PRIOR_MINUTES:-6}
TASKS=${TASKS:-"denoise inpaint deblur"}
L2I=${L2I:-.venv/bin/l2i}
train() {  # train OUT CONFIG [--set ...]: skipped when OUT already holds a model
  local out=$1; shift
  [ -f "$out/model.safetensors" ] || $L2I train "$@" --out "$out"
}
train runs/flow_prior configs/flow_prior.yaml --set "train.time_limit_minutes=${PRIOR_MINUTES}"
train runs/flow_denoiser_resnet configs/flow_denoiser.yaml --set "train.time_limit_minutes=${MINUTES}"
train runs/flow_denoiser_unet configs/flow_denoiser.yaml --set "train.time_limit_minutes=${MINUTES}" \
  --set "solver.params={prox: unet, folds: 1, init: measurement, learn_step: false}"
RESNET="prox: resnet, folds: 4, init: measurement, step_init: 0.5, scalar_lr: 0.01, prox_params: {features: 64}"
UNET="prox: unet, folds: 4, init: measurement, step_init: 0.5, scalar_lr: 0.01"
for task in $TASKS; do
  cfg=configs/flow_${task}.yaml
  common=(--set "train.time_limit_minutes=${MINUTES}")
  train "runs/flow_${task}_glow" "$cfg" "${common[@]}"
  train "runs/flow_${task}_pnp" "$cfg" "${common[@]}" --set solver.params.freeze_prox=true
  train "runs/flow_${task}_resnet" "$cfg" "${common[@]}" --set "solver.params={${RESNET}}" --set train.optimizer.lr=0.001
  train "runs/flow_${task}_unet" "$cfg" "${common[@]}" --set "solver.params={${UNET}}" --set train.optimizer.lr=0.001
  if [ "$task" != denoise ]; then
    train "runs/flow_${task}_resnet_pre" "$cfg" "${common[@]}" --set train.optimizer.lr=0.001 \
      --set "solver.params={${RESNET}, pretrained: runs/flow_denoiser_resnet}"
    train "runs/flow_${task}_unet_pre" "$cfg" "${common[@]}" --set train.optimizer.lr=0.001 \
      --set "solver.params={${UNET}, pretrained: runs/flow_denoiser_unet}"
  fi
done
# Training memory of the unrolled GLOW solver with and without the invertible engine, at the
# configured depth (8 steps per level) and at twice that depth.
G=configs/flow_denoise.yaml
P="solver.params.pretrained=null"
$L2I bench memory --threads 1 --batches 4 32 --budget-mb 1024 --check-up-to 0 --json docs/benchmarks/flow_memory.json --configs \
  "glow-depth8/invertible=$G:$P" "glow-depth8/autograd=$G:$P,solver.params.prox_params.memory=autograd" \
  "glow-depth16/invertible=$G:$P,solver.params.prox_params.depth=16" \
  "glow-depth16/autograd=$G:$P,solver.params.prox_params.depth=16,solver.params.prox_params.memory=autograd"
