"""Scoring a solver on a dataset: per-sample PSNR / SSIM / NMSE, optionally for every iterate.

Measurements are simulated with a fixed generator, so every call on the same data sees the same
noise and physics and numbers are comparable across epochs and runs.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from .. import metrics
from ..operators.fft import complex_abs
from .losses import LOSSES
from ..operators.likelihood import back_projection

EVAL_SEED = 2_024


def magnitude(x: torch.Tensor) -> torch.Tensor:
    """What metrics see: |x| for 2-channel complex images, x itself otherwise."""
    return complex_abs(x) if x.shape[1] == 2 else x


def score_batch(estimate: torch.Tensor, target: torch.Tensor, data_range: float | None = None) -> dict[str, torch.Tensor]:
    """Per-sample metrics of a batch on magnitude images: {"psnr", "ssim", "nmse"} -> (B,) tensors.

    ``data_range`` None uses each target's max (fastMRI's convention).
    """
    est, ref = magnitude(estimate.detach()).cpu(), magnitude(target).cpu()
    return {
        "psnr": metrics.psnr(est, ref, data_range=data_range, reduction="none"),
        "ssim": metrics.ssim(est, ref, data_range=data_range, reduction="none"),
        "nmse": metrics.nmse(est, ref, reduction="none"),
    }


@torch.no_grad()
def score_dataset(solver, dataset: Dataset, measurement, device: torch.device, batch_size: int = 16,
                  steps: int | None = None, every_iterate: bool = False, seed: int = EVAL_SEED,
                  data_range: float | None = None, loss: str | None = None) -> dict:
    """Run the solver over a dataset.

    Returns ``{"last": {metric: (N,) tensor}, "iterates": {metric: (T, N) tensor} (if every_iterate),
    "adjoint": {metric: (N,)}}`` where ``adjoint`` scores ``A^T y`` as a reference point. With
    ``loss`` (a training loss name), ``"loss"`` holds that loss of the last iterate, averaged over
    the samples (a float).
    """
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    was_training = solver.training
    solver.eval()
    last, adjoint, per_iter = [], [], []
    loss_sum, count = 0.0, 0
    for x in loader:
        x = x.to(device)
        y, op, sigma = measurement(x, generator)
        iterates = solver(y, op, sigma=sigma, steps=steps)
        last.append(score_batch(iterates[-1], x, data_range))
        if loss is not None:
            loss_sum += float(LOSSES[loss](iterates[-1].float(), x)) * x.shape[0]
            count += x.shape[0]
        adjoint.append(score_batch(back_projection(op, y), x, data_range))
        if every_iterate:
            per_iter.append([score_batch(it, x, data_range) for it in iterates])
    solver.train(was_training)
    keys = ("psnr", "ssim", "nmse")
    out = {
        "last": {k: torch.cat([b[k] for b in last]) for k in keys},
        "adjoint": {k: torch.cat([b[k] for b in adjoint]) for k in keys},
    }
    if loss is not None:
        out["loss"] = loss_sum / max(1, count)
    if every_iterate:
        n_steps = len(per_iter[0])
        out["iterates"] = {k: torch.stack([torch.cat([b[t][k] for b in per_iter]) for t in range(n_steps)]) for k in keys}
    return out


def validate(solver, dataset: Dataset, measurement, config: dict, device: torch.device) -> dict[str, float]:
    """Mean PSNR / SSIM / NMSE and the training loss (``loss``) of the last iterate on the validation set."""
    scores = score_dataset(solver, dataset, measurement, device, batch_size=config["train"]["val_batch_size"],
                           data_range=config["data"]["data_range"], loss=config["loss"]["name"])
    return {**{k: float(v.mean()) for k, v in scores["last"].items()}, "loss": scores["loss"]}
