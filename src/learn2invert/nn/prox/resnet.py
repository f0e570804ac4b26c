"""The ResNet prox of Mardani et al. (2018), the flow-unfolding paper's first baseline."""
from __future__ import annotations

import torch
from torch import nn

from ..conv_gru import conv_nd
from .base import Prox, batch_norm_layer, zero_last


class ResidualBlock(nn.Module):
    """Two ``conv 3x3 -> BatchNorm -> ReLU`` layers with a skip connection (Mardani et al. 2018)."""

    def __init__(self, features: int, dims: int) -> None:
        super().__init__()
        conv = conv_nd(dims)
        self.body = nn.Sequential(conv(features, features, 3, padding=1), batch_norm_layer(features, dims),
                                  nn.ReLU(inplace=True),
                                  conv(features, features, 3, padding=1), batch_norm_layer(features, dims))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.relu(h + self.body(h))


class ResNetProx(Prox):
    """The ResNet prox of Mardani et al. (2018), the flow-unfolding paper's first baseline.

    A 3x3 convolution lifts the image to ``features`` maps, ``blocks`` residual blocks of two
    ``3x3 conv + BN + ReLU`` follow, then three 1x1 convolutions map back to ``channels``
    (the paper: 128 maps, 2 blocks). Output ``x + net(x)``.
    """

    def __init__(self, channels: int, dims: int = 2, features: int = 128, blocks: int = 2) -> None:
        super().__init__()
        conv = conv_nd(dims)
        last = conv(features, channels, 1)
        zero_last(last)
        self.net = nn.Sequential(conv(channels, features, 3, padding=1), nn.ReLU(inplace=True),
                                 *[ResidualBlock(features, dims) for _ in range(blocks)],
                                 conv(features, features, 1), nn.ReLU(inplace=True),
                                 conv(features, features, 1), nn.ReLU(inplace=True), last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


__all__ = ["ResNetProx", "ResidualBlock"]
