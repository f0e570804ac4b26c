"""Reproduce the LUSER paper's Tables 2-3 (Guan, Jin, Romberg & Davenport 2022, loop-unrolled shallow
equilibrium regulariser) at laptop scale: ``python projects/luser2022/run.py``.

Tables (``--only`` picks some, ``--list`` shows their steps, ``--dry-run`` prints them):

- ``table2``: LU-DnCNN, DEQ4IP, LUSER-SW and LUSER-DW (``*_aux``: the auxiliary loss on every
  fold) trained for 3 minutes each on deblurring, sparse-view CT and 4x / 8x MRI, scored against
  the adjoint / zero-filled input, FBP (CT) and TV on the same held-out test data;
- ``table3``: training memory per sample and the largest batch in a 1 GB budget of every model
  (``l2i bench memory --configs``), then both tables are written together.

Trainings already in ``runs/`` are skipped; results go to ``projects/luser2022/results/``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reproduce import Step, main, train  # noqa: E402

HERE = "projects/luser2022"
TASKS = ("deblur", "ct", "mri", "mri8")
MODELS = ("lu_dncnn", "deq4ip", "luser_sw", "luser_dw")
# The auxiliary-loss variants trained for the table (not every task has all of them).
AUX = {"deblur": ("lu_dncnn_aux", "luser_sw_aux", "luser_dw_aux"), "ct": (),
       "mri": ("lu_dncnn_aux", "luser_sw_aux", "luser_dw_aux"), "mri8": ()}


def _train(task: str, model: str) -> Step:
    """One model of one task for 3 minutes; ``mri8`` is the MRI config at 8x, ``*_aux`` scores every fold."""
    base = model.removesuffix("_aux")
    sets = ["train.time_limit_minutes=3"]
    if task == "mri8":
        sets += ["operator.acceleration=8", "operator.center_fraction=0.04"]
    if model != base:
        sets.append("loss.weights=all")
    return train(f"{HERE}/configs/deq_{task.removesuffix('8')}_{base}.yaml", f"runs/deq_{task}_{model}", *sets)


MEMORY = ("l2i bench memory --configs "
          + " ".join(f"{task}/{model}={HERE}/configs/deq_{task}_{model}.yaml" for task in ("deblur", "ct", "mri")
                     for model in MODELS)
          + f" --batches 1 4 --budget-mb 1024 --threads 1 --json {HERE}/results/deq_memory.json")

TABLES: dict[str, dict] = {
    "table2": {
        "paper": "LUSER (2022) Table 2: LU-DnCNN, DEQ4IP, LUSER-SW/DW reconstruction quality",
        "steps": [_train(task, model) for task in TASKS for model in MODELS + AUX[task]],
    },
    "table3": {
        "paper": "LUSER (2022) Table 3: training memory, then both tables written",
        "steps": [Step(MEMORY), Step(f"python {HERE}/luser_tables.py --tasks {' '.join(TASKS)} --out {HERE}/results")],
    },
}

if __name__ == "__main__":
    sys.exit(main(TABLES, __doc__.splitlines()[0]))
