#!/usr/bin/env bash
# The MRI table of docs/BENCHMARKS.md: U-Net, RIM and i-RIM trained for the same wall-clock
# budget each at 4x (8% centre) and 8x (4% centre) on the embedded brain slices, then compared
# with zero-filled and TV on the same held-out test slices; plus a small 3D i-RIM.
#   MINUTES=7 bash scripts/mri_experiments.sh
set -euo pipefail
MINUTES=${MINUTES:-7}
SETTINGS=${SETTINGS:-"4:0.08 8:0.04"}  # acceleration:centre-fraction pairs
L2I=${L2I:-.venv/bin/l2i}
for setting in $SETTINGS; do
  acc=${setting%%:*}
  centre=${setting##*:}
  for model in irim rim unet; do
    [ -f "runs/mri_${model}_${acc}x/model.safetensors" ] || $L2I train "configs/mri_${model}_4x.yaml" --out "runs/mri_${model}_${acc}x" \
      --set train.epochs=1000 --set "train.time_limit_minutes=${MINUTES}" \
      --set "operator.acceleration=${acc}" --set "operator.center_fraction=${centre}"
  done
  $L2I bench compare "unet=runs/mri_unet_${acc}x" "rim=runs/mri_rim_${acc}x" "irim=runs/mri_irim_${acc}x" \
    --out "docs/benchmarks/mri_${acc}x" --tv-grid 0.0003 0.001 0.003 0.01 0.03
done
[ "${SKIP_3D:-0}" = 1 ] && exit 0
[ -f runs/mri_irim3d_4x/model.safetensors ] || \
  $L2I train configs/mri_irim3d_4x.yaml --out runs/mri_irim3d_4x --set train.time_limit_minutes=3
$L2I eval runs/mri_irim3d_4x --out docs/benchmarks/mri_irim3d_4x.json
