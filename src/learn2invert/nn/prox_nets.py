"""Learned proximal maps for unrolled solvers: DnCNN, the ResNet prox of Mardani et al., a U-Net prox.

Each is an ``nn.Module`` mapping an image to an image of the same shape, ``(B, C, *S) -> (B, C, *S)``
with ``S = (H, W)`` or ``(D, H, W)``, and each is residual (``x + net(x)``) with its last
convolution initialised at zero, so an untrained prox is the identity and an untrained unrolled
solver is plain gradient descent on the data term. That start matters at laptop scale: a few
minutes of training begin from a sensible reconstruction instead of from noise.

Every prox subclasses :class:`Prox`, which declares the hooks the unrolled solver calls.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from .conv_gru import conv_nd
from .deq import FixedPointStats


class Prox(nn.Module):
    """A learned proximal map ``(B, C, *S) -> (B, C, *S)`` for the unrolled solvers, and the hooks they call.

    Subclasses implement ``forward(x)``; the hooks have defaults that suit a plain network:

    - :meth:`scalar_parameters`: scalars that train at the solver's ``scalar_lr`` (default none);
    - :meth:`initial_guess`: the start for ``init="prox"`` (default: the prox has none, ``ValueError``);
    - :attr:`stats` / :meth:`reset_stats`: the fixed-point solves of the last forward pass, which
      equilibrium proxes append to (default: stays empty).

    The base adds no parameters or buffers (state-dict keys are the subclass's own).
    """

    def __init__(self) -> None:
        super().__init__()
        self.stats: list[FixedPointStats] = []

    def scalar_parameters(self) -> list[nn.Parameter]:
        """Scalar parameters to train at the solver's own rate for scalars (none by default)."""
        return []

    def initial_guess(self, like: torch.Tensor) -> torch.Tensor:
        """A starting image with the shape of ``like`` ``(B, C, *S)``, for ``init="prox"``."""
        raise ValueError(f"init='prox' needs a prox with initial_guess(); {type(self).__name__} has none")

    def reset_stats(self) -> None:
        """Forget the fixed-point statistics of the previous forward pass."""
        self.stats = []


def _zero_last(conv: nn.Module) -> None:
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def _batch_norm(features: int, dims: int) -> nn.Module:
    return nn.BatchNorm2d(features) if dims == 2 else nn.BatchNorm3d(features)


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
                layers.append(_batch_norm(features, dims))
            layers.append(nn.ReLU(inplace=True))
        last = conv(features, channels, 3, padding=1, bias=False)
        if spectral:
            layers.append(wrap(last))  # spectral norm of a zero weight is 0/0: keep the random init
        else:
            _zero_last(last)
            layers.append(last)
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class ResidualBlock(nn.Module):
    """Two ``conv 3x3 -> BatchNorm -> ReLU`` layers with a skip connection (Mardani et al. 2018)."""

    def __init__(self, features: int, dims: int) -> None:
        super().__init__()
        conv = conv_nd(dims)
        self.body = nn.Sequential(conv(features, features, 3, padding=1), _batch_norm(features, dims), nn.ReLU(inplace=True),
                                  conv(features, features, 3, padding=1), _batch_norm(features, dims))

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
        _zero_last(last)
        self.net = nn.Sequential(conv(channels, features, 3, padding=1), nn.ReLU(inplace=True),
                                 *[ResidualBlock(features, dims) for _ in range(blocks)],
                                 conv(features, features, 1), nn.ReLU(inplace=True),
                                 conv(features, features, 1), nn.ReLU(inplace=True), last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class UNetProx(Prox):
    """The library's U-Net (:class:`learn2invert.solvers.unet.UNet`, residual, output conv at zero) as a prox."""

    def __init__(self, channels: int, dims: int = 2, features: int = 32, depth: int = 3, norm: str = "instance") -> None:
        super().__init__()
        from ..solvers.unet import UNet

        self.unet = UNet(channels, dims=dims, features=features, depth=depth, residual=True, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The U-Net solver post-processes a given x0; its operator argument is unused then.
        return self.unet(None, None, x0=x)[0]


__all__ = ["DnCNN", "Prox", "ResNetProx", "ResidualBlock", "UNetProx"]
