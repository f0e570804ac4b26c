"""Measurement noise: additive white Gaussian noise with known sigma, Poisson photon counts and
8-bit quantisation.

The RIM paper (Table 2) adds noise first and then quantises to 8 bits, as Schmidt et al. (2016).
"""
from __future__ import annotations

import torch


def add_gaussian_noise(y: torch.Tensor, sigma: float | torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Return ``y + sigma * n`` with ``n ~ N(0, 1)`` i.i.d., in the units of ``y``.

    ``sigma`` may be a float or a tensor broadcastable to ``y`` (e.g. shape ``(B, 1, 1, 1)`` for a
    different noise level per sample). ``sigma`` must be non-negative.
    """
    sigma_t = torch.as_tensor(sigma, dtype=y.dtype, device=y.device)
    if torch.any(sigma_t < 0) or not torch.all(torch.isfinite(sigma_t)):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    noise = torch.randn(y.shape, dtype=y.dtype, device=y.device, generator=generator)
    return y + sigma_t * noise


def add_poisson_noise(clean: torch.Tensor, sigma: float | torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Photon counts of gain ``sigma^2``: ``y = sigma^2 * Poisson(clean / sigma^2)``, in the units of ``clean``.

    ``1 / sigma^2`` photons where ``clean = 1`` (an unattenuated ray of Beer-Lambert CT), so the
    noise has standard deviation ``sigma`` there, as the Gaussian model at the same setting.
    ``sigma`` is a float or a tensor broadcastable to ``clean`` (e.g. ``(B, 1, 1, 1)``); where it
    is 0 the result is ``clean`` itself. Negative intensities count as 0. The counts are drawn on
    the CPU (``torch.poisson`` takes a CPU generator) and moved back to ``clean``'s device.
    """
    sigma_t = torch.as_tensor(sigma, dtype=clean.dtype, device=clean.device)
    if torch.any(sigma_t < 0) or not torch.all(torch.isfinite(sigma_t)):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma}")
    gain = (sigma_t * sigma_t).clamp_min(torch.finfo(clean.dtype).tiny)
    rate = torch.where(sigma_t > 0, clean.clamp_min(0) / gain, 0.0).detach().cpu()
    counts = torch.poisson(rate, generator=generator).to(clean.device, clean.dtype)
    return torch.where(sigma_t > 0, counts * gain, clean)


def quantize(x: torch.Tensor, bits: int = 8, data_range: float = 1.0) -> torch.Tensor:
    """Round ``x`` to ``2**bits`` levels on ``[0, data_range]`` (values outside are clipped).

    With ``data_range=1`` and ``bits=8`` this is saving an image as 8-bit PNG and reading it back.
    """
    if bits < 1:
        raise ValueError(f"bits must be >= 1, got {bits}")
    if data_range <= 0:
        raise ValueError(f"data_range must be > 0, got {data_range}")
    levels = 2**bits - 1
    return torch.round(x.clamp(0, data_range) / data_range * levels) / levels * data_range
