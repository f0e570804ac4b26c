"""Unrolled proximal gradient descent with any learned proximal map (written once, used by every family).

K folds of::

    d_k     = x_k + mu_k A^T (y - A x_k)          (gradient step on 0.5 ||y - A x||^2)
    x_{k+1} = prox_k(d_k)                          (learned proximal map)

with trainable step sizes ``mu_k > 0``. The data step is
:func:`~learn2invert.operators.likelihood.data_gradient` with unit variance, so nonlinear
operators (``J^T (y - A(x))``) and Poisson data fit too. With ``step_units="lipschitz"`` (the default) the
``mu_k`` count in units of ``1 / ||A||^2`` (power iteration, or the norm the operator reports),
so one config suits CT and unnormalised projections as well as orthonormal MRI.

The prox is any :class:`~learn2invert.nn.prox.base.Prox` (an ``nn.Module`` mapping an image to
an image, with optional hooks), e.g. one of :mod:`learn2invert.nn.prox`: the ResNet / U-Net /
DnCNN baselines, the GLOW latent shrinkage of the flow-unfolding paper
(:mod:`learn2invert.nn.prox.glow`) or the shallow equilibrium regulariser of LUSER
(:mod:`learn2invert.nn.prox.luser`). Weights are untied (one prox per fold) or shared (one prox
for every fold).

The scalar parameters (step sizes, and the scalars each prox lists in its
``scalar_parameters()``) may train with their own learning rate: :meth:`parameter_groups` gives
the optimiser groups, as the flow-unfolding paper trains ``mu`` and ``lambda`` at 1e-2 while the
networks train at 1e-5.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoint import MODEL_FILE, read_weights
from ..nn.deq import summarise_stats
from ..nn.prox.base import Prox, inverse_softplus
from ..operators.base import LinearOperator
from ..operators.likelihood import back_projection, lipschitz_scale
from ..registry import PROXES
from .base import Solver, check_step_units

INITS = ("adjoint", "measurement", "zeros", "prox")


class UnrolledProximalGradient(Solver):
    """Proximal gradient descent unrolled for K folds with learned proximal maps.

    Args:
        proxes: one :class:`~learn2invert.nn.prox.base.Prox` (shared by every fold) or K of them
            (untied, one per fold).
        folds: K; with a single shared prox it may exceed 1, with untied proxes it must equal
            ``len(proxes)``.
        step_init: initial step size ``mu`` (in the units of ``step_units``: with the default
            Lipschitz units 1 is a stable step on any operator; in absolute units set
            ``1 / ||A||^2`` for CT).
        learn_step: train ``mu_k`` (otherwise they stay at ``step_init``).
        init: starting image ``x_0``: ``"adjoint"`` (``A^T y``; CT, MRI), ``"measurement"`` (``y``
            itself, for operators whose measurements live in image space: denoising, deblurring,
            inpainting), ``"zeros"``, or ``"prox"`` (the prox's own ``initial_guess(like)``, e.g.
            the most likely image of a flow prior).
        last_prox: apply the prox in the last fold. ``False`` ends on the data step ``d_{K-1}``,
            which is the flow-unfolding paper's eq. (12) (``x_hat = g_K(z~_K) = d_{K-1}``).
        scalar_lr: learning rate of the scalar parameters in :meth:`parameter_groups`; ``None``
            trains them with the networks' rate.
        step_units: ``"lipschitz"`` (default): the step of each call is ``mu_k / ||A||^2`` with
            ``||A||^2`` from :func:`~learn2invert.operators.likelihood.operator_norm_squared` (the
            operator's own ``norm_squared()`` or a cached power iteration), and ``init="adjoint"``
            starts from ``A^T y / ||A||^2`` (one such step from zero; a nonlinear operator's
            ``A_dagger(y)`` as it is). Then ``step_init = 1`` is a stable gradient step on any
            operator and an untrained solver starts near the best-scaled back-projection.
            ``"absolute"``: ``mu_k`` as they are (how runs saved before December 2026 were trained;
            their saved configs load in these units). On operators of norm 1 (denoising,
            inpainting, MRI) both give the same outputs.
        channels, dims: the image channels and spatial dimensions the proxes take, checked at
            each call (``None``: not checked here; a mismatch then fails inside the prox).

    Call ``solver(y, operator, x0=None, steps=None, sigma=None)``; returns ``[x_1, ..., x_K]``,
    each of the image shape ``(B, C, *S)``. ``sigma`` is accepted for interface compatibility and
    unused.
    """

    def __init__(self, proxes: nn.Module | Sequence[nn.Module], folds: int = 4, step_init: float = 1.0,
                 learn_step: bool = True, init: str = "adjoint", last_prox: bool = True,
                 scalar_lr: float | None = None, step_units: str = "lipschitz", channels: int | None = None,
                 dims: int | None = None) -> None:
        super().__init__()
        modules = [proxes] if isinstance(proxes, nn.Module) else list(proxes)
        for module in modules:
            if not isinstance(module, Prox):
                raise TypeError(f"proxes must be learn2invert.nn.prox.base.Prox modules (subclass it: forward(x) -> x "
                                f"and optional hooks), got {type(module).__name__}")
        if isinstance(folds, bool) or not isinstance(folds, int) or folds < 1:
            raise ValueError(f"folds must be a positive int, got {folds!r}")
        if len(modules) not in (1, folds):
            raise ValueError(f"give one shared prox or one prox per fold ({folds}), got {len(modules)}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if not step_init > 0:
            raise ValueError(f"step_init must be > 0, got {step_init}")
        self.step_units, self.channels, self.dims = check_step_units(step_units), channels, dims
        self.prox = nn.ModuleList(modules)
        self.folds, self.init, self.last_prox, self.scalar_lr = folds, init, bool(last_prox), scalar_lr
        raw = torch.full((folds,), inverse_softplus(float(step_init)))
        if learn_step:
            self.step_raw = nn.Parameter(raw)
        else:
            self.register_buffer("step_raw", raw)

    @property
    def shared(self) -> bool:
        return len(self.prox) == 1 and self.folds > 1

    def steps(self) -> torch.Tensor:
        """The step sizes ``mu_k``, shape (K,)."""
        return F.softplus(self.step_raw)

    def scalar_parameters(self) -> list[nn.Parameter]:
        """Step sizes plus the scalars each prox declares (e.g. the flow prox's shrinkage)."""
        params = [self.step_raw] if isinstance(self.step_raw, nn.Parameter) else []
        for prox in self.prox:
            params += list(prox.scalar_parameters())
        return params

    def parameter_groups(self, lr: float) -> list[dict]:
        """Optimiser groups: networks at ``lr``, scalars at ``scalar_lr`` (or ``lr``)."""
        scalars = {id(p) for p in self.scalar_parameters()}
        nets = [p for p in self.parameters() if id(p) not in scalars and p.requires_grad]
        groups = [{"params": nets, "lr": lr}] if nets else []
        scalar_params = [p for p in self.scalar_parameters() if p.requires_grad]
        if scalar_params:
            groups.append({"params": scalar_params, "lr": lr if self.scalar_lr is None else float(self.scalar_lr)})
        return groups

    def diagnostics(self) -> dict[str, float]:
        """Fixed-point statistics of the last forward pass (equilibrium proxes only), for training logs."""
        return summarise_stats([s for prox in self.prox for s in prox.stats])

    def initial_estimate(self, y: torch.Tensor, operator: LinearOperator) -> torch.Tensor:
        """The base class's starts, ``A^T y / ||A||^2`` for ``init="adjoint"`` in Lipschitz units, and
        the prox's ``initial_guess`` for ``init="prox"``."""
        if self.init == "prox":
            return self.prox[0].initial_guess(back_projection(operator, y))
        if self.init == "adjoint" and self.step_units == "lipschitz":
            return back_projection(operator, y, scaled=True)
        return super().initial_estimate(y, operator)

    def forward(self, y: torch.Tensor, operator: LinearOperator, x0: torch.Tensor | None = None,
                steps: int | None = None, sigma: float | torch.Tensor | None = None) -> list[torch.Tensor]:
        """Run the folds; returns the K estimates (see the class docstring)."""
        steps = self.check_steps(steps, self.folds, limit=self.folds)
        for prox in self.prox:  # equilibrium proxes log their fixed-point solves per forward pass
            prox.reset_stats()
        x = self.start(y, operator, x0)
        mu = self.steps()
        if self.step_units == "lipschitz":
            mu = mu / lipschitz_scale(operator, x)
        estimates = []
        for k in range(steps):
            d = x + mu[k] * self.data_gradient(x, y, operator)
            if k == self.folds - 1 and not self.last_prox:
                x = d
            else:
                x = self.prox[0 if len(self.prox) == 1 else k](d)
            estimates.append(x)
        return estimates


def load_pretrained_prox(prox: nn.Module, run_dir: str | Path) -> None:
    """Load pre-trained weights from a run folder into ``prox`` (strict; nothing unpickled).

    Two kinds of runs fit: an unrolled solver (its first fold's prox is taken, so a one-fold
    denoiser trained with ``l2i train`` initialises every fold) and, for a prox that holds a
    ``flow``, a flow trained by likelihood (``l2i train`` with ``loss.name: bits_per_dim``).
    """
    state = read_weights(Path(run_dir) / MODEL_FILE)
    prefix = "prox.0."
    if any(k.startswith(prefix) for k in state):
        state, target = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, prox
    else:  # a density run holds its flow as "flow.*"
        target = getattr(prox, "flow", prox)
        if target is not prox and all(k.startswith("flow.") for k in state):
            state = {k[len("flow."):]: v for k, v in state.items()}
    try:
        target.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"pre-trained weights in {run_dir} do not fit this {type(prox).__name__}: {err}") from err


def unrolled_solver(channels: int, dims: int = 2, prox: str = "resnet", folds: int = 4, shared: bool = False,
                    prox_params: dict | None = None, pretrained: str | None = None, freeze_prox: bool = False,
                    **kwargs) -> UnrolledProximalGradient:
    """Build an unrolled solver from config values (registered as solver ``unrolled``).

    Args:
        channels, dims: image channels and spatial dimensions (filled in from the data).
        prox: ``resnet`` | ``unet`` | ``dncnn`` | ``glow`` | ``luser``.
        folds: K.
        shared: one prox for every fold (weight-tied) instead of one per fold.
        prox_params: keyword arguments of the prox class.
        pretrained: run folder whose weights initialise every fold's prox (see
            :func:`load_pretrained_prox`).
        freeze_prox: keep the prox weights fixed and train only the scalars (plug-and-play).
        **kwargs: passed to :class:`UnrolledProximalGradient` (step_init, learn_step, init,
            last_prox, scalar_lr, step_units).
    """
    cls = PROXES.get(prox)  # an unknown name lists the valid ones
    params = dict(prox_params or {})
    proxes = [cls(channels, dims=dims, **params) for _ in range(1 if shared else folds)]
    if pretrained:
        for module in proxes:
            load_pretrained_prox(module, pretrained)
    if freeze_prox:
        for module in proxes:
            for name, p in module.named_parameters():
                if not any(p is s for s in module.scalar_parameters()):
                    p.requires_grad_(False)
    return UnrolledProximalGradient(proxes, folds=folds, channels=channels, dims=dims, **kwargs)


__all__ = ["UnrolledProximalGradient", "inverse_softplus", "INITS", "load_pretrained_prox", "unrolled_solver"]
