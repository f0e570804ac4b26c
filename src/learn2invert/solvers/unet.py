"""U-Net image-domain baseline: post-processing of ``A^T y`` with the solvers' call.

The solver post-processes a starting image ``x0`` (default ``A^T y``, the zero-filled
reconstruction in MRI): with ``residual=True`` it returns ``x0 + net(x0)``. It never uses the
forward model beyond computing ``x0``, so it is the usual "image-domain" learned baseline. The
network is :class:`learn2invert.nn.unet.UNetBackbone` (the fastMRI U-Net).
"""
from __future__ import annotations

import torch

from ..nn.unet import UNetBackbone
from ..operators.base import LinearOperator
from .base import Solver


class UNet(UNetBackbone, Solver):
    """fastMRI-style U-Net that post-processes ``x0 = A^T y``, called like the RIM.

    The arguments are those of :class:`~learn2invert.nn.unet.UNetBackbone` (channels, dims,
    features, depth, residual, norm); the solver is that network (same state-dict keys) with
    the solvers' entry checks. Call ``unet(y, operator, x0=None, steps=None, sigma=None)``: see
    :meth:`forward`.
    """

    def check_image(self, x0: torch.Tensor, what: str = "the image (x0, or A_adjoint(y) when x0 is None)") -> None:
        """The base checks, H, W >= 2**depth, and more than one pixel at an instance-normalised bottleneck."""
        super().check_image(x0, what)
        self.check_size(x0)

    def forward(
        self,
        y: torch.Tensor,
        operator: LinearOperator,
        x0: torch.Tensor | None = None,
        steps: int | None = None,
        sigma: float | torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Post-process the starting image.

        Args:
            y: measurements, in whatever layout ``operator`` expects; used only to form the
                default ``x0``. NaN or Inf raise a ``ValueError``.
            operator: the forward model; only ``A_adjoint`` is used (for the default ``x0``).
            x0: starting image ``(B, C, H, W)`` / ``(B, C, D, H, W)``; default
                ``operator.A_adjoint(y)`` (zero-filled reconstruction in MRI).
            steps: accepted for interface compatibility with the RIM and ignored (the U-Net
                makes one pass).
            sigma: accepted for interface compatibility with the RIM and ignored (the network
                does not see the noise level).

        Returns:
            A one-element list ``[x]`` with ``x = x0 + net(x0)`` (``net(x0)`` when
            ``residual=False``), of the shape, dtype and units of ``x0``, so losses and scoring
            written for the RIM's list of iterates apply unchanged.
        """
        return [self.map_image(self.start(y, operator, x0))]


__all__ = ["UNet"]
