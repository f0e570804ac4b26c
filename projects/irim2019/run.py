"""Reproduce the i-RIM paper's single-coil MRI table (Putzky & Welling 2019) at laptop scale:
``python projects/irim2019/run.py``.

Tables (``--only`` picks some, ``--list`` shows their steps, ``--dry-run`` prints them):

- ``mri4x``: U-Net, RIM and i-RIM trained for the same wall-clock budget (7 minutes each) at 4x
  (8% centre) on the embedded brain slices, then the unrolled ADMM-Net under the same budget;
  all compared with zero-filled and TV on the same held-out test slices;
- ``mri8x``: the same three models at 8x (4% centre), 5 minutes each;
- ``irim3d``: a small 3D i-RIM (3 minutes), scored by ``l2i eval``.

The models are the library's general MRI configs (``configs/mri_*_4x.yaml``), with the
acceleration overridden for 8x. The memory-vs-depth table (the paper's Table 1) is a general
benchmark: ``l2i bench memory`` and ``l2i bench speed`` (docs/BENCHMARKS.md). Trainings already
in ``runs/`` are skipped; results go to ``projects/irim2019/results/``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reproduce import Step, main, train  # noqa: E402

RESULTS = "projects/irim2019/results"
TV_GRID = "--tv-grid 0.0003 0.001 0.003 0.01 0.03"


def _setting(acceleration: int, centre: float, minutes: int) -> list[Step]:
    """U-Net, RIM and i-RIM at one acceleration for ``minutes`` each, and their comparison."""
    runs = {model: f"runs/mri_{model}_{acceleration}x" for model in ("irim", "rim", "unet")}
    steps = [train(f"configs/mri_{model}_4x.yaml", run, "train.epochs=1000", f"train.time_limit_minutes={minutes}",
                   f"operator.acceleration={acceleration}", f"operator.center_fraction={centre}")
             for model, run in runs.items()]
    return steps + [Step(f"l2i bench compare unet={runs['unet']} rim={runs['rim']} irim={runs['irim']} "
                         f"--out {RESULTS}/mri_{acceleration}x {TV_GRID}")]


TABLES: dict[str, dict] = {
    "mri4x": {
        "paper": "i-RIM (2019) single-coil MRI table at 4x: U-Net, RIM, i-RIM, ADMM-Net, TV",
        "steps": _setting(4, 0.08, 7) + [
            train("configs/mri_admm_4x.yaml", "runs/mri_admm_4x", "train.epochs=1000", "train.time_limit_minutes=7"),
            Step("l2i bench compare unet=runs/mri_unet_4x rim=runs/mri_rim_4x irim=runs/mri_irim_4x admm=runs/mri_admm_4x "
                 f"--out {RESULTS}/mri_4x_admm {TV_GRID}")],
    },
    "mri8x": {
        "paper": "i-RIM (2019) single-coil MRI table at 8x: U-Net, RIM, i-RIM, TV",
        "steps": _setting(8, 0.04, 5),
    },
    "irim3d": {
        "paper": "3D i-RIM on 8x32x32 brain patches at 4x (the 3D path end to end)",
        "steps": [train("configs/mri_irim3d_4x.yaml", "runs/mri_irim3d_4x", "train.time_limit_minutes=3"),
                  Step(f"l2i eval runs/mri_irim3d_4x --out {RESULTS}/mri_irim3d_4x.json")],
    },
}

if __name__ == "__main__":
    sys.exit(main(TABLES, __doc__.splitlines()[0]))
