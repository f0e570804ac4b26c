"""Scoring a solver on a dataset: per-sample PSNR / SSIM / NMSE, optionally for every iterate.

Measurements are simulated with a fixed generator, so every call on the same data sees the same
noise and physics and numbers are comparable across epochs and runs.
"""
from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from .. import metrics
from ..data.items import split_item
from ..operators.fft import complex_abs
from ..operators.likelihood import back_projection
from ..registry import LOSSES

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


class VolumeScores:
    """fastMRI's volume-wise metrics of slices that arrive in volume order, one volume held at a time.

    For each volume (a run of consecutive slices with the same id): PSNR with the volume's peak
    (the max of its target slices), SSIM per slice with that same peak, averaged over the slices,
    and NMSE over the whole volume (``fastmri.evaluate``); ``data_range`` replaces the peak when
    given. Feed ``(B, C, H, W)`` magnitude batches with :meth:`add`, then :meth:`result`.
    """

    def __init__(self, volume_ids, data_range: float | None = None) -> None:
        self.volume_ids, self.data_range = list(volume_ids), data_range
        self.position, self.current = 0, None
        self.slices: dict[str, list[torch.Tensor]] = {"last": [], "adjoint": [], "target": []}
        self.scores = {k: {"psnr": [], "ssim": [], "nmse": []} for k in ("last", "adjoint")}
        self.ids: list = []

    def add(self, estimate: torch.Tensor, adjoint: torch.Tensor, target: torch.Tensor) -> None:
        """Magnitudes ``(B, C, H, W)`` of the next ``B`` slices of the dataset."""
        for k in range(target.shape[0]):
            volume = self.volume_ids[self.position]
            self.position += 1
            if volume != self.current:
                self._flush()
                self.current = volume
            for name, batch in (("last", estimate), ("adjoint", adjoint), ("target", target)):
                self.slices[name].append(batch[k].float().cpu())

    def _flush(self) -> None:
        if not self.slices["target"]:
            return
        target = torch.stack(self.slices["target"]).movedim(0, 1)[None]  # (1, C, slices, H, W)
        peak = self.data_range if self.data_range is not None else float(target.max())
        for name in ("last", "adjoint"):
            volume = torch.stack(self.slices[name]).movedim(0, 1)[None]
            self.scores[name]["psnr"].append(float(metrics.psnr(volume, target, data_range=peak)))
            self.scores[name]["ssim"].append(float(metrics.ssim(volume, target, data_range=peak)))
            self.scores[name]["nmse"].append(float(metrics.nmse(volume, target)))
        self.ids.append(self.current)
        self.slices = {"last": [], "adjoint": [], "target": []}

    def result(self) -> dict:
        """``{"last": {metric: (V,) tensor}, "adjoint": {...}, "ids": [volume ids]}``."""
        self._flush()
        out = {name: {k: torch.tensor(v, dtype=torch.float64) for k, v in block.items()}
               for name, block in self.scores.items()}
        return {**out, "ids": list(self.ids)}


@torch.no_grad()
def score_dataset(solver, dataset: Dataset, measurement, device: torch.device, batch_size: int = 16,
                  steps: int | None = None, every_iterate: bool = False, seed: int = EVAL_SEED,
                  data_range: float | None = None, loss: str | None = None, volume_ids=None) -> dict:
    """Run the solver over a dataset.

    Returns ``{"last": {metric: (N,) tensor}, "iterates": {metric: (T, N) tensor} (if every_iterate),
    "adjoint": {metric: (N,)}, "set_nmse": float}`` where ``adjoint`` scores ``A^T y`` as a reference
    point and ``set_nmse`` is the last iterate's NMSE over the whole set. With
    ``loss`` (a training loss name), ``"loss"`` holds that loss of the last iterate, averaged over
    the samples (a float). With ``volume_ids`` (one id per item, the slices of a volume
    consecutive, e.g. :attr:`~learn2invert.data.FastMRIImages.volume_ids`), ``"volumes"`` holds
    fastMRI's volume-wise metrics (:class:`VolumeScores`).
    """
    generator = torch.Generator().manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    was_training = solver.training
    solver.eval()
    last, adjoint, per_iter = [], [], []
    loss_sum, count = 0.0, 0
    squared_error, squared_norm = 0.0, 0.0  # over the whole set: one near-black image cannot dominate
    volumes = VolumeScores(volume_ids, data_range) if volume_ids is not None else None
    for item in loader:
        x, kspace = split_item(item)  # kspace: the items' own coil k-space (data.params.own_coils), else None
        x = x.to(device)
        if kspace is None:  # any (x, generator) callable measures plain images
            y, op, sigma = measurement(x, generator)
        else:
            y, op, sigma = measurement(x, generator, kspace=kspace.to(device))
        iterates = solver(y, op, sigma=sigma, steps=steps)
        last.append(score_batch(iterates[-1], x, data_range))
        est, ref = magnitude(iterates[-1].detach()), magnitude(x)
        squared_error += float((est.double() - ref.double()).pow(2).sum())
        squared_norm += float(ref.double().pow(2).sum())
        if loss is not None:
            loss_sum += float(LOSSES.get(loss)(iterates[-1].float(), x)) * x.shape[0]
            count += x.shape[0]
        x_adjoint = back_projection(op, y)
        adjoint.append(score_batch(x_adjoint, x, data_range))
        if volumes is not None:
            volumes.add(est, magnitude(x_adjoint), ref)
        if every_iterate:
            per_iter.append([score_batch(it, x, data_range) for it in iterates])
    solver.train(was_training)
    keys = ("psnr", "ssim", "nmse")
    out = {
        "last": {k: torch.cat([b[k] for b in last]) for k in keys},
        "adjoint": {k: torch.cat([b[k] for b in adjoint]) for k in keys},
    }
    out["set_nmse"] = squared_error / squared_norm if squared_norm > 0 else float("nan")
    if loss is not None:
        out["loss"] = loss_sum / max(1, count)
    if volumes is not None:
        out["volumes"] = volumes.result()
    if every_iterate:
        n_steps = len(per_iter[0])
        out["iterates"] = {k: torch.stack([torch.cat([b[t][k] for b in per_iter]) for t in range(n_steps)]) for k in keys}
    return out


def validate(solver, dataset: Dataset, measurement, config: dict, device: torch.device) -> dict[str, float]:
    """Mean PSNR / SSIM, the NMSE of the whole set and the training loss (``loss``) of the last iterate.

    The NMSE is ``sum ||x_hat - x||^2 / sum ||x||^2`` over the set (fastMRI computes it per
    volume): a mean of per-image NMSEs is dominated by any near-black image.

    An operator mixture (:class:`~learn2invert.operators.generator.OperatorMixture`) is validated on each of its
    operators separately, on the same images: ``psnr/LABEL``, ``ssim/LABEL``, ``nmse/LABEL`` and
    ``loss/LABEL`` per operator, and ``psnr``, ``ssim``, ``nmse``, ``loss`` the plain means over
    the operators (each counts once, whatever its training weight; the best weights are those
    of the lowest mean loss).
    """
    components = getattr(measurement, "components", None)
    if components:
        per_operator = {label: validate(solver, dataset, component, config, device)
                        for label, component in zip(measurement.labels, components)}
        keys = ("psnr", "ssim", "nmse", "loss")
        means = {k: sum(m[k] for m in per_operator.values()) / len(per_operator) for k in keys}
        return {**means, **{f"{k}/{label}": m[k] for label, m in per_operator.items() for k in keys}}
    scores = score_dataset(solver, dataset, measurement, device, batch_size=config["train"]["val_batch_size"],
                           data_range=config["data"]["data_range"], loss=config["loss"]["name"])
    return {"psnr": float(scores["last"]["psnr"].mean()), "ssim": float(scores["last"]["ssim"].mean()),
            "nmse": scores["set_nmse"], "loss": scores["loss"]}
