"""The library's U-Net (:class:`learn2invert.nn.unet.UNetBackbone`, residual, output conv at zero) as a prox."""
from __future__ import annotations

import torch

from ..unet import UNetBackbone
from .base import Prox


class UNetProx(Prox):
    """A residual U-Net prox ``x -> x + unet(x)``, the identity before training.

    Args:
        channels, dims, features, depth, norm: of :class:`~learn2invert.nn.unet.UNetBackbone`.
    """

    def __init__(self, channels: int, dims: int = 2, features: int = 32, depth: int = 3, norm: str = "instance") -> None:
        super().__init__()
        self.unet = UNetBackbone(channels, dims=dims, features=features, depth=depth, residual=True, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(x)


__all__ = ["UNetProx"]
