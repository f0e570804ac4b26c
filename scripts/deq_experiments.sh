#!/usr/bin/env bash
# The LUSER table of docs/BENCHMARKS.md (paper Table 2 at laptop scale): LU-DnCNN, DEQ4IP,
# LUSER-SW and LUSER-DW trained for the same wall-clock budget each on deblurring, sparse-view CT
# and 4x MRI, then compared with the adjoint / zero-filled input, FBP (CT) and TV on the same
# held-out test data.
#   MINUTES=3 bash scripts/deq_experiments.sh
# TASKS="deblur ct mri" and MODELS="lu_dncnn deq4ip luser_sw luser_dw" select a subset.
set -euo pipefail
MINUTES=${MINUTES:-3}
TASKS=${TASKS:-"deblur ct mri"}
MODELS=${MODELS:-"lu_dncnn deq4ip luser_sw luser_dw"}
L2I=${L2I:-.venv/bin/l2i}
for task in $TASKS; do
  runs=()
  for model in $MODELS; do
    [ -f "runs/deq_${task}_${model}/model.safetensors" ] || \
      $L2I train "configs/deq_${task}_${model}.yaml" --out "runs/deq_${task}_${model}" \
        --set "train.time_limit_minutes=${MINUTES}"
    runs+=("${model}=runs/deq_${task}_${model}")
  done
  $L2I bench compare "${runs[@]}" --out "docs/benchmarks/deq_${task}" --samples 64
done
