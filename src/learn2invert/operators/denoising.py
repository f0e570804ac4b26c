"""Denoising: the identity forward model ``y = x`` (the noise is added by ``operators.noise``)."""
from __future__ import annotations

import torch

from .base import LinearOperator, check_tensor

_LAYOUT = "(B, C, ...) (batch, channels, then any spatial dims)"


class Denoising(LinearOperator):
    """Identity operator ``A = A^T = I`` for denoising (RIM Sec. 4.5, flow-unfolding Sec. VI-A1).

    ``A``, ``A_adjoint`` and ``A_adjoint_A`` return their input tensor itself (no copy), so
    ``y = A(x)`` has the shape, dtype, device and units of ``x``. Inputs are real floating-point
    tensors of shape ``(B, C, ...)`` with at least 2 dims; complex data goes in as 2 channels.
    """

    def norm_squared(self) -> float:
        """``||A||^2 = 1`` (the identity)."""
        return 1.0

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        check_tensor(x, "x", _LAYOUT, ndims=tuple(range(2, 9)), owner=type(self).__name__)
        return x

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        check_tensor(y, "y", _LAYOUT, ndims=tuple(range(2, 9)), owner=type(self).__name__)
        return y

    def A_adjoint_A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        check_tensor(x, "x", _LAYOUT, ndims=tuple(range(2, 9)), owner=type(self).__name__)
        return x
