"""Unrolled ADMM with learned proximal CNNs (ADMM-Net style, Yang et al. 2016; the overview slides).

ADMM for ``min_x 0.5 ||A x - y||^2 + R(z)`` subject to ``x = z``, unrolled for K stages, with the
prox of R replaced by a small residual CNN per stage and the penalty and dual step learned::

    x_k = argmin_x 0.5 ||A x - y||^2 + rho_k / 2 ||x - z_{k-1} + u_{k-1}||^2
        = (A^T A + rho_k I)^-1 (A^T y + rho_k (z_{k-1} - u_{k-1}))      (conjugate gradients)
    z_k = x_k + u_{k-1} + CNN_k(x_k + u_{k-1})                          (learned prox)
    u_k = u_{k-1} + eta_k (x_k - z_k)                                    (dual ascent)

``rho_k = softplus(.)`` and ``eta_k = softplus(.)`` are trainable and positive; in Lipschitz units
(the default) ``rho_k`` is multiplied by ``||A||^2`` and the start is ``A^T y / ||A||^2``, so the
penalty weighs the prior as much as the data term whatever the operator's scale. The x-update
works for any linear operator (a fixed number of CG iterations, differentiated through by
autograd). The solver returns ``[z_1, ..., z_K]`` so the training engine can weigh all stages.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.conv_gru import conv_nd
from ..operators.base import LinearOperator
from ..operators.likelihood import back_projection, lipschitz_scale, normal
from .base import Solver, check_step_units
from .classical import conjugate_gradient


class ProxCNN(nn.Module):
    """Residual update of one stage: conv 3x3 -> ReLU -> conv 3x3 -> ReLU -> conv 3x3 (last one starts at zero)."""

    def __init__(self, channels: int, features: int, dims: int) -> None:
        super().__init__()
        conv = conv_nd(dims)
        self.net = nn.Sequential(conv(channels, features, 3, padding=1), nn.ReLU(),
                                 conv(features, features, 3, padding=1), nn.ReLU(),
                                 conv(features, channels, 3, padding=1))
        nn.init.zeros_(self.net[-1].weight)  # the untrained prox is the identity
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v + self.net(v)


class ADMMNet(Solver):
    """Unrolled ADMM with a learned CNN prox per stage.

    Args:
        channels: image channels (2 for complex MRI).
        dims: 2 or 3 spatial dimensions.
        stages: K, number of unrolled ADMM iterations (untied weights).
        features: channels of each prox CNN.
        rho_init: initial penalty ``rho`` (in the units of ``step_units``: with the default
            Lipschitz units 1 weighs the prior like the data term on any operator; in absolute
            units 1 suits orthonormal operators such as single-coil MRI).
        eta_init: initial dual step.
        cg_iterations: conjugate-gradient iterations of each x-update (exact in one for MRI,
            where ``A^T A`` is a projection; more for blur or CT).
        step_units: ``"lipschitz"`` (default): ``rho_k`` in units of ``||A||^2`` (from
            :func:`~learn2invert.operators.likelihood.operator_norm_squared`) and the start
            ``A^T y / ||A||^2``; ``"absolute"``: ``rho_k`` as it is and the start ``A^T y`` (how
            runs saved before December 2026 were trained; their saved configs load in these
            units). On operators of norm 1 (MRI, denoising, inpainting) both give the same outputs.

    Call ``admm(y, operator, x0=None, steps=None, sigma=None)``: ``x0`` defaults to ``A^T y``
    (divided by ``||A||^2`` in Lipschitz units);
    ``steps`` may be at most K (untied stages); ``sigma`` is accepted and unused. ``y`` and ``x0``
    must be finite and in the parameters' dtype (``ValueError`` otherwise).
    """

    def __init__(self, channels: int = 2, dims: int = 2, stages: int = 8, features: int = 32, rho_init: float = 1.0,
                 eta_init: float = 1.0, cg_iterations: int = 5, step_units: str = "lipschitz") -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
            raise ValueError(f"stages must be a positive int, got {stages!r}")
        if not rho_init > 0 or not eta_init > 0:
            raise ValueError(f"rho_init and eta_init must be > 0, got {rho_init}, {eta_init}")
        if cg_iterations < 1:
            raise ValueError(f"cg_iterations must be >= 1, got {cg_iterations}")
        self.step_units = check_step_units(step_units)
        self.channels, self.dims, self.stages, self.cg_iterations = channels, dims, stages, cg_iterations
        self.prox = nn.ModuleList(ProxCNN(channels, features, dims) for _ in range(stages))
        inv_softplus = lambda v: math.log(math.expm1(v))  # noqa: E731 - parameters store softplus^-1
        self.rho_raw = nn.Parameter(torch.full((stages,), inv_softplus(rho_init)))
        self.eta_raw = nn.Parameter(torch.full((stages,), inv_softplus(eta_init)))

    def forward(self, y: torch.Tensor, operator: LinearOperator, x0: torch.Tensor | None = None,
                steps: int | None = None, sigma: float | torch.Tensor | None = None) -> list[torch.Tensor]:
        """Returns the K estimates ``z_k``, each with the image shape ``(B, C, *S)``."""
        steps = self.check_steps(steps, self.stages, limit=self.stages)
        z = self.start(y, operator, x0)
        # the right-hand side of every x-update
        aty = z if x0 is None and self.step_units == "absolute" else operator.A_adjoint(y)
        if aty.shape != z.shape or aty.dtype != z.dtype:
            raise ValueError(f"ADMMNet: x0 must have the shape and dtype of A_adjoint(y), {tuple(aty.shape)} "
                             f"{aty.dtype}; got {tuple(z.shape)} {z.dtype}")
        u = torch.zeros_like(z)
        rho, eta = F.softplus(self.rho_raw), F.softplus(self.eta_raw)
        if self.step_units == "lipschitz":
            rho = rho * lipschitz_scale(operator, aty)
        estimates = []
        for k in range(steps):
            x = conjugate_gradient(lambda v, r=rho[k]: normal(operator, v) + r * v, aty + rho[k] * (z - u),
                                   x0=z, iterations=self.cg_iterations, tolerance=0.0)
            z = self.prox[k](x + u)
            u = u + eta[k] * (x - z)
            estimates.append(z)
        return estimates

    def initial_estimate(self, y: torch.Tensor, operator: LinearOperator) -> torch.Tensor:
        """``A^T y``, divided by ``||A||^2`` in Lipschitz units."""
        return back_projection(operator, y, scaled=self.step_units == "lipschitz")


__all__ = ["ADMMNet", "ProxCNN"]
