"""LUSER's shallow equilibrium regulariser and the DEQ4IP baseline (Guan et al. 2022; Gilton et al. 2021).

**LUSER** is the unrolled proximal-gradient solver of :mod:`learn2invert.solvers.unrolled` with
:class:`ShallowEquilibriumProx` as its prox (``prox: luser``; shared weights = LUSER-SW,
one regulariser per fold = LUSER-DW). At fold k, with ``d_k = x_k + mu_k A^T(y - A x_k)``::

    u     = Inject(d_k)                             (once per fold)
    r*    = Mix(Data(r*) ++ u)                      (fixed point from r = 0, Anderson acceleration)
    x_k+1 = d_k + r*

Every convolution is spectrally normalised (paper Sec. 4.1) and the fixed point is trained by
implicit differentiation (:mod:`learn2invert.nn.deq`), so training memory does not grow with
the number of fixed-point iterations.

**DEQ4IP** makes the whole proximal-gradient step one fixed-point map,
``x* = prox(x* + mu A^T(y - A x*))``, with a spectrally normalised DnCNN prox, solved to
convergence with Anderson acceleration and trained implicitly.

**LU-DnCNN** needs no class of its own: ``solver: {name: unrolled, params: {prox: dncnn, shared: true, folds: 8}}``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.deq import DEQFixedPoint, FixedPointSolver, FixedPointStats, sn_conv, summarise_stats
from ..nn.prox_nets import DnCNN, Prox
from ..operators.base import LinearOperator
from ..operators.likelihood import back_projection, data_gradient, operator_norm_squared
from .base import Solver
from .unrolled import INITS, STEP_UNITS, inverse_softplus, load_pretrained_prox

NEGATIVE_SLOPE = 0.2  # LeakyReLU slope (the paper does not give it)


def _solver(settings: dict | None, default_tol: float, default_iter: int) -> FixedPointSolver:
    return FixedPointSolver(**{"tol": default_tol, "max_iter": default_iter, **(settings or {})})


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
                                         forward_solver=_solver(forward_solver, 1e-3, 15),
                                         backward_solver=_solver(backward_solver, 1e-3, 10), backward=backward)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        injection = self.inject(d)
        # The regulariser learns the residual towards the truth, which shrinks as the folds
        # converge, so every solve starts from r = 0 (paper Sec. 3).
        r = self.equilibrium(torch.zeros_like(d), injection)
        self.stats.append(self.equilibrium.last_forward_stats)
        return d + r


class _ProxGradientMap(nn.Module):
    """``f(x, y, A) = prox(x + mu A^T(y - A x))``: DEQ4IP's fixed-point map (the data step from
    :func:`~learn2invert.operators.likelihood.data_gradient`, so nonlinear operators fit too)."""

    def __init__(self, prox: nn.Module, step_init: float, learn_step: bool) -> None:
        super().__init__()
        self.prox = prox
        raw = torch.tensor(inverse_softplus(float(step_init)))
        if learn_step:
            self.step_raw = nn.Parameter(raw)
        else:
            self.register_buffer("step_raw", raw)

    def forward(self, x: torch.Tensor, y: torch.Tensor, operator: LinearOperator,
                norm_squared: float | None = None) -> torch.Tensor:
        step = F.softplus(self.step_raw)
        if norm_squared is not None:  # step_units="lipschitz": mu in units of 1 / ||A||^2
            step = step / norm_squared
        return self.prox(x + step * data_gradient(operator, x, y, owner="DEQ4IP"))


class DEQ4IP(Solver):
    """Deep equilibrium proximal gradient (Gilton et al. 2021) with a spectrally normalised DnCNN prox.

    Args:
        channels, dims: image channels and spatial dimensions.
        depth, features: of the DnCNN prox (17 and 64 in the LUSER paper's comparison).
        step_init: initial step ``mu`` (units of ``1 / ||A||^2``).
        learn_step: train ``mu``.
        init: starting point of the solve: ``"adjoint"``, ``"measurement"`` or ``"zeros"``.
        forward_solver, backward_solver: :class:`~learn2invert.nn.deq.FixedPointSolver` settings
            (defaults: Anderson, m = 5, tol = 1e-3, at most 30 forward / 20 backward iterations).
        backward: ``"implicit"`` | ``"jacobian_free"`` | ``"unrolled"``.
        pretrained: run folder of a denoiser (a one-fold ``unrolled`` solver with
            ``prox: dncnn, prox_params: {spectral: true, batch_norm: false}``) whose prox
            initialises this one.
        step_units: ``"absolute"`` (default) or ``"lipschitz"``: ``mu`` in units of
            ``1 / ||A||^2`` for each call's operator and ``init="adjoint"`` starting from
            ``A^T y / ||A||^2``, as in :class:`~learn2invert.solvers.unrolled.UnrolledProximalGradient`.

    Call ``deq(y, operator, x0=None, steps=None, sigma=None)``; returns ``[x*]`` of the image shape.
    """

    def __init__(self, channels: int, dims: int = 2, depth: int = 17, features: int = 64, step_init: float = 1.0,
                 learn_step: bool = True, init: str = "adjoint", forward_solver: dict | None = None,
                 backward_solver: dict | None = None, backward: str = "implicit", pretrained: str | None = None,
                 step_units: str = "absolute") -> None:
        super().__init__()
        if step_units not in STEP_UNITS:
            raise ValueError(f"step_units must be one of {STEP_UNITS}, got {step_units!r}")
        self.step_units = step_units
        if init not in INITS or init == "prox":
            raise ValueError(f"init must be adjoint, measurement or zeros, got {init!r}")
        prox = DnCNN(channels, dims=dims, depth=depth, features=features, batch_norm=False, spectral=True)
        if pretrained:
            load_pretrained_prox(prox, pretrained)
        self.init, self.channels, self.dims = init, channels, dims
        self.equilibrium = DEQFixedPoint(_ProxGradientMap(prox, step_init, learn_step),
                                         forward_solver=_solver(forward_solver, 1e-3, 30),
                                         backward_solver=_solver(backward_solver, 1e-3, 20), backward=backward)
        self.stats: list[FixedPointStats] = []

    def diagnostics(self) -> dict[str, float]:
        """Iterations and residuals of the last forward pass's fixed-point solve."""
        return summarise_stats(self.stats)

    def initial_estimate(self, y: torch.Tensor, operator: LinearOperator) -> torch.Tensor:
        """The base class's starts; ``A^T y / ||A||^2`` for ``init="adjoint"`` in Lipschitz units."""
        if self.init == "adjoint" and self.step_units == "lipschitz":
            return back_projection(operator, y, scaled=True)
        return super().initial_estimate(y, operator)

    def forward(self, y: torch.Tensor, operator: LinearOperator, x0: torch.Tensor | None = None,
                steps: int | None = None, sigma: float | torch.Tensor | None = None) -> list[torch.Tensor]:
        """Solve ``x* = prox(x* + mu A^T(y - A x*))`` from ``x0``; ``steps`` and ``sigma`` are unused
        (the solve runs to its tolerance). Returns ``[x*]``, shape ``(B, C, *S)``."""
        x0 = self.start(y, operator, x0)
        if self.step_units == "lipschitz":  # a zero operator has no scale: 1 keeps the step finite
            x = self.equilibrium(x0, y, operator, operator_norm_squared(operator, x0) or 1.0)
        else:
            x = self.equilibrium(x0, y, operator)
        self.stats = [self.equilibrium.last_forward_stats]
        return [x]


__all__ = ["DEQ4IP", "ShallowEquilibriumProx"]
