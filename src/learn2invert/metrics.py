"""Image-quality metrics with fastMRI's conventions: PSNR, SSIM and NMSE on magnitude images.

The conventions follow ``fastmri.evaluate`` (which calls scikit-image):

* inputs are real magnitude images (take :func:`learn2invert.operators.fft.complex_abs` of a
  2-channel complex image first);
* ``data_range`` defaults to ``target.max()`` of each sample (fastMRI: of each volume);
* SSIM uses a 7x7 uniform window, ``K1 = 0.01``, ``K2 = 0.03`` and the sample covariance
  (``N / (N - 1)``), averaged over the valid (uncropped) window positions, then over channels
  (RGB, like ``channel_axis``) and over slices (volumes, like ``fastmri.evaluate.ssim``);
* NMSE is ``||estimate - target||^2 / ||target||^2``.

Batched functions take ``(B, C, H, W)``, ``(B, C, D, H, W)`` or a single ``(H, W)`` image and
return the batch mean as a Python float, or the per-sample values with ``reduction="none"``.
The ``*_volume`` functions take one ``(slices, H, W)`` volume, like ``fastmri.evaluate``.
All arithmetic runs in float64 so that results agree with scikit-image to ~1e-10.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["psnr", "ssim", "nmse", "psnr_volume", "ssim_volume", "nmse_volume"]

_SSIM_WIN = 7
_SSIM_K1 = 0.01
_SSIM_K2 = 0.03
_LAYOUT = "(B, C, H, W), (B, C, D, H, W) or (H, W)"


def _as_tensor(x, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor (or numpy array), got {type(x).__name__}")
    if x.is_complex():
        raise ValueError(
            f"{name} is complex; metrics take real magnitude images {_LAYOUT} "
            "(use learn2invert.operators.fft.complex_abs on a (B, 2, ...) image first)"
        )
    return x


def _prepare(estimate, target) -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
    """Check shapes and return float64 ``(B, C, [D,] H, W)`` views plus the dtype to answer in."""
    estimate = _as_tensor(estimate, "estimate")
    target = _as_tensor(target, "target")
    if estimate.shape != target.shape:
        raise ValueError(
            f"estimate and target must have the same shape {_LAYOUT}, "
            f"got {tuple(estimate.shape)} and {tuple(target.shape)}"
        )
    if estimate.dim() == 3:
        raise ValueError(
            f"got a 3-dim tensor {tuple(estimate.shape)}: batched metrics take {_LAYOUT}; "
            "for one (slices, H, W) volume use psnr_volume / ssim_volume / nmse_volume"
        )
    if estimate.dim() not in (2, 4, 5):
        raise ValueError(f"metrics take images of shape {_LAYOUT}, got {tuple(estimate.shape)}")
    if estimate.numel() == 0:
        raise ValueError(f"metrics need non-empty images, got shape {tuple(estimate.shape)}")
    out_dtype = estimate.dtype if estimate.is_floating_point() else torch.float64
    if estimate.dim() == 2:
        estimate, target = estimate[None, None], target[None, None]
    return estimate.to(torch.float64), target.to(torch.float64), out_dtype


def _data_range(target: torch.Tensor, data_range) -> torch.Tensor:
    """Per-sample dynamic range, shape (B,): ``target.max()`` of each sample unless given."""
    batch = target.shape[0]
    if data_range is None:
        # A constant of the evaluation (as in skimage), not something to differentiate through.
        dr = target.detach().reshape(batch, -1).amax(dim=1)
    else:
        dr = torch.as_tensor(data_range, dtype=torch.float64, device=target.device)
        if dr.numel() not in (1, batch):
            raise ValueError(f"data_range must be a scalar or have one value per sample ({batch}), got shape {tuple(dr.shape)}")
        dr = dr.reshape(-1).expand(batch)
    # A non-positive range makes PSNR/SSIM meaningless (log of a non-positive peak, C1 = C2 = 0).
    if torch.any(~(dr > 0)):
        raise ValueError(f"data_range must be > 0 for every sample, got {dr.detach().cpu().tolist()}")
    return dr


def _reduce(values: torch.Tensor, reduction: str, out_dtype: torch.dtype):
    if reduction == "mean":
        return float(values.mean())
    if reduction == "none":
        return values.to(out_dtype)
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}")


def psnr(estimate, target, data_range=None, reduction: str = "mean"):
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)`` per sample.

    Args:
        estimate, target: real images ``(B, C, H, W)``, ``(B, C, D, H, W)`` or ``(H, W)``.
        data_range: peak value (scalar or one per sample); default ``target[b].max()``.
        reduction: ``"mean"`` returns the batch mean as a float; ``"none"`` a ``(B,)`` tensor.
    """
    est, tgt, out_dtype = _prepare(estimate, target)
    dr = _data_range(tgt, data_range)
    mse = (est - tgt).pow(2).reshape(est.shape[0], -1).mean(dim=1)
    return _reduce(10.0 * torch.log10(dr**2 / mse), reduction, out_dtype)


def nmse(estimate, target, reduction: str = "mean"):
    """Normalised mean squared error ``||estimate - target||^2 / ||target||^2`` per sample.

    Args:
        estimate, target: real images ``(B, C, H, W)``, ``(B, C, D, H, W)`` or ``(H, W)``.
        reduction: ``"mean"`` returns the batch mean as a float; ``"none"`` a ``(B,)`` tensor.
    """
    est, tgt, out_dtype = _prepare(estimate, target)
    batch = est.shape[0]
    err = (est - tgt).pow(2).reshape(batch, -1).sum(dim=1)
    ref = tgt.pow(2).reshape(batch, -1).sum(dim=1)
    return _reduce(err / ref, reduction, out_dtype)


def _ssim_slices(x: torch.Tensor, y: torch.Tensor, data_range: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of each 2-D slice: x, y ``(N, H, W)`` float64, data_range ``(N,)`` -> ``(N,)``.

    scikit-image filters the whole image and then crops ``(win - 1) // 2`` pixels from each
    border before averaging; a 'valid' average pool yields exactly the uncropped positions, so
    the padding mode never matters.
    """
    n_pix = _SSIM_WIN * _SSIM_WIN
    cov_norm = n_pix / (n_pix - 1.0)  # sample covariance, as skimage's use_sample_covariance=True

    def mean_filter(t: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(t.unsqueeze(1), _SSIM_WIN, stride=1).squeeze(1)

    ux, uy = mean_filter(x), mean_filter(y)
    uxx, uyy, uxy = mean_filter(x * x), mean_filter(y * y), mean_filter(x * y)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1 = ((_SSIM_K1 * data_range) ** 2).view(-1, 1, 1)
    c2 = ((_SSIM_K2 * data_range) ** 2).view(-1, 1, 1)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    return s.mean(dim=(-2, -1))


def ssim(estimate, target, data_range=None, reduction: str = "mean"):
    """Structural similarity (scikit-image / fastMRI conventions), per sample.

    Each 2-D slice of each channel gets its mean SSIM (7x7 uniform window, K1=0.01, K2=0.03,
    sample covariance); a sample's value is the mean over its channels and slices.

    Args:
        estimate, target: real images ``(B, C, H, W)``, ``(B, C, D, H, W)`` or ``(H, W)``,
            with ``H, W >= 7``.
        data_range: peak value (scalar or one per sample); default ``target[b].max()``.
        reduction: ``"mean"`` returns the batch mean as a float; ``"none"`` a ``(B,)`` tensor.
    """
    est, tgt, out_dtype = _prepare(estimate, target)
    height, width = est.shape[-2:]
    if height < _SSIM_WIN or width < _SSIM_WIN:
        raise ValueError(f"SSIM needs H, W >= {_SSIM_WIN} (its window size), got shape {tuple(estimate.shape)}")
    dr = _data_range(tgt, data_range)
    batch = est.shape[0]
    per_slice_count = est[0].numel() // (height * width)  # channels x slices of one sample
    values = _ssim_slices(
        est.reshape(-1, height, width),
        tgt.reshape(-1, height, width),
        dr.repeat_interleave(per_slice_count),
    )
    return _reduce(values.reshape(batch, per_slice_count).mean(dim=1), reduction, out_dtype)


def _volume(estimate, target) -> tuple[torch.Tensor, torch.Tensor]:
    estimate = _as_tensor(estimate, "estimate")
    target = _as_tensor(target, "target")
    if estimate.dim() != 3 or estimate.shape != target.shape:
        raise ValueError(
            "volume metrics take estimate and target of the same shape (slices, H, W), "
            f"got {tuple(estimate.shape)} and {tuple(target.shape)}"
        )
    return estimate[None, None], target[None, None]


def psnr_volume(estimate, target, data_range=None) -> float:
    """PSNR (dB) of one ``(slices, H, W)`` volume with ``data_range = target.max()`` of the volume."""
    est, tgt = _volume(estimate, target)
    return psnr(est, tgt, data_range=data_range)


def ssim_volume(estimate, target, data_range=None) -> float:
    """SSIM of one ``(slices, H, W)`` volume: the mean over slices of the 2-D SSIM, all slices
    sharing ``data_range = target.max()`` of the volume (``fastmri.evaluate.ssim``)."""
    est, tgt = _volume(estimate, target)
    return ssim(est, tgt, data_range=data_range)


def nmse_volume(estimate, target) -> float:
    """NMSE ``||estimate - target||^2 / ||target||^2`` of one ``(slices, H, W)`` volume."""
    est, tgt = _volume(estimate, target)
    return nmse(est, tgt)
