"""Finite-difference image gradient, the building block of smoothness and total-variation priors."""
from __future__ import annotations

import torch

from .base import LinearOperator, check_tensor


class FiniteDifference(LinearOperator):
    """Forward differences along every spatial axis with a Neumann (zero-flux) boundary.

    ``A``: x of shape (B, C, *S) with 2 or 3 spatial dims S -> (B, C, len(S), *S); component ``k``
    holds ``x[i+1] - x[i]`` along spatial axis ``k`` and 0 on the last slice. ``A_adjoint`` is
    minus the matching discrete divergence, exact to rounding.
    """

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        check_tensor(x, "x", "(B, C, H, W) or (B, C, D, H, W)", ndims=(4, 5), owner=type(self).__name__)
        parts = []
        for axis in range(2, x.dim()):
            d = torch.zeros_like(x)
            n = x.shape[axis]
            d.narrow(axis, 0, n - 1).copy_(x.narrow(axis, 1, n - 1) - x.narrow(axis, 0, n - 1))
            parts.append(d)
        return torch.stack(parts, dim=2)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        check_tensor(y, "gradient field y", "(B, C, 2, H, W) or (B, C, 3, D, H, W)", ndims=(5, 6),
                     owner=type(self).__name__)
        if y.shape[2] != y.dim() - 3:
            raise ValueError(f"{type(self).__name__}: gradient field y must have shape (B, C, 2, H, W) or "
                             f"(B, C, 3, D, H, W), i.e. {y.dim() - 3} components in dim 2 for {y.dim() - 3} "
                             f"spatial dims, got {tuple(y.shape)}")
        out = torch.zeros_like(y[:, :, 0])
        for k in range(y.shape[2]):
            axis = 2 + k
            d = y[:, :, k]
            n = d.shape[axis]
            # Transpose of "x[i+1] - x[i] on i < n-1": each difference adds to i+1 and subtracts from i.
            out.narrow(axis, 1, n - 1).add_(d.narrow(axis, 0, n - 1))
            out.narrow(axis, 0, n - 1).sub_(d.narrow(axis, 0, n - 1))
        return out
