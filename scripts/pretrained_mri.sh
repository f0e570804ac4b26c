#!/usr/bin/env bash
# The shipped single-coil MRI models (learn2invert.pretrained): train each config in
# configs/pretrained/ to its step count (one run per core; a run that exists is resumed, a
# finished one is left as it is), score them against zero-filled and TV at 4x and 8x on the
# held-out test slices and at 4x on pydicom's real MR slice (TV weight chosen on the validation
# slices), and export each run's best weights into the package with its model card.
#   bash scripts/pretrained_mri.sh            # MODELS="irim rim admm unet" by default
set -euo pipefail
L2I=${L2I:-.venv/bin/l2i}
MODELS=${MODELS:-"irim rim admm unet"}
OUT=${OUT:-docs/benchmarks/pretrained}
mkdir -p "$OUT"
for m in $MODELS; do
  run=runs/pretrained/mri_$m
  if [ -f "$run/train_state.safetensors" ]; then
    OMP_NUM_THREADS=1 $L2I train --resume "$run" > "$run.log" 2>&1 &
  else
    mkdir -p runs/pretrained
    OMP_NUM_THREADS=1 $L2I train "configs/pretrained/mri_$m.yaml" --out "$run" > "$run.log" 2>&1 &
  fi
done
wait
runs=""
for m in $MODELS; do runs="$runs $m=runs/pretrained/mri_$m"; done
$L2I bench curves $runs --out "$OUT/mri_curves" --title "shipped MRI models: validation PSNR (2x-8x masks)"
# TV weights from 1.25e-4 to 8e-3 (factors of 2); one comparison per core.
TV_GRID="0.000125 0.00025 0.0005 0.001 0.002 0.004 0.008"
for acc in 4 8; do
  OMP_NUM_THREADS=1 $L2I bench compare $runs --set "operator.acceleration=$acc" --tv-grid $TV_GRID \
    --out "$OUT/mri_test_${acc}x" > "$OUT/mri_test_${acc}x.log" 2>&1 &
done
wait
$L2I bench compare $runs --set operator.acceleration=4 --test-set data.name=dicom --tv-grid $TV_GRID \
  --test-set data.root=pydicom:MR_small.dcm --test-set "data.params={repeats: 16}" --out "$OUT/mri_real_4x"
for m in $MODELS; do
  $L2I pretrained export "runs/pretrained/mri_$m" "mri_$m" --method "$m" \
    --task "single-coil MRI, 64x64 complex images, random 1D Cartesian masks at any acceleration from 2x to 8x" \
    --data "BrainSliceMix: axial/coronal/sagittal MNI152 slices with random scale, rotation, elastic deformation, gamma, bias field and smooth phase" \
    --command "OMP_NUM_THREADS=1 l2i train configs/pretrained/mri_$m.yaml --out runs/pretrained/mri_$m" \
    --metrics "test slices 4x=$OUT/mri_test_4x.json" "test slices 8x=$OUT/mri_test_8x.json" "real MR 4x=$OUT/mri_real_4x.json"
done
