"""Reproduce the flow-unfolding paper's Tables I-IV (Wei et al. 2021, deep unfolding with
normalizing-flow priors) at laptop scale: ``python projects/flow_unfolding2021/run.py``.

Tables (``--only`` picks some, ``--list`` shows their steps, ``--dry-run`` prints them):

- ``tables``: pre-trains the GLOW prior by likelihood (6 minutes) and the ResNet / U-Net proxes
  as denoisers; per task (denoise, inpaint, deblur) trains, for 2.5 minutes each, the ResNet and
  U-Net proxes (also from the pre-trained denoisers for inpaint and deblur), plug-and-play GLOW
  (frozen prior, only mu and lambda trained) and the GLOW prox (proposed); then scores all of
  them in distribution, on out-of-distribution measurements and on ellipse phantoms (Tables I-IV);
- ``memory``: training memory of the unrolled GLOW solver with and without the invertible
  engine, at the configured depth (8 steps per level) and at twice that depth.

Trainings already in ``runs/`` are skipped; results go to ``projects/flow_unfolding2021/results/``.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from reproduce import Step, main, train  # noqa: E402

HERE = "projects/flow_unfolding2021"
CONFIGS = f"{HERE}/configs"
MINUTES = "train.time_limit_minutes=2.5"
RESNET = "prox: resnet, folds: 4, init: measurement, step_init: 0.5, scalar_lr: 0.01, prox_params: {features: 64}"
UNET = "prox: unet, folds: 4, init: measurement, step_init: 0.5, scalar_lr: 0.01"


def _task(task: str) -> list[Step]:
    """Every method of one task (denoise, inpaint, deblur), each trained for 2.5 minutes."""
    config = f"{CONFIGS}/flow_{task}.yaml"
    steps = [train(config, f"runs/flow_{task}_glow", MINUTES),
             train(config, f"runs/flow_{task}_pnp", MINUTES, "solver.params.freeze_prox=true"),
             train(config, f"runs/flow_{task}_resnet", MINUTES, f"solver.params={{{RESNET}}}", "train.optimizer.lr=0.001"),
             train(config, f"runs/flow_{task}_unet", MINUTES, f"solver.params={{{UNET}}}", "train.optimizer.lr=0.001")]
    if task != "denoise":  # the pre-trained denoisers start the other tasks' baselines
        steps += [train(config, f"runs/flow_{task}_resnet_pre", MINUTES, "train.optimizer.lr=0.001",
                        f"solver.params={{{RESNET}, pretrained: runs/flow_denoiser_resnet}}"),
                  train(config, f"runs/flow_{task}_unet_pre", MINUTES, "train.optimizer.lr=0.001",
                        f"solver.params={{{UNET}, pretrained: runs/flow_denoiser_unet}}")]
    return steps


GLOW = f"{CONFIGS}/flow_denoise.yaml"
UNTRAINED = "solver.params.pretrained=null"
MEMORY = (f"l2i bench memory --threads 1 --batches 4 32 --budget-mb 1024 --check-up-to 0 "
          f"--json {HERE}/results/flow_memory.json --configs "
          f'"glow-depth8/invertible={GLOW}:{UNTRAINED}" '
          f'"glow-depth8/autograd={GLOW}:{UNTRAINED},solver.params.prox_params.memory=autograd" '
          f'"glow-depth16/invertible={GLOW}:{UNTRAINED},solver.params.prox_params.depth=16" '
          f'"glow-depth16/autograd={GLOW}:{UNTRAINED},solver.params.prox_params.depth=16,'
          'solver.params.prox_params.memory=autograd"')

TABLES: dict[str, dict] = {
    "tables": {
        "paper": "Flow-unfolding (2021) Tables I-IV: GLOW prox vs ResNet / U-Net prox, plug-and-play, out of distribution",
        "steps": [train(f"{CONFIGS}/flow_prior.yaml", "runs/flow_prior", "train.time_limit_minutes=6"),
                  train(f"{CONFIGS}/flow_denoiser.yaml", "runs/flow_denoiser_resnet", MINUTES),
                  train(f"{CONFIGS}/flow_denoiser.yaml", "runs/flow_denoiser_unet", MINUTES,
                        "solver.params={prox: unet, folds: 1, init: measurement, learn_step: false}")]
        + [step for task in ("denoise", "inpaint", "deblur") for step in _task(task)]
        + [Step(f"python {HERE}/flow_tables.py --out {HERE}/results")],
    },
    "memory": {
        "paper": "Training memory of the unrolled GLOW solver: invertible engine vs autograd, depth 8 and 16",
        "steps": [Step(MEMORY)],
    },
}

if __name__ == "__main__":
    sys.exit(main(TABLES, __doc__.splitlines()[0]))
