"""DEQ4IP (Gilton et al. 2021): deep equilibrium proximal gradient, the LUSER paper's baseline.

The whole proximal-gradient step is one fixed-point map, ``x* = prox(x* + mu A^T(y - A x*))``,
with a spectrally normalised DnCNN prox (:class:`learn2invert.nn.prox.dncnn.DnCNN`), solved to
convergence with Anderson acceleration and trained by implicit differentiation
(:mod:`learn2invert.nn.deq`), so training memory does not grow with the number of iterations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.deq import DEQFixedPoint, FixedPointSolver, FixedPointStats, summarise_stats
from ..nn.prox.base import inverse_softplus
from ..nn.prox.dncnn import DnCNN
from ..operators.base import LinearOperator
from ..operators.likelihood import back_projection, data_gradient, lipschitz_scale
from .base import Solver, check_step_units
from .unrolled import INITS, load_pretrained_prox


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
        step_units: ``"lipschitz"`` (default): ``mu`` in units of ``1 / ||A||^2`` for each call's
            operator and ``init="adjoint"`` starting from ``A^T y / ||A||^2``, as in
            :class:`~learn2invert.solvers.unrolled.UnrolledProximalGradient`; ``"absolute"``: ``mu``
            as it is (how runs saved before December 2026 were trained).

    Call ``deq(y, operator, x0=None, steps=None, sigma=None)``; returns ``[x*]`` of the image shape.
    """

    def __init__(self, channels: int, dims: int = 2, depth: int = 17, features: int = 64, step_init: float = 1.0,
                 learn_step: bool = True, init: str = "adjoint", forward_solver: dict | None = None,
                 backward_solver: dict | None = None, backward: str = "implicit", pretrained: str | None = None,
                 step_units: str = "lipschitz") -> None:
        super().__init__()
        self.step_units = check_step_units(step_units)
        if init not in INITS or init == "prox":
            raise ValueError(f"init must be adjoint, measurement or zeros, got {init!r}")
        prox = DnCNN(channels, dims=dims, depth=depth, features=features, batch_norm=False, spectral=True)
        if pretrained:
            load_pretrained_prox(prox, pretrained)
        self.init, self.channels, self.dims = init, channels, dims
        self.equilibrium = DEQFixedPoint(_ProxGradientMap(prox, step_init, learn_step),
                                         forward_solver=FixedPointSolver.from_settings(forward_solver, 1e-3, 30),
                                         backward_solver=FixedPointSolver.from_settings(backward_solver, 1e-3, 20), backward=backward)
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
        if self.step_units == "lipschitz":
            x = self.equilibrium(x0, y, operator, lipschitz_scale(operator, x0))
        else:
            x = self.equilibrium(x0, y, operator)
        self.stats = [self.equilibrium.last_forward_stats]
        return [x]


__all__ = ["DEQ4IP"]
