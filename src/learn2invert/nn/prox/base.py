"""The prox contract: :class:`Prox`, the hooks the unrolled solvers call, and helpers the proxes share.

Every learned proximal map of :mod:`learn2invert.nn.prox` maps an image to an image of the same
shape, ``(B, C, *S) -> (B, C, *S)`` with ``S = (H, W)`` or ``(D, H, W)``. The plain networks
(DnCNN, ResNet, U-Net) are residual (``x + net(x)``) with their last convolution initialised at
zero, so an untrained prox is the identity and an untrained unrolled solver is plain gradient
descent on the data term. That start matters at laptop scale: a few minutes of training begin
from a sensible reconstruction instead of from noise.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..deq import FixedPointStats


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


def zero_last(conv: nn.Module) -> None:
    """Zero a layer's weight and bias: the residual update it ends (a prox's, the RIM's) starts at zero."""
    nn.init.zeros_(conv.weight)
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def batch_norm_layer(features: int, dims: int) -> nn.Module:
    """BatchNorm over ``features`` channels of 2-D or 3-D images."""
    return nn.BatchNorm2d(features) if dims == 2 else nn.BatchNorm3d(features)


def inverse_softplus(value: float) -> float:
    """``softplus^-1(value)`` for value > 0: the raw parameter that starts at ``value``."""
    return value + math.log(-math.expm1(-value))


__all__ = ["Prox", "batch_norm_layer", "inverse_softplus", "zero_last"]
