#!/usr/bin/env bash
# The LUSER tables of docs/BENCHMARKS.md (paper Tables 2 and 3 at laptop scale): LU-DnCNN, DEQ4IP,
# LUSER-SW and LUSER-DW trained for the same wall-clock budget each on deblurring, sparse-view CT
# and 4x / 8x MRI; scored against the adjoint / zero-filled input, FBP (CT) and TV on the same
# held-out test data (l2i bench luser); training memory per sample and the largest batch in a
# budget (l2i bench memory --configs).
#   MINUTES=3 bash scripts/deq_experiments.sh
# TASKS (deblur ct mri mri8) and MODELS (lu_dncnn deq4ip luser_sw luser_dw, and *_aux for the
# auxiliary loss on every fold) select a subset.
set -euo pipefail
MINUTES=${MINUTES:-3}
TASKS=${TASKS:-"deblur ct mri mri8"}
MODELS=${MODELS:-"lu_dncnn deq4ip luser_sw luser_dw"}
L2I=${L2I:-.venv/bin/l2i}
for task in $TASKS; do
  extra=()
  [ "$task" = mri8 ] && extra=(--set operator.acceleration=8 --set operator.center_fraction=0.04)
  for model in $MODELS; do
    base=${model%_aux}
    aux=()
    [ "$model" != "$base" ] && aux=(--set loss.weights=all)
    [ -f "runs/deq_${task}_${model}/model.safetensors" ] || \
      $L2I train "configs/deq_${task%8}_${base}.yaml" --out "runs/deq_${task}_${model}" \
        --set "train.time_limit_minutes=${MINUTES}" "${extra[@]}" "${aux[@]}"
  done
done
configs=()
for task in deblur ct mri; do
  for model in lu_dncnn deq4ip luser_sw luser_dw; do
    configs+=("${task}/${model}=configs/deq_${task}_${model}.yaml")
  done
done
$L2I bench memory --configs "${configs[@]}" --batches 1 4 --budget-mb 1024 --threads 1 --json docs/benchmarks/deq_memory.json
$L2I bench luser --tasks $TASKS --out docs/benchmarks
