"""Random smooth phase maps: the phase of simulated complex MR images and of coil sensitivities.

Real MR images are complex and their phase varies smoothly (B0 inhomogeneity, coil phase). The
data sets give their images such a phase (:class:`~learn2invert.data.BrainSlices`) and the
simulated coil maps of :func:`~learn2invert.operators.multicoil.simulated_coil_maps` add one to
each coil, both from :func:`smooth_phase`.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch


def smooth_phase(
    shape: Sequence[int],
    generator: torch.Generator | None = None,
    *,
    order: int = 3,
    max_amplitude: float = math.pi,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """A random smooth phase map: a low-order polynomial over the image, in radians.

    The field is ``sum_a c_a prod_d P_{a_d}(u_d)`` over all multi-indices of total degree
    ``<= order``, with ``P_k`` the Legendre polynomials, ``u_d`` in [-1, 1] across axis ``d``,
    and ``c_a ~ N(0, 1) / (1 + |a|)`` so lower orders dominate (MR phase is mostly a constant
    offset plus gentle gradients). It is rescaled so its largest magnitude is an amplitude drawn
    uniformly from ``[0, max_amplitude]``: values lie in ``[-max_amplitude, max_amplitude]``.

    Args:
        shape: spatial shape, e.g. ``(H, W)`` or ``(D, H, W)``.
        generator: CPU torch generator for reproducible draws (``None``: the global RNG).
        order: maximum total polynomial degree (0 gives a constant phase).
        max_amplitude: largest possible ``|phase|`` in radians.
        dtype: floating dtype of the result.

    Returns:
        Tensor of ``shape`` and ``dtype``.
    """
    shape = tuple(int(s) for s in shape)
    if order < 0:
        raise ValueError(f"order must be >= 0, got {order}")
    # Legendre values per axis, (order + 1, n): orthogonal on [-1, 1], so coefficients of
    # different degrees contribute independently instead of all looking like x^k near the edge.
    bases = []
    for n in shape:
        u = torch.linspace(-1.0, 1.0, n, dtype=torch.float64)
        p = [torch.ones_like(u), u]
        for k in range(1, order):
            p.append(((2 * k + 1) * u * p[k] - k * p[k - 1]) / (k + 1))
        bases.append(torch.stack(p[: order + 1]))
    indices = [a for a in itertools.product(range(order + 1), repeat=len(shape)) if sum(a) <= order]
    coeffs = torch.randn(len(indices), generator=generator, dtype=torch.float64)
    amplitude = max_amplitude * torch.rand((), generator=generator, dtype=torch.float64)
    field = torch.zeros(shape, dtype=torch.float64)
    for c, a in zip(coeffs, indices):
        term = c / (1 + sum(a))
        for d, k in enumerate(a):
            view = [1] * len(shape)
            view[d] = shape[d]
            term = term * bases[d][k].view(view)
        field = field + term
    peak = field.abs().max()
    if peak > 0:
        field = field * (amplitude / peak)
    return field.to(dtype)


__all__ = ["smooth_phase"]
