"""Inpainting: a pixel mask that keeps the observed pixels and zeroes the missing ones."""
from __future__ import annotations

import numpy as np
import torch

from .base import LinearOperator, check_tensor


def centered_hole_mask(height: int, width: int, hole: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Bool mask of shape ``(height, width)``: ``True`` (observed) except a ``hole x hole`` square.

    The square starts at row ``(height - hole) // 2`` and column ``(width - hole) // 2``, so when
    ``height - hole`` is odd the hole sits half a pixel towards the top (same for columns).
    The flow-unfolding paper masks the centre 19 x 19 pixels for training and 16 x 16 for its
    out-of-distribution test.
    """
    for name, value in (("height", height), ("width", width), ("hole", hole)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    if hole > min(height, width):
        raise ValueError(f"hole ({hole}) must not exceed the image size (height={height}, width={width})")
    mask = torch.ones(height, width, dtype=torch.bool, device=device)
    top, left = (height - hole) // 2, (width - hole) // 2
    mask[top : top + hole, left : left + hole] = False
    return mask


class Inpainting(LinearOperator):
    """Masking ``y = M x``: observed pixels are kept, missing ones are set to ``+0``.

    ``A`` is a diagonal 0/1 matrix, so ``A^T = A`` and ``A^T A = A``; ``y`` has the shape of
    ``x`` (missing pixels are not dropped, so solvers and networks see an image).

    Args:
        mask: ``True`` / 1 where a pixel is observed, ``False`` / 0 where it is missing, of shape
            ``(H, W)`` (same for every channel and sample), ``(C, H, W)`` or ``(B, C, H, W)``;
            a bool tensor or a float 0/1 tensor or NumPy array. It must broadcast to ``x``.

    The mask is stored as a bool buffer (``state_dict`` key ``"mask"``): ``.to(device)`` moves it
    and ``.double()`` leaves it bool.
    """

    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor | np.ndarray) -> None:
        super().__init__()
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(mask)
        if not isinstance(mask, torch.Tensor):
            raise ValueError(
                "mask must be a torch.Tensor or numpy array of shape (H, W), (C, H, W) or (B, C, H, W), "
                f"got {type(mask).__name__}"
            )
        if mask.is_complex():
            raise ValueError("mask must be real (bool or 0/1), got a complex tensor")
        if mask.dim() not in (2, 3, 4):
            raise ValueError(f"mask must have shape (H, W), (C, H, W) or (B, C, H, W), got {tuple(mask.shape)}")
        if mask.dtype != torch.bool:
            if mask.is_floating_point() and torch.isnan(mask).any():
                raise ValueError("mask contains NaN; it must hold only 0/1 (or be a bool tensor)")
            if not torch.all((mask == 0) | (mask == 1)):
                raise ValueError("mask must hold only 0 and 1 (or be a bool tensor)")
            mask = mask != 0
        self.register_buffer("mask", mask.clone())

    def extra_repr(self) -> str:
        return f"mask_shape={tuple(self.mask.shape)}, observed_fraction={self.mask.float().mean().item():.3f}"

    def _check(self, t: torch.Tensor, name: str) -> None:
        # Name the sizes the mask pins down; dims where the mask has size 1 (or none) are free.
        sizes = (1,) * (4 - self.mask.dim()) + tuple(self.mask.shape)
        dims = ", ".join(letter if size == 1 else str(size) for letter, size in zip("BCHW", sizes))
        layout = f"({dims}) (mask of shape {tuple(self.mask.shape)} broadcast over B, C, H, W)"
        check_tensor(t, name, layout, ndims=(4,), owner=type(self).__name__)
        try:
            shape = torch.broadcast_shapes(self.mask.shape, t.shape)
        except RuntimeError:
            shape = None
        if shape != t.shape:
            raise ValueError(f"{type(self).__name__}: {name} must have shape {layout}, got {tuple(t.shape)}")

    def _apply_mask(self, t: torch.Tensor) -> torch.Tensor:
        # torch.where writes +0 at missing pixels; t * mask would give -0 for negative values,
        # which shows up in sign tests and in bitwise comparisons of measurements.
        return torch.where(self.mask, t, torch.zeros((), dtype=t.dtype, device=t.device))

    def norm_squared(self) -> float:
        """``||A||^2``: 1 (a 0/1 diagonal), 0 for an empty mask."""
        return float(bool(self.mask.any()))

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Mask ``x`` of shape ``(B, C, H, W)``; returns ``(B, C, H, W)`` with missing pixels ``+0``."""
        self._check(x, "x")
        return self._apply_mask(x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Same as :meth:`A` (a diagonal 0/1 matrix is symmetric)."""
        self._check(y, "y")
        return self._apply_mask(y)

    def A_adjoint_A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Same as :meth:`A` (a projection: ``M^T M = M``)."""
        self._check(x, "x")
        return self._apply_mask(x)
