"""Invertible recurrent inference machine (i-RIM), Putzky & Welling 2019, trained with O(1) activation memory.

The machine state is one tensor ``h = (eta, s)`` of ``state_channels`` channels (paper: 64):
``eta = h[:, :C]`` is the estimate (link ``Psi`` = identity, as in the paper's MRI experiments)
and ``s = h[:, C:]`` the memory. Each step t (paper Sec. 2.1, with untied weights)::

    s'_t             = s_t + g_t(grad_t)           g_t: the gradient placed in the first C channels
                                                    of s, zeros elsewhere (paper Sec. 3.3)
    (eta, s)_{t+1}   = h_t(eta_t, s'_t)             h_t: a stack of invertible layers
                                                    (:class:`~learn2invert.nn.irim_layers.IRIMLayer`)

with ``grad_t = A^T (y - A eta_t) / (sigma^2 + eps)``, ``eps = softplus(phi)`` trainable (as in
the RIM; it keeps noise-free problems finite); for nonlinear operators and Poisson noise the
gradient of the log-likelihood from :func:`~learn2invert.operators.likelihood.data_gradient`
(the data step stays invertible: it shifts ``s`` by a function of ``eta`` only). The first update is an additive coupling
conditioned on ``eta``, so the whole step is invertible and the engine in
:mod:`learn2invert.nn.invertible` trains the model without storing activations; ``y``, the
operator and ``sigma`` are per-call constants of the data step.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..nn.invertible import invertible_sequence, local_backward
from ..nn.irim_layers import IRIMLayer
from ..operators.base import LinearOperator
from .base import Solver

MEMORY_MODES = ("invertible", "autograd")
# A 10-layer "fanned" pattern of downsampling factors per step (paper Sec. 3.3: 10 invertible
# layers with fanned downsampling; its appendix is not part of our copy, so the factors are ours).
DEFAULT_DOWNSAMPLING = (1, 1, 2, 2, 4, 4, 2, 2, 1, 1)


class _DataStep:
    """``s' = s + [grad(eta); 0]``: the data-consistency update of one i-RIM step, for one call.

    An additive coupling (``eta`` unchanged, ``s`` shifted by a function of ``eta``), built per call
    because it holds that call's ``y``, operator, noise variance and unit of ``eps``
    (:meth:`Solver.eps_scale`, looked up once per call). Follows the engine's layer protocol; its
    only parameter is the i-RIM's ``phi``.
    """

    def __init__(self, irim: "IRIM", y: torch.Tensor, operator: LinearOperator, sigma2: torch.Tensor,
                 eps_scale: float) -> None:
        self.irim, self.y, self.operator, self.sigma2, self.eps_scale = irim, y, operator, sigma2, eps_scale
        self.c = irim.channels

    def gradient(self, eta: torch.Tensor) -> torch.Tensor:
        return self.irim.likelihood_gradient(eta, self.y, self.operator, self.sigma2, self.eps_scale)

    def _shift(self, h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        c = self.c
        return torch.cat([h[:, :c], h[:, c : 2 * c] + g, h[:, 2 * c :]], dim=1)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self._shift(h, self.gradient(h[:, : self.c]))

    def inverse(self, h: torch.Tensor) -> torch.Tensor:
        return self._shift(h, -self.gradient(h[:, : self.c]))

    def trainable_parameters(self) -> list[torch.Tensor]:
        return [self.irim.phi] if self.irim.phi.requires_grad else []

    def invert_and_backward(self, h: torch.Tensor, grad_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
        c = self.c
        with torch.enable_grad():
            eta = h[:, :c].detach().requires_grad_(True)
            g = self.gradient(eta)  # one evaluation of A and A^T: inversion and backward
            grads = local_backward(g, [eta, *self.trainable_parameters()], grad_h[:, c : 2 * c])
        x = self._shift(h, -g.detach())
        grad_x = grad_h.clone()
        if grads[0] is not None:
            grad_x[:, :c] += grads[0]
        return x, grad_x, grads[1:]


class IRIM(Solver):
    """Invertible RIM for linear inverse problems ``y = A x + n``.

    Args:
        channels: image channels C (2 for complex MRI as real/imaginary, 1 grey, 3 RGB).
        dims: 2 for images ``(B, C, H, W)``, 3 for volumes ``(B, C, D, H, W)``.
        steps: T, number of steps (paper: 8). Weights are not shared across steps, so a call
            may run fewer steps than T but not more.
        state_channels: channels of the machine state ``(eta, s)`` (paper: 64); >= 2 C.
        hidden_channels: k, hidden channels of each residual block (paper: 64).
        downsampling: the factors d of the invertible layers of one step, e.g. the default
            fanned ``(1, 1, 2, 2, 4, 4, 2, 2, 1, 1)`` (10 layers per step). Image height and width
            must be divisible by every factor.
        householder: D, Householder reflections per orthogonal 1x1 convolution (paper: 3).
        memory: ``"invertible"`` (default: no activations stored, layers inverted during backward)
            or ``"autograd"`` (plain back-propagation; same outputs and gradients, memory grows
            with depth).
        anchor_every: with ``memory="invertible"``, also store every k-th layer's input to bound
            floating-point drift (0: never).
        sigma: default noise standard deviation in units of ``y`` (used when the call gives none).
        eps_init: initial ``eps = softplus(phi)`` added to ``sigma^2``.
        eps_units: ``"lipschitz"`` (default): ``eps`` in units of each call's ``||A||^2``, so the
            data gradient has the units of ``x`` on any operator; ``"absolute"``: in units of
            ``y^2`` (runs saved before December 2026). The same on operators of norm 1 (MRI,
            denoising, inpainting). See :meth:`~learn2invert.solvers.base.Solver.add_eps`.
        init: initial estimate ``eta_0``: ``"zeros"`` (the paper: machine state initialised with
            zeros), ``"adjoint"`` (``A^T y``) or ``"scaled_adjoint"`` (``A^T y / ||A||^2``, in the
            units of ``x`` on any operator, e.g. CT). Nonlinear operators start from ``A_dagger(y)``
            for both adjoint choices.
        identity_init: start every invertible layer as the identity (see ``IRIMLayer(zero_init)``),
            so an untrained i-RIM returns its initial estimate; with ``init="adjoint"`` training
            starts from the zero-filled image. Not in the paper; default True.

    Call ``irim(y, operator, x0=None, steps=None, sigma=None)``: see :meth:`forward`.
    """

    def __init__(
        self,
        channels: int = 2,
        dims: int = 2,
        steps: int = 8,
        state_channels: int = 64,
        hidden_channels: int = 64,
        downsampling: Sequence[int] = DEFAULT_DOWNSAMPLING,
        householder: int = 3,
        memory: str = "invertible",
        anchor_every: int = 0,
        sigma: float = 1.0,
        eps_init: float = 1.0,
        init: str = "zeros",
        identity_init: bool = True,
        eps_units: str = "lipschitz",
    ) -> None:
        super().__init__()
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.check_steps(steps, steps)
        if state_channels < 2 * channels:
            raise ValueError(f"state_channels must be >= 2 * channels = {2 * channels} (estimate + gradient), "
                             f"got {state_channels}")
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {MEMORY_MODES} for the i-RIM, got {memory!r}")
        if init not in ("zeros", "adjoint", "scaled_adjoint"):
            raise ValueError(f"init must be 'zeros', 'adjoint' or 'scaled_adjoint', got {init!r}")
        downsampling = tuple(int(d) for d in downsampling)
        if not downsampling or min(downsampling) < 1:
            raise ValueError(f"downsampling must list factors >= 1, got {downsampling}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.channels, self.dims, self.steps = channels, dims, steps
        self.state_channels, self.downsampling = state_channels, downsampling
        self.memory, self.anchor_every, self.sigma, self.init = memory, anchor_every, float(sigma), init
        self.blocks = nn.ModuleList(
            nn.ModuleList(IRIMLayer(state_channels, hidden_channels, d, householder, dims, identity_init)
                          for d in downsampling)
            for _ in range(steps)
        )
        self.add_eps(eps_init, eps_units)

    @property
    def layers(self) -> int:
        """Invertible layers in the whole model (steps x layers per step), the paper's "network depth"."""
        return self.steps * len(self.downsampling)

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, dims={self.dims}, steps={self.steps}, state_channels={self.state_channels}, "
                f"downsampling={self.downsampling}, memory={self.memory!r}")

    def likelihood_gradient(self, eta: torch.Tensor, y: torch.Tensor, operator: LinearOperator,
                            sigma2: torch.Tensor, eps_scale: float | None = None) -> torch.Tensor:
        """``grad_eta log p(y | eta)`` with noise variance ``sigma^2 + eps``, shape of ``eta``: ``A^T (y - A eta) /
        (sigma^2 + eps)`` for linear operators, see :func:`~learn2invert.operators.likelihood.data_gradient`."""
        return self.data_gradient(eta, y, operator, sigma2, eps_scale)

    def check_image(self, x: torch.Tensor, what: str = "the image (x0, or A_adjoint(y) when x0 is None)") -> None:
        """The base checks, and H, W divisible by the largest downsampling factor."""
        super().check_image(x, what)
        factor = max(self.downsampling)
        if any(n % factor for n in x.shape[-2:]):
            layout = "(B, C, H, W)" if self.dims == 2 else "(B, C, D, H, W)"
            raise ValueError(f"IRIM: images must have shape {layout} with H and W divisible by the largest "
                             f"downsampling factor {factor}; the image has shape {tuple(x.shape)}")

    def step_layers(self, t: int, y: torch.Tensor, operator: LinearOperator, sigma2: torch.Tensor,
                    eps_scale: float) -> list:
        """The invertible layers of step t (data step, then ``h_t``) for one call."""
        return [_DataStep(self, y, operator, sigma2, eps_scale), *self.blocks[t]]

    def forward(self, y: torch.Tensor, operator: LinearOperator, x0: torch.Tensor | None = None,
                steps: int | None = None, sigma: float | torch.Tensor | None = None) -> list[torch.Tensor]:
        """Run the i-RIM.

        Args:
            y: measurements in the layout ``operator`` expects.
            operator: the forward model (``A`` and its data-consistency gradient, see
                :func:`~learn2invert.operators.likelihood.data_gradient`).
            x0: initial estimate ``(B, C, *S)``; default zeros (``init="zeros"``) or ``A^T y``
                (``A_dagger(y)`` for nonlinear operators). Given ``x0``, ``A_adjoint(y)`` is never computed.
            steps: steps to run, 1..T (default T).
            sigma: noise standard deviation in units of ``y`` (float or ``(B, 1, ..., 1)``).

        Returns:
            The estimates ``eta_t``, each ``(B, C, *S)``: all T of them when no gradient is
            recorded (inference) or with ``memory="autograd"``; only the last one when training
            with ``memory="invertible"`` (intermediate states are not kept; the paper's loss is
            on the last step).
        """
        steps = self.check_steps(steps, self.steps, limit=self.steps)
        x0 = self.start(y, operator, x0)
        sigma2 = self.noise_variance(sigma, x0)
        if x0.shape[0] == 0:  # empty batch: nothing to run (the invertible layers reject B = 0)
            kept = 1 if self.memory == "invertible" and torch.is_grad_enabled() else steps
            return [x0.clone() for _ in range(kept)]
        pad = x0.new_zeros((x0.shape[0], self.state_channels - self.channels, *x0.shape[2:]))
        h = torch.cat([x0, pad], dim=1)
        c = self.channels
        eps_scale = self.eps_scale(operator, x0)  # ||A||^2 once per call, not once per data step
        if self.memory == "invertible" and torch.is_grad_enabled():
            layers = [layer for t in range(steps) for layer in self.step_layers(t, y, operator, sigma2, eps_scale)]
            return [invertible_sequence(layers, h, self.anchor_every)[:, :c]]
        iterates = []
        for t in range(steps):
            for layer in self.step_layers(t, y, operator, sigma2, eps_scale):
                h = layer.forward(h)
            iterates.append(h[:, :c])
        return iterates


__all__ = ["IRIM", "DEFAULT_DOWNSAMPLING", "MEMORY_MODES"]
