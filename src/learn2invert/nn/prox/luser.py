"""LUSER's shallow equilibrium regulariser (Guan et al. 2022), the prox of the LUSER solver.

**LUSER** is the unrolled proximal-gradient solver of :mod:`learn2invert.solvers.unrolled` with
:class:`ShallowEquilibriumProx` as its prox (``prox: luser``; shared weights = LUSER-SW,
one regulariser per fold = LUSER-DW). At fold k, with ``d_k = x_k + mu_k A^T(y - A x_k)``::

    u     = Inject(d_k)                             (once per fold)
    r*    = Mix(Data(r*) ++ u)                      (fixed point from r = 0, Anderson acceleration)
    x_k+1 = d_k + r*

Every convolution is spectrally normalised (paper Sec. 4.1) and the fixed point is trained by
implicit differentiation (:mod:`learn2invert.nn.deq`), so training memory does not grow with
the number of fixed-point iterations.

Its baseline DEQ4IP, the whole proximal-gradient step as one fixed point, is
:class:`learn2invert.solvers.deq4ip.DEQ4IP`.

**LU-DnCNN** needs no class of its own: ``solver: {name: unrolled, params: {prox: dncnn, shared: true, folds: 8}}``.
"""
from __future__ import annotations

import torch
from torch import nn

from ..deq import DEQFixedPoint, FixedPointSolver, sn_conv
from .base import Prox

NEGATIVE_SLOPE = 0.2  # LeakyReLU slope (the paper does not give it)


class _EquilibriumMap(nn.Module):
    """``f(r, u) = gain * Mix(Data(r) ++ u)``: the part of the LUSER regulariser iterated to its fixed point.

    ``gain`` is a learned scalar (not in the paper). Spectral norm fixes the scale of the last
    convolution, and the GroupNorm of the data layer makes the random map far from contractive
    near r = 0 (measured: no convergence in 200 Anderson iterations at gain 1, 90 at gain 0.01).
    A small starting gain makes the untrained regulariser a small, contractive correction of
    ``d_k``, which a few minutes of training can then grow.
    """

    def __init__(self, channels: int, dims: int, features: int, groups: int, gain_init: float) -> None:
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(float(gain_init)))
        act = lambda: nn.LeakyReLU(NEGATIVE_SLOPE)  # noqa: E731
        self.data = nn.Sequential(sn_conv(channels, features, 3, dims), nn.GroupNorm(groups, features), act(),
                                  sn_conv(features, features, 3, dims), nn.GroupNorm(groups, features), act())
        both = 2 * features
        self.mix = nn.Sequential(sn_conv(both, both, 3, dims), nn.GroupNorm(groups, both), act(),
                                 sn_conv(both, both, 3, dims), nn.GroupNorm(groups, both), act(),
                                 sn_conv(both, channels, 3, dims))

    def forward(self, r: torch.Tensor, injection: torch.Tensor) -> torch.Tensor:
        return self.gain * self.mix(torch.cat([self.data(r), injection], dim=1))


class ShallowEquilibriumProx(Prox):
    """LUSER's learned proximal update (paper Table 1): ``d -> d + r*`` with ``r* = Mix(Data(r*) ++ Inject(d))``.

    Args:
        channels: image channels C (the paper's table is for C = 1).
        dims: 2 or 3 spatial dimensions.
        features: channels of the injection and data layers (the mix layer has twice as many);
            the paper uses 32.
        groups: GroupNorm groups.
        forward_solver: settings of :class:`~learn2invert.nn.deq.FixedPointSolver` for the
            forward solve (defaults: Anderson, m = 5, tol = 1e-3, at most 15 iterations).
        backward_solver: the same for the implicit backward (defaults: tol = 1e-3, at most 10).
        backward: ``"implicit"`` | ``"jacobian_free"`` | ``"unrolled"`` (reference, memory grows).
        gain_init: starting value of the learned output gain of the mixing layer (see
            :class:`_EquilibriumMap`; not in the paper).

    ``(B, C, *S) -> (B, C, *S)``. Each call appends its fixed-point statistics to
    :attr:`stats` (cleared by :meth:`reset_stats`), so the solver can log them.
    """

    def __init__(self, channels: int, dims: int = 2, features: int = 32, groups: int = 8,
                 forward_solver: dict | None = None, backward_solver: dict | None = None,
                 backward: str = "implicit", gain_init: float = 0.01) -> None:
        super().__init__()
        if features % groups or (2 * features) % groups:
            raise ValueError(f"features ({features}) must be divisible by groups ({groups})")
        act = lambda: nn.LeakyReLU(NEGATIVE_SLOPE)  # noqa: E731
        self.inject = nn.Sequential(sn_conv(channels, features, 3, dims), act(), sn_conv(features, features, 3, dims), act())
        self.equilibrium = DEQFixedPoint(_EquilibriumMap(channels, dims, features, groups, gain_init),
                                         forward_solver=FixedPointSolver.from_settings(forward_solver, 1e-3, 15),
                                         backward_solver=FixedPointSolver.from_settings(backward_solver, 1e-3, 10), backward=backward)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        injection = self.inject(d)
        # The regulariser learns the residual towards the truth, which shrinks as the folds
        # converge, so every solve starts from r = 0 (paper Sec. 3).
        r = self.equilibrium(torch.zeros_like(d), injection)
        self.stats.append(self.equilibrium.last_forward_stats)
        return d + r


__all__ = ["ShallowEquilibriumProx"]
