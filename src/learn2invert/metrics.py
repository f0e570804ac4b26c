"""Image-quality metrics with fastMRI's conventions: PSNR, SSIM and NMSE on magnitude images.

The conventions follow ``fastmri.evaluate`` (which calls scikit-image):

* inputs are real magnitude images (take :func:`learn2invert.operators.fft.complex_abs` of a
  2-channel complex image first). Two channels, ``(B, 2, ...)``, are the library's layout of a
  complex image (real, imaginary), so they are refused unless ``complex_input`` says what they
  are: ``True`` scores their magnitudes, ``False`` scores them as two real channels;
* ``data_range`` defaults to ``target.max()`` of each sample (fastMRI: of each volume);
* SSIM uses a 7x7 uniform window, ``K1 = 0.01``, ``K2 = 0.03`` and the sample covariance
  (``N / (N - 1)``), averaged over the valid (uncropped) window positions, then over channels
  (RGB, like ``channel_axis``) and over slices (volumes, like ``fastmri.evaluate.ssim``);
* NMSE is ``||estimate - target||^2 / ||target||^2``.

Batched functions take ``(B, C, H, W)``, ``(B, C, D, H, W)`` or a single ``(H, W)`` image and
return the batch mean as a Python float, or the per-sample values with ``reduction="none"``.
The ``*_volume`` functions take one ``(slices, H, W)`` volume, like ``fastmri.evaluate``.
All arithmetic runs in float64 so that results agree with scikit-image to ~1e-10.

NaN and Inf: a non-finite ``target`` always raises a ``ValueError`` counting them. A non-finite
``estimate`` raises too for ``reduction="mean"`` (one number would silently be NaN); with
``reduction="none"``, what evaluation loops collect, the affected samples score NaN and a
``RuntimeWarning`` counts the values, so that one diverged sample does not stop the loop.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.nn.functional as F

from .operators.fft import complex_abs

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


def _prepare(estimate, target, complex_input: bool | None = None,
             reduction: str = "mean") -> tuple[torch.Tensor, torch.Tensor, torch.dtype]:
    """Check shapes, channels and values; return float64 ``(B, C, [D,] H, W)`` views plus the
    dtype to answer in (magnitudes ``(B, 1, ...)`` when ``complex_input`` is True)."""
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
    if complex_input not in (None, True, False):
        raise ValueError(f"complex_input must be None, True or False, got {complex_input!r}")
    out_dtype = estimate.dtype if estimate.is_floating_point() else torch.float64
    if estimate.dim() == 2:
        estimate, target = estimate[None, None], target[None, None]
    channels = estimate.shape[1]
    if complex_input is None and channels == 2:
        # Scoring (real, imaginary) as two images gives numbers that look plausible and mean nothing.
        raise ValueError(
            f"estimate and target have 2 channels {tuple(estimate.shape)}, the layout of complex images "
            "(real, imaginary): metrics score magnitudes, so pass learn2invert.operators.fft.complex_abs(x) "
            "of both (or complex_input=True to take them here); if the channels are two real images, "
            "pass complex_input=False"
        )
    if complex_input and channels != 2:
        raise ValueError(f"complex_input=True needs 2 channels (real, imaginary), got shape {tuple(estimate.shape)}")
    _check_finite(target, "target", reduction, always_raise=True)
    _check_finite(estimate, "estimate", reduction, always_raise=False)
    estimate, target = estimate.to(torch.float64), target.to(torch.float64)
    if complex_input:
        estimate, target = complex_abs(estimate), complex_abs(target)
    return estimate, target, out_dtype


def _check_finite(x: torch.Tensor, name: str, reduction: str, always_raise: bool) -> None:
    """Raise (or, for per-sample estimates, warn) counting the NaN and Inf values of ``x`` ``(B, ...)``."""
    if bool(torch.isfinite(x).all()):
        return
    nan, inf = int(torch.isnan(x).sum()), int(torch.isinf(x).sum())
    bad = int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(dim=1).sum())
    counted = (f"{name} contains {nan} NaN and {inf} infinite value(s) out of {x.numel()} "
               f"(in {bad} of {x.shape[0]} sample(s))")
    if always_raise or reduction != "none":
        hint = ("check the data it was read from" if name == "target"
                else "the solver probably diverged; scores need finite images")
        raise ValueError(f"{counted}; {hint}")
    warnings.warn(f"{counted}; their scores are NaN", RuntimeWarning, stacklevel=4)


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


def psnr(estimate, target, data_range=None, reduction: str = "mean", complex_input: bool | None = None):
    """Peak signal-to-noise ratio in dB, ``10 log10(data_range^2 / MSE)`` per sample.

    Args:
        estimate, target: real images ``(B, C, H, W)``, ``(B, C, D, H, W)`` or ``(H, W)``.
        data_range: peak value (scalar or one per sample); default ``target[b].max()``.
        reduction: ``"mean"`` returns the batch mean as a float; ``"none"`` a ``(B,)`` tensor.
        complex_input: for ``C = 2``: ``True`` scores the magnitudes of (real, imaginary)
            images, ``False`` the two channels as real images; ``None`` refuses ``C = 2``.

    Raises:
        ValueError: for mismatched shapes, ``C = 2`` without ``complex_input``, or NaN / Inf
            (counted, naming ``estimate`` or ``target``; see the module docstring).
    """
    est, tgt, out_dtype = _prepare(estimate, target, complex_input, reduction)
    dr = _data_range(tgt, data_range)
    mse = (est - tgt).pow(2).reshape(est.shape[0], -1).mean(dim=1)
    return _reduce(10.0 * torch.log10(dr**2 / mse), reduction, out_dtype)


def nmse(estimate, target, reduction: str = "mean", complex_input: bool | None = None):
    """Normalised mean squared error ``||estimate - target||^2 / ||target||^2`` per sample.

    Args:
        estimate, target: real images ``(B, C, H, W)``, ``(B, C, D, H, W)`` or ``(H, W)``.
        reduction: ``"mean"`` returns the batch mean as a float; ``"none"`` a ``(B,)`` tensor.
        complex_input: for ``C = 2``, as in :func:`psnr`.

    Raises:
        ValueError: as :func:`psnr`.
    """
    est, tgt, out_dtype = _prepare(estimate, target, complex_input, reduction)
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


def ssim(estimate, target, data_range=None, reduction: str = "mean", complex_input: bool | None = None):
    """Structural similarity (scikit-image / fastMRI conventions), per sample.

    Each 2-D slice of each channel gets its mean SSIM (7x7 uniform window, K1=0.01, K2=0.03,
    sample covariance); a sample's value is the mean over its channels and slices.

    Args:
        estimate, target: real images ``(B, C, H, W)``, ``(B, C, D, H, W)`` or ``(H, W)``,
            with ``H, W >= 7``.
        data_range: peak value (scalar or one per sample); default ``target[b].max()``.
        reduction: ``"mean"`` returns the batch mean as a float; ``"none"`` a ``(B,)`` tensor.
        complex_input: for ``C = 2``, as in :func:`psnr` (``False``: the mean over both channels).

    Raises:
        ValueError: as :func:`psnr`, and for ``H`` or ``W`` below 7.
    """
    est, tgt, out_dtype = _prepare(estimate, target, complex_input, reduction)
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
