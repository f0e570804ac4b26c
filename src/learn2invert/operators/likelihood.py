"""The data term every learned iterative solver is fed with."""
from __future__ import annotations

import torch

from .base import LinearOperator


def likelihood_gradient(operator: LinearOperator, x: torch.Tensor, y: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Gradient of the Gaussian log-likelihood ``log p(y | x)`` with respect to ``x``.

    Returns ``A^T (y - A x) / sigma^2`` with the shape of ``x``. ``sigma`` is the noise standard
    deviation in the units of ``y`` (a float or a tensor broadcastable to ``x``, e.g. ``(B, 1, 1, 1)``);
    the RIM adds a small trainable ``eps`` to ``sigma^2`` so that noise-free problems stay finite.
    """
    sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if torch.any(sigma_t <= 0):
        raise ValueError(f"sigma must be > 0 for the likelihood gradient, got {sigma}")
    return operator.A_adjoint(y - operator.A(x)) / sigma_t**2
