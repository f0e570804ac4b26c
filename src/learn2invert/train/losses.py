"""Training losses on the list of iterates a solver returns.

Each per-image loss maps (estimate, target) of shape (B, C, ...) to a scalar (batch mean).
Complex images (2 channels) are compared as they are (real and imaginary parts), except SSIM,
which is computed on magnitudes like the metrics. :func:`iterate_loss` weighs the iterates:
``"all"`` gives each iterate the same weight (the RIM paper, eq. 6), ``"last"`` scores only the
final one (the i-RIM paper).
"""
from __future__ import annotations

import torch

from ..metrics import _ssim_slices
from ..operators.fft import complex_abs
from ..registry import LOSSES


def mse_loss(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean((estimate - target) ** 2)


def l1_loss(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return torch.mean((estimate - target).abs())


def nmse_loss(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``||x_hat - x||^2 / ||x||^2``."""
    dims = tuple(range(1, target.dim()))
    return torch.mean(((estimate - target) ** 2).sum(dims) / (target**2).sum(dims).clamp_min(1e-12))


def psnr_loss(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Minus the mean per-image PSNR, up to a constant: the batch mean of ``10 log10(MSE_b)`` (dB).

    The benchmarks report the mean of per-image PSNRs, in which a flat image's small error counts
    as much as a textured image's large one; the MSE loss weighs images by their squared error
    and so neglects the flat ones. The peak only adds a constant per image, so it is left out.
    """
    dims = tuple(range(1, target.dim()))
    per_image = ((estimate - target) ** 2).mean(dims)
    return torch.mean(10.0 * torch.log10(per_image + 1e-10))


def ssim_loss(estimate: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``1 - SSIM`` (7x7 uniform window, data range = target max per sample), differentiable."""
    if target.shape[1] == 2:
        estimate, target = complex_abs(estimate), complex_abs(target)
    b, h, w = target.shape[0], target.shape[-2], target.shape[-1]
    data_range = target.reshape(b, -1).amax(dim=1).clamp_min(1e-12)
    per_sample = target[0].numel() // (h * w)
    values = _ssim_slices(estimate.reshape(-1, h, w), target.reshape(-1, h, w), data_range.repeat_interleave(per_sample))
    return 1.0 - values.mean()


def pixel_subsample_mask(target: torch.Tensor, fraction: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A random 0/1 mask ``(B, 1, *S)`` keeping each pixel with probability ``fraction`` (i-RIM paper, eq. 18).

    The same mask multiplies estimate and target, so only the kept pixels are scored: gradient
    noise that regularises training on large images. At least one pixel per sample is kept.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"loss subsample fraction must be in (0, 1], got {fraction}")
    shape = (target.shape[0], 1, *target.shape[2:])
    mask = (torch.rand(shape, generator=generator) < fraction).to(target.device)  # drawn on the CPU generator
    flat = mask.reshape(target.shape[0], -1)
    flat[flat.sum(1) == 0, 0] = True
    return mask.to(target.dtype)


def iterate_loss(iterates: list[torch.Tensor], target: torch.Tensor, name: str = "mse", weights: str = "all",
                 subsample: float = 0.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Loss over a solver's iterates: the mean of the per-iterate losses (``"all"``) or the last one.

    ``subsample`` > 0 scores a random fraction of the pixels (one mask per call, shared by all
    iterates); not with SSIM, whose windows need whole images.
    """
    fn = LOSSES.get(name)  # an unknown name lists the valid ones
    if weights not in ("all", "last"):
        raise ValueError(f"loss weights must be 'all' or 'last', got {weights!r}")
    if not iterates:
        raise ValueError("the solver returned no iterates")
    if subsample:
        if name == "ssim":
            raise ValueError("loss.subsample does not apply to the SSIM loss")
        mask = pixel_subsample_mask(target, subsample, generator)
        target = target * mask
        iterates = [x * mask for x in iterates]
    if weights == "last":
        return fn(iterates[-1], target)
    return torch.stack([fn(x, target) for x in iterates]).mean()
