"""Undersampling masks for Cartesian MRI, on centred k-space (zero frequency at index ``n // 2``).

* :func:`random_mask` and :func:`equispaced_mask` select k-space columns (the last axis, W) with
  the semantics of fastMRI's ``RandomMaskFunc`` / ``EquispacedMaskFunc``: a fully sampled block
  of ``round(W * center_fraction)`` low-frequency columns plus random or equispaced outer ones.
  (fastMRI draws along its second-last axis because of its trailing complex axis; here columns
  are the last axis of ``(B, 2, H, W)``.) The random streams differ from fastMRI's legacy
  ``np.random`` ones, so the same integer seed does not give fastMRI's exact mask.
* :func:`gaussian_mask` is the 2-D variable-density pattern of the RIM MRI experiments: the
  sampling probability is a Gaussian around the k-space centre, scaled so that the mask holds
  ``round(H * W / acceleration)`` points; :func:`sample_acceleration` draws the acceleration
  from ``U(1.5, 5.2)`` as in that training set-up.

Masks are ``torch.bool`` tensors. ``seed`` may be ``None`` (fresh entropy), an ``int``, a
``numpy.random.Generator`` or a CPU ``torch.Generator``; an int or a freshly seeded generator
gives the same mask every time (a generator advances, so reusing one gives a new mask).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["random_mask", "equispaced_mask", "gaussian_mask", "sample_acceleration"]

class _Random:
    """One interface over the seed types the mask functions accept."""

    def __init__(self, seed) -> None:
        if isinstance(seed, torch.Generator):
            if seed.device.type != "cpu":
                raise ValueError(f"mask generators must be CPU torch.Generators, got one on {seed.device}")
            self._torch = seed
            self._numpy = None
        elif isinstance(seed, np.random.Generator):
            self._torch, self._numpy = None, seed
        elif seed is None or (isinstance(seed, (int, np.integer)) and not isinstance(seed, bool)):
            if seed is not None and seed < 0:
                raise ValueError(f"seed must be a non-negative int, got {seed}")
            self._torch, self._numpy = None, np.random.default_rng(seed)
        else:
            raise ValueError(
                "seed must be None, an int, a numpy.random.Generator or a torch.Generator, "
                f"got {type(seed).__name__}"
            )

    def uniform(self, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform samples in [0, 1), float64 array of ``shape``."""
        if self._torch is not None:
            return torch.rand(shape, generator=self._torch, dtype=torch.float64).numpy()
        return self._numpy.random(shape)

    def integer(self, high: int) -> int:
        """One integer uniform in ``[0, high)``."""
        if self._torch is not None:
            return int(torch.randint(0, high, (1,), generator=self._torch))
        return int(self._numpy.integers(0, high))


def _check_shape(shape, min_dims: int, what: str) -> tuple[int, ...]:
    if isinstance(shape, (int, np.integer)) or not isinstance(shape, (Sequence, torch.Size)):
        raise ValueError(f"shape must be a sequence of positive ints {what}, got {shape!r}")
    dims = tuple(shape)
    if len(dims) < min_dims or not all(isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in dims):
        raise ValueError(f"shape must be a sequence of at least {min_dims} positive ints {what}, got {shape!r}")
    return tuple(int(d) for d in dims)


def _check_acceleration(acceleration) -> float:
    if isinstance(acceleration, bool) or not isinstance(acceleration, (int, float, np.integer, np.floating)):
        raise ValueError(f"acceleration must be a number > 1, got {acceleration!r}")
    if not (math.isfinite(acceleration) and acceleration > 1):
        raise ValueError(f"acceleration must be a finite number > 1, got {acceleration}")
    return float(acceleration)


def _centre_columns(width: int, acceleration, center_fraction) -> tuple[float, int, int]:
    """Validate and return ``(acceleration, num_low, pad)``: the centre block is ``[pad, pad + num_low)``."""
    acceleration = _check_acceleration(acceleration)
    if isinstance(center_fraction, bool) or not isinstance(center_fraction, (int, float, np.integer, np.floating)):
        raise ValueError(f"center_fraction must be a number in (0, 1), got {center_fraction!r}")
    if not 0 < center_fraction < 1:
        raise ValueError(f"center_fraction must be in (0, 1), got {center_fraction}")
    num_low = int(round(width * center_fraction))
    # If the centre block alone exceeds W / acceleration the requested rate cannot be reached
    # (fastMRI would silently return a mask sampled more densely than asked for).
    if num_low * acceleration > width:
        raise ValueError(
            f"center_fraction={center_fraction} gives {num_low} centre columns of W={width}, more than "
            f"W / acceleration = {width / acceleration:.2f}; lower center_fraction or acceleration"
        )
    pad = (width - num_low + 1) // 2  # fastMRI's placement of the centre block
    return acceleration, num_low, pad


def _column_mask_to_shape(columns: np.ndarray, shape: tuple[int, ...]) -> torch.Tensor:
    """Column mask ``(W,)`` -> bool tensor ``(1, ..., 1, W)`` with ``len(shape)`` dims."""
    view = (1,) * (len(shape) - 1) + (shape[-1],)
    return torch.from_numpy(columns.astype(bool)).reshape(view)


def random_mask(shape, acceleration, center_fraction, seed=None) -> torch.Tensor:
    """Random Cartesian column mask with a fully sampled centre (fastMRI ``RandomMaskFunc``).

    ``round(W * center_fraction)`` centre columns are always sampled; every other column is
    sampled independently with probability ``(W / acceleration - num_low) / (W - num_low)``, so
    the expected number of columns is ``W / acceleration``.

    Args:
        shape: k-space shape ``(..., W)``; columns are the last axis.
        acceleration: undersampling factor > 1 (e.g. 4 or 8).
        center_fraction: fraction of fully sampled low-frequency columns in (0, 1) (e.g. 0.08, 0.04).
        seed: ``None``, int, ``numpy.random.Generator`` or ``torch.Generator``.

    Returns:
        bool tensor ``(W,)`` for ``shape=(W,)``, else ``(1, ..., 1, W)`` broadcastable to ``shape``.
    """
    dims = _check_shape(shape, 1, "(..., W)")
    width = dims[-1]
    acceleration, num_low, pad = _centre_columns(width, acceleration, center_fraction)
    rng = _Random(seed)
    columns = np.zeros(width, dtype=bool)
    if num_low < width:
        prob = (width / acceleration - num_low) / (width - num_low)
        columns = rng.uniform((width,)) < prob
    columns[pad : pad + num_low] = True
    return _column_mask_to_shape(columns, dims)


def equispaced_mask(shape, acceleration, center_fraction, seed=None) -> torch.Tensor:
    """Equispaced Cartesian column mask with a fully sampled centre (fastMRI ``EquispacedMaskFunc``).

    ``round(W * center_fraction)`` centre columns are sampled, plus the columns
    ``round(offset + k * a)`` for ``k = 0, 1, ...`` below ``W - 1``, where the spacing
    ``a = acceleration (num_low - W) / (num_low acceleration - W)`` is chosen so that the total
    is about ``W / acceleration`` and the offset is drawn uniformly from ``[0, round(a))``.
    Rounding makes the spacing alternate between ``floor(a)`` and ``ceil(a)`` when ``a`` is not
    an integer, exactly as in fastMRI (its issue #54).

    Args and returns as :func:`random_mask`.
    """
    dims = _check_shape(shape, 1, "(..., W)")
    width = dims[-1]
    acceleration, num_low, pad = _centre_columns(width, acceleration, center_fraction)
    rng = _Random(seed)
    columns = np.zeros(width, dtype=bool)
    columns[pad : pad + num_low] = True
    # num_low * acceleration == W means the centre alone meets the rate: no outer columns.
    if num_low * acceleration < width:
        spacing = acceleration * (num_low - width) / (num_low * acceleration - width)
        offset = rng.integer(max(round(spacing), 1))
        outer = np.around(np.arange(offset, width - 1, spacing)).astype(np.int64)
        columns[outer] = True
    return _column_mask_to_shape(columns, dims)


def _gaussian_density(height: int, width: int, n_samples: int) -> np.ndarray:
    """Sampling probabilities ``exp(-|k|^2 / (2 s^2))`` on centred k-space, summing to ``n_samples``.

    ``k`` is the spatial frequency in cycles per pixel (each axis in [-1/2, 1/2)), so the density
    is isotropic in physical frequency whatever the aspect ratio. The peak stays 1 at the zero
    frequency, so the k-space centre is always sampled; the width ``s`` is found by bisection
    (the total grows monotonically with ``s``).
    """
    ky = (np.arange(height) - height // 2) / height
    kx = (np.arange(width) - width // 2) / width
    r2 = ky[:, None] ** 2 + kx[None, :] ** 2

    def total(s: float) -> float:
        return float(np.exp(-r2 / (2 * s * s)).sum())

    lo, hi = 1e-6, 1.0
    while total(hi) < n_samples:  # n_samples < H*W, so a wide enough Gaussian always suffices
        hi *= 2.0
    for _ in range(100):
        mid = 0.5 * (lo + hi)
        if total(mid) < n_samples:
            lo = mid
        else:
            hi = mid
    return np.exp(-r2 / (2 * hi * hi))


def gaussian_mask(shape, acceleration, seed=None) -> torch.Tensor:
    """2-D variable-density mask with a Gaussian sampling density around the k-space centre.

    ``n = round(H * W / acceleration)`` points are drawn so that the chance of sampling frequency
    ``k`` is about ``p(k) = exp(-|k|^2 / (2 s^2))`` (``s`` scaled so that ``sum p = n``). The
    draw uses sequential Poisson sampling (keep the ``n`` points with the smallest ``u / p``,
    ``u ~ U(0, 1)``), which fixes the count, so the realised acceleration is
    ``H * W / n``; the zero frequency (index ``(H // 2, W // 2)``) is always in the mask.

    Args:
        shape: k-space shape ``(..., H, W)``.
        acceleration: undersampling factor > 1 (the RIM draws it from ``U(1.5, 5.2)``).
        seed: ``None``, int, ``numpy.random.Generator`` or ``torch.Generator``.

    Returns:
        bool tensor ``(H, W)`` for ``shape=(H, W)``, else ``(1, ..., 1, H, W)`` broadcastable to ``shape``.
    """
    dims = _check_shape(shape, 2, "(..., H, W)")
    acceleration = _check_acceleration(acceleration)
    height, width = dims[-2:]
    n_total = height * width
    n_samples = min(max(int(round(n_total / acceleration)), 1), n_total - 1)
    density = _gaussian_density(height, width, n_samples)
    with np.errstate(divide="ignore", invalid="ignore"):
        # Far frequencies whose density underflows to 0 get an infinite key: never chosen.
        keys = _Random(seed).uniform((height, width)) / density
    keys[np.isnan(keys)] = np.inf
    keys[height // 2, width // 2] = -np.inf  # the centre is sampled by construction, not by luck
    chosen = np.argpartition(keys.reshape(-1), n_samples - 1)[:n_samples]
    mask = np.zeros(n_total, dtype=bool)
    mask[chosen] = True
    view = (1,) * (len(dims) - 2) + (height, width)
    return torch.from_numpy(mask).reshape(view)


def sample_acceleration(low: float = 1.5, high: float = 5.2, generator=None) -> float:
    """Draw an acceleration factor from ``U(low, high)`` (the RIM's ``U(1.5, 5.2)`` by default).

    Args:
        low, high: bounds with ``1 < low <= high``.
        generator: ``None``, int, ``numpy.random.Generator`` or ``torch.Generator``.
    """
    for name, value in (("low", low), ("high", high)):
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not 1 < low <= high:
        raise ValueError(f"sample_acceleration needs 1 < low <= high, got low={low}, high={high}")
    u = float(_Random(generator).uniform((1,))[0])
    return float(low + (high - low) * u)
