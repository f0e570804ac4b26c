"""Base class and input checks shared by every forward operator.

An operator is a small ``nn.Module`` that knows the physics ``y = A x`` and its exact adjoint.
Solvers only ever call ``A``, ``A_adjoint`` and ``A_adjoint_A``; they never know which operator
they were given (the names match deepinv's physics objects so those plug in unchanged).
"""
from __future__ import annotations

import torch
from torch import nn


class LinearOperator(nn.Module):
    """A linear forward model ``y = A x`` with its exact adjoint ``A^T``.

    Subclasses implement :meth:`A` and :meth:`A_adjoint`; both act on batches (first dim = B).
    Calling the module applies ``A``. Buffers (masks, kernels, system matrices) move with
    ``.to(device)`` / ``.double()`` like any module state.
    """

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 - the field's standard name
        raise NotImplementedError(f"{type(self).__name__} must implement A")

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        raise NotImplementedError(f"{type(self).__name__} must implement A_adjoint")

    def A_adjoint_A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Normal operator ``A^T A x`` (subclasses override when a cheaper form exists)."""
        return self.A_adjoint(self.A(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)


def check_tensor(
    x: torch.Tensor,
    name: str,
    expected: str,
    ndims: tuple[int, ...] = (4,),
    channels: int | None = None,
    spatial: tuple[int, ...] | None = None,
) -> None:
    """Raise a ``ValueError`` that names the expected shape when ``x`` does not fit.

    Args:
        x: the tensor to check.
        name: what the caller calls it (``"x"``, ``"k-space y"``), used in the message.
        expected: the expected layout for the message, e.g. ``"(B, 2, H, W)"``.
        ndims: allowed numbers of dimensions.
        channels: required size of dim 1, if any.
        spatial: required trailing sizes, if any (compared with ``x.shape[-len(spatial):]``).
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if x.is_complex():
        raise ValueError(
            f"{name} is a complex tensor; learn2invert expects real tensors of shape {expected} "
            "with (real, imaginary) as 2 channels (e.g. torch.view_as_real(z).movedim(-1, 1))"
        )
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor of shape {expected}, got dtype {x.dtype}")
    if x.dim() not in ndims:
        raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)} ({x.dim()} dims)")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name} must have shape {expected} with {channels} channel(s), got {tuple(x.shape)}")
    if spatial is not None and tuple(x.shape[-len(spatial):]) != tuple(spatial):
        raise ValueError(f"{name} must have shape {expected} with trailing size {tuple(spatial)}, got {tuple(x.shape)}")


def adjoint_mismatch(operator: LinearOperator, x: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """Relative error of the dot-product test ``|<A x, y> - <x, A^T y>| / (|<A x, y>| + |<x, A^T y>|)``.

    ``y`` is random with the shape of ``A x``. Use float64 inputs for a meaningful test: a correct
    adjoint gives about 1e-15 there. Useful for checking a user's own operator too.
    """
    ax = operator.A(x)
    y = torch.randn(ax.shape, dtype=ax.dtype, device=ax.device, generator=generator)
    aty = operator.A_adjoint(y)
    if aty.shape != x.shape:
        raise ValueError(f"A_adjoint returned shape {tuple(aty.shape)}, expected the shape of x {tuple(x.shape)}")
    lhs = torch.sum(ax * y)
    rhs = torch.sum(x * aty)
    return float((lhs - rhs).abs() / (lhs.abs() + rhs.abs()).clamp_min(torch.finfo(x.dtype).tiny))
