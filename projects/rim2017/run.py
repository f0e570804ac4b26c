#!/usr/bin/env bash
# RIM paper Figure 2 at laptop scale: train RIM, FFN and GDN one after another on one thread,
# score every iterate for 40 iterations on the test photographs, then write the report
# (docs/benchmarks/rim_figure2.{json,md,png}). Run from the repository root:
#   bash docs/benchmarks/rim_figure2.sh [CONFIG] [RUN_PREFIX]
# Each run folder gets a wall.json with the exact commands and their wall-clock times.
set -euo pipefail
CONFIG=${1:-configs/rim_random_projections_gaussian_p2.yaml}
PREFIX=${2:-runs/fig2_gaussian_p2}
L2I=${L2I:-.venv/bin/l2i}
PY=${PY:-.venv/bin/python}
SAMPLES=${SAMPLES:-1024}
OUT=${OUT:-docs/benchmarks/rim_figure2}
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1   # one core; the other stays free

for variant in rim ffn gdn; do
  run="${PREFIX}_${variant}"
  [ -f "${run}/eval_T40.json" ] && continue  # trained and evaluated already
  train_cmd="OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 l2i train ${CONFIG} --out ${run} --set solver.params.variant=${variant}"
  eval_cmd="OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 l2i eval ${run} --steps 40 --samples ${SAMPLES} --out ${run}/eval_T40.json"
  start=$(date +%s.%N)
  "$L2I" train "$CONFIG" --out "$run" --set "solver.params.variant=${variant}"
  mid=$(date +%s.%N)
  "$L2I" eval "$run" --steps 40 --samples "$SAMPLES" --out "$run/eval_T40.json"
  end=$(date +%s.%N)
  TRAIN_CMD="$train_cmd" EVAL_CMD="$eval_cmd" "$PY" - "$run" "$start" "$mid" "$end" <<'PYEOF'
import json, os, sys
run, start, mid, end = sys.argv[1], *map(float, sys.argv[2:])
json.dump({"train_command": os.environ["TRAIN_CMD"], "train_wall_s": mid - start,
           "eval_command": os.environ["EVAL_CMD"], "eval_wall_s": end - mid},
          open(f"{run}/wall.json", "w"), indent=2)
PYEOF
done
"$PY" -m learn2invert.bench.rim_figure2 --runs "${PREFIX}_rim" "${PREFIX}_ffn" "${PREFIX}_gdn" --out "$OUT" --tikhonov ${NOTES:+--notes "$NOTES"}
