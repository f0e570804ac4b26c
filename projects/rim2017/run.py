"""Reproduce the RIM paper's tables (Putzky & Welling 2017) at laptop scale: ``python projects/rim2017/run.py``.

Tables (``--only`` picks some, ``--list`` shows their steps, ``--dry-run`` prints them):

- ``figure2``: Figure 2, random projections, RIM vs FFN vs GDN over 40 iterations (p = 2 and 4);
  each run folder gets a ``wall.json`` with the exact training and evaluation commands and times;
- ``denoising``: Tables 1-2, denoising at sigma 15, 25, 50 (grey), 25 (quantised, RGB), and the
  Figure-2 RIM applied unchanged (RIM-3task); needs ``figure2``'s p = 2 RIM;
- ``superres``: Table 3, super-resolution x2, x3, x4 against MATLAB's bicubic.

Trainings already in ``runs/`` are skipped. Results go to ``projects/rim2017/results/``; the
README shows the tables.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reproduce import Step, main, train  # noqa: E402

HERE = "projects/rim2017"
RESULTS = f"{HERE}/results"


def _figure2_runs(p: int) -> list[Step]:
    """Train and evaluate (40 iterations, 1024 test patches) the RIM, FFN and GDN of one reduction ``p``."""
    steps = []
    for variant in ("rim", "ffn", "gdn"):
        run = f"runs/fig2_gaussian_p{p}_{variant}"
        steps.append(train(f"{HERE}/configs/rim_random_projections_gaussian_p{p}.yaml", run,
                           f"solver.params.variant={variant}", record="train"))
        steps.append(Step(f"l2i eval {run} --steps 40 --samples 1024 --out {run}/eval_T40.json",
                          done=f"{run}/eval_T40.json", record=(f"{run}/wall.json", "eval")))
    return steps


FIGURE2_RUNS = " ".join(f"runs/fig2_gaussian_p{p}_{v}" for p in (2, 4) for v in ("rim", "ffn", "gdn"))
DENOISING = ("sigma15", "sigma25", "sigma50", "rgb_sigma25")

TABLES: dict[str, dict] = {
    "figure2": {
        "paper": "RIM (2017) Figure 2: random projections, RIM vs FFN vs GDN",
        "steps": _figure2_runs(2) + _figure2_runs(4) + [
            Step(f"python {HERE}/rim_figure2.py --runs {FIGURE2_RUNS} --out {RESULTS}/rim_figure2 --tikhonov "
                 f"--notes {RESULTS}/rim_figure2.notes.md")],
    },
    "denoising": {
        "paper": "RIM (2017) Tables 1-2: denoising",
        "steps": [train(f"{HERE}/configs/rim_denoise_{s}.yaml", f"runs/rim_dn_{s}", "train.time_limit_minutes=4",
                        "train.epochs=200") for s in DENOISING] + [
            Step(f'python {HERE}/rim_denoising.py --setting "grey, sigma=15/255=runs/rim_dn_sigma15" '
                 '--setting "grey, sigma=25/255=runs/rim_dn_sigma25" --setting "grey, sigma=50/255=runs/rim_dn_sigma50" '
                 '--setting "grey, sigma=25/255, 8-bit quantised (sigma-25 model, not retrained)=runs/rim_dn_sigma25:quantize" '
                 '--setting "RGB, sigma=25/255=runs/rim_dn_rgb_sigma25" --transfer runs/fig2_gaussian_p2_rim '
                 f'--out {RESULTS}/rim_denoising --notes {RESULTS}/rim_denoising.notes.md')],
    },
    "superres": {
        "paper": "RIM (2017) Table 3: super-resolution x2, x3, x4 against bicubic",
        "steps": [train(f"{HERE}/configs/rim_superres_x{f}.yaml", f"runs/rim_sr_x{f}") for f in (2, 3, 4)] + [
            Step(f"python {HERE}/rim_superres.py runs/rim_sr_x2 runs/rim_sr_x3 runs/rim_sr_x4 --out {RESULTS}/rim_superres")],
    },
}

if __name__ == "__main__":
    sys.exit(main(TABLES, __doc__.splitlines()[0]))
