"""DnCNN (Zhang et al. 2017) as a residual prox; spectrally normalised, it is DEQ4IP's prox."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from ..conv_gru import conv_nd
from .base import Prox, batch_norm_layer, zero_last


class DnCNN(Prox):
    """DnCNN (Zhang et al. 2017) as a residual prox: ``x + net(x)``.

    ``depth`` convolutions of ``features`` channels, 3x3[x3]: conv+ReLU, then ``depth - 2`` times
    conv+BatchNorm+ReLU, then a conv back to ``channels``. With depth 17, 64 features and 3
    channels this has 558,400 parameters (the LUSER paper's LU-DnCNN: 558,580).

    Args:
        channels: image channels C.
        dims: 2 or 3 spatial dimensions.
        depth: number of convolutions (>= 2).
        features: channels of the hidden convolutions.
        batch_norm: BatchNorm after the hidden convolutions (off for fixed-point use, where
            batch statistics would change between iterations of the same map).
        spectral: wrap every convolution in spectral normalisation (DEQ4IP), so each layer is
            1-Lipschitz and the fixed-point map stays close to contractive. The last convolution
            then keeps its random initialisation (the untrained prox is not the identity).
    """

    def __init__(self, channels: int, dims: int = 2, depth: int = 17, features: int = 64, batch_norm: bool = True,
                 spectral: bool = False) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"DnCNN depth must be >= 2, got {depth}")
        conv = conv_nd(dims)
        wrap = spectral_norm if spectral else (lambda m: m)
        layers: list[nn.Module] = [wrap(conv(channels, features, 3, padding=1)), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers.append(wrap(conv(features, features, 3, padding=1, bias=not batch_norm)))
            if batch_norm:
                layers.append(batch_norm_layer(features, dims))
            layers.append(nn.ReLU(inplace=True))
        last = conv(features, channels, 3, padding=1, bias=False)
        if spectral:
            layers.append(wrap(last))  # spectral norm of a zero weight is 0/0: keep the random init
        else:
            zero_last(last)
            layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


__all__ = ["DnCNN"]
