"""GLOW (Kingma & Dhariwal 2018): a multi-scale normalizing flow, trainable with O(1) activation memory.

The flow-unfolding paper (../shared/papers/flow-unfolding-2021-normalizing-flow-priors.txt,
Sec. IV) uses GLOW as a learned prior and trains it with the invertible-learning engine of
:mod:`learn2invert.nn.invertible`. One *step* of flow is

::

    ActNorm  ->  invertible 1x1 convolution (LU form)  ->  affine coupling

and the multi-scale architecture (Dinh et al. 2017) is, for each of the ``levels`` levels:
squeeze (2x2 space-to-depth), ``depth`` steps, then (every level but the last) factor out half
of the channels as latents. The base distribution is a standard normal on *all* latents (the
factored-out ones included: no learned conditional prior, deliberately simple).

Shapes: images ``(B, C, H, W)`` with ``H`` and ``W`` divisible by ``2**levels``; latents are
returned flattened and concatenated, ``(B, C*H*W)``, in the order: the half factored out at
level 0, at level 1, ..., then the output of the last level.

Log-determinants in invertible mode
-----------------------------------
Every flow layer's ``log|det J|`` is a sum over pixels of a per-pixel *density*: ``sum_c
log_scale`` for ActNorm, ``sum log|s|`` for the 1x1 convolution (both constant over pixels
and samples) and ``sum_c log s(x)[c, h, w]`` for the coupling (data dependent). The coupling's
term depends on activations that the engine does not store, so it cannot be computed after the
fact. Instead the engine runs on a *packed state* ``(B, C + 1, H, W)`` whose extra last channel
is the running log-det density map: each layer maps ``[x, ld] -> [f(x), ld + density(x)]``,
which is still exactly invertible (``ld = ld' - density(x)``, with ``x`` rebuilt first), and
the flow's log-det is the pixel sum of the last channel at the end of a level. Because the
log-det now is an ordinary output of the invertible stack, the engine's layer-wise
back-propagation delivers exact gradients of any loss on it (``log_prob`` included), with no
extra pass and nothing stored. ActNorm and the 1x1 convolution go through the same channel
(their constant densities are simply broadcast), so all three layers share one mechanism.
The coupling's :meth:`AffineCoupling.invert_and_backward_packed` evaluates its network once, for both the
inversion and the local backward, as the engine's additive couplings do.

``memory="invertible"`` uses the engine for the per-level stacks of :meth:`Glow.encode` (packed
state) and :meth:`Glow.decode` (layers run backwards) whenever autograd is recording (grad
enabled and something requires a gradient), in train and eval mode alike: optimising a loss
through a frozen flow (latent-space reconstruction, paper eq. 7) benefits too. With grad
disabled both memory modes run the same plain layer calls.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .invertible import InvertibleModule, invertible_sequence, local_backward
from .irim_layers import channel_matmul

__all__ = [
    "ActNorm",
    "AffineCoupling",
    "FlowLayer",
    "Glow",
    "InvConv1x1",
    "dequantize",
    "squeeze2d",
    "unsqueeze2d",
]


def squeeze2d(x: torch.Tensor) -> torch.Tensor:
    """Space-to-depth 2x2: ``(B, C, H, W)`` -> ``(B, 4C, H/2, W/2)`` (volume preserving, log-det 0).

    Output channel ``4c + 2i + j`` holds pixel ``(i, j)`` of each 2x2 block of input channel ``c``.
    """
    b, c, h, w = x.shape
    if h % 2 or w % 2:
        raise ValueError(f"squeeze needs even H and W, got {h}x{w}")
    x = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4)
    return x.reshape(b, 4 * c, h // 2, w // 2)


def unsqueeze2d(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`squeeze2d`: ``(B, 4C, H, W)`` -> ``(B, C, 2H, 2W)``."""
    b, c, h, w = x.shape
    if c % 4:
        raise ValueError(f"unsqueeze needs channels divisible by 4, got {c}")
    x = x.reshape(b, c // 4, 2, 2, h, w).permute(0, 1, 4, 2, 5, 3)
    return x.reshape(b, c // 4, 2 * h, 2 * w)


def dequantize(x: torch.Tensor, bits: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform dequantisation of images stored as ``k / (2**bits - 1)`` in ``[0, 1]`` (e.g. 8-bit / 255).

    Returns ``(k + u) / 2**bits`` with ``u ~ U[0, 1)``: values in ``[0, 1)``, each of the
    ``2**bits`` levels spread over its own bin of width ``2**-bits``. This is the input that
    :meth:`Glow.bits_per_dim` assumes.
    """
    levels = 2 ** bits
    k = torch.round(x * (levels - 1)).clamp(0, levels - 1)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    return (k + u) / levels


def _sum_density(density: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Log-det ``(B,)`` from a per-pixel density broadcastable to ``(B, 1, H, W)`` of ``like``."""
    return density.expand(like.shape[0], 1, *like.shape[2:]).sum(dim=(1, 2, 3))


class FlowLayer(InvertibleModule):
    """Base of the GLOW layers: an invertible map of ``(B, C, H, W)`` with a per-pixel log-det density.

    Subclasses define :meth:`transform` and :meth:`untransform` (pure maths, no side effects).
    On top of them this class provides

    - the plain :class:`InvertibleModule` interface ``forward(x) -> y``, ``inverse(y) -> x`` and a
      generic ``invert_and_backward`` (so a stack of flow layers trains through
      :func:`~learn2invert.nn.invertible.invertible_sequence` for losses on ``y`` alone);
    - ``forward_and_logdet(x) -> (y, logdet (B,))`` for the plain autograd path;
    - the packed interface ``forward_packed`` / ``inverse_packed`` / ``invert_and_backward_packed`` on
      ``(B, C + 1, H, W)`` states whose last channel carries the running log-det density (see
      the module docstring); :meth:`engine_view` wraps it for the engine.

    ``forward``, ``forward_and_logdet`` and ``forward_packed`` call :meth:`_data_init` first
    (ActNorm's data-dependent initialisation); the inverse paths and the re-runs inside
    ``invert_and_backward`` never do, so no initialisation can happen during a backward pass or a decode.
    """

    def transform(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """``x (B, C, H, W) -> (y (B, C, H, W), density)``; density broadcastable to ``(B, 1, H, W)``."""
        raise NotImplementedError

    def untransform(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover - abstract
        """Inverse: ``y -> (x, density)``, the density being the *forward's* at the rebuilt ``x``."""
        raise NotImplementedError

    def _data_init(self, x: torch.Tensor) -> None:
        """Hook for data-dependent initialisation on the first forward; nothing by default."""

    # -- plain interface ----------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._data_init(x)
        return self.transform(x)[0]

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        return self.untransform(y)[0]

    def forward_and_logdet(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(y (B, C, H, W), log|det dy/dx| (B,))``."""
        self._data_init(x)
        y, density = self.transform(x)
        return y, _sum_density(density, x)

    def invert_and_backward(self, y: torch.Tensor, grad_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
        # InvertibleModule.invert_and_backward, but re-running transform (never the initialising forward).
        with torch.no_grad():
            x = self.untransform(y)[0]
        with torch.enable_grad():
            leaf = x.detach().requires_grad_(True)
            grads = local_backward(self.transform(leaf)[0], [leaf, *self.trainable_parameters()], grad_y)
        return x, grads[0], grads[1:]

    # -- packed interface: state (B, C + 1, H, W), last channel = running log-det density ----------
    def forward_packed(self, state: torch.Tensor) -> torch.Tensor:
        x, ld = state[:, :-1], state[:, -1:]
        self._data_init(x)
        y, density = self.transform(x)
        return torch.cat([y, ld + density], dim=1)

    def inverse_packed(self, state: torch.Tensor) -> torch.Tensor:
        y, ld = state[:, :-1], state[:, -1:]
        x, density = self.untransform(y)
        return torch.cat([x, ld - density], dim=1)

    def invert_and_backward_packed(self, state: torch.Tensor, grad_state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Generic: rebuild the packed input, then back-propagate through one re-run of the layer."""
        with torch.no_grad():
            prev = self.inverse_packed(state)
        with torch.enable_grad():
            leaf = prev.detach().requires_grad_(True)
            x, ld = leaf[:, :-1], leaf[:, -1:]
            y, density = self.transform(x)
            out = torch.cat([y, ld + density], dim=1)
            grads = local_backward(out, [leaf, *self.trainable_parameters()], grad_state)
        return prev, grads[0], grads[1:]

    def engine_view(self, inverted: bool = False) -> "_PackedView | _InvertedView":
        """This layer as an engine layer: on packed states, or (``inverted``) run backwards on plain tensors."""
        return _InvertedView(self) if inverted else _PackedView(self)


class _PackedView:
    """Engine protocol over a layer's packed interface (a per-call object holding no state)."""

    def __init__(self, layer: FlowLayer) -> None:
        self.layer = layer

    def forward(self, state):
        return self.layer.forward_packed(state)

    def inverse(self, state):
        return self.layer.inverse_packed(state)

    def invert_and_backward(self, state, grad_state):
        return self.layer.invert_and_backward_packed(state, grad_state)

    def trainable_parameters(self):
        return self.layer.trainable_parameters()


class _InvertedView:
    """Engine protocol for a layer run backwards (``forward = inverse``), as in :meth:`Glow.decode`.

    Its invert_and_backward is generic (one forward transform to rebuild, one inverse re-run to
    back-propagate): decoding needs no log-det, and the engine then stores nothing either.
    """

    def __init__(self, layer: FlowLayer) -> None:
        self.layer = layer

    def forward(self, y):
        return self.layer.untransform(y)[0]

    def inverse(self, x):
        return self.layer.transform(x)[0]

    def invert_and_backward(self, x, grad_x):
        with torch.no_grad():
            y = self.layer.transform(x)[0]
        with torch.enable_grad():
            leaf = y.detach().requires_grad_(True)
            out = self.layer.untransform(leaf)[0]
            grads = local_backward(out, [leaf, *self.trainable_parameters()], grad_x)
        return y, grads[0], grads[1:]

    def trainable_parameters(self):
        return self.layer.trainable_parameters()


class ActNorm(FlowLayer):
    """``y = (x + b) * exp(log_scale)``, per channel, with data-dependent initialisation.

    On the first forward (any of ``forward``, ``forward_and_logdet``, ``forward_packed``) while
    the buffer ``initialized`` is False, ``b = -mean`` and ``log_scale = -log(std + eps)`` are set
    from that batch (per channel, over batch and pixels), so that this batch leaves the layer
    with zero mean and unit variance per channel; then ``initialized`` becomes True. The flag is
    a buffer, hence saved in the ``state_dict``: a loaded model keeps its parameters. An
    uninitialised layer used in the inverse direction (e.g. sampling from a fresh model) is the
    identity. Log-det density per pixel: ``sum_c log_scale``.

    Args:
        channels: C.
        eps: added to the standard deviation at initialisation.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialized", torch.tensor(False))

    def _data_init(self, x: torch.Tensor) -> None:
        # A tensor flag (not a Python bool) so that it is saved and loaded with the state_dict;
        # reading it costs a host sync per ActNorm per forward on a GPU, negligible next to the convs.
        if bool(self.initialized):
            return
        with torch.no_grad():
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            std = x.var(dim=(0, 2, 3), keepdim=True, correction=0).sqrt()
            self.bias.copy_(-mean)
            self.log_scale.copy_(-torch.log(std + self.eps))
            self.initialized.fill_(True)

    def transform(self, x):
        return (x + self.bias) * self.log_scale.exp(), self.log_scale.sum().reshape(1, 1, 1, 1)

    def untransform(self, y):
        return y * (-self.log_scale).exp() - self.bias, self.log_scale.sum().reshape(1, 1, 1, 1)


class InvConv1x1(FlowLayer):
    """Invertible 1x1 convolution ``y = W x`` per pixel, with ``W = P L (U + diag(sign * exp(log_s)))``.

    LU parametrisation (GLOW Sec. 3.2): ``P`` is a fixed permutation (buffer), ``L`` unit lower
    triangular and ``U`` strictly upper triangular (parameters, masked at use), ``sign`` a fixed
    buffer and ``log_s = log|diag|`` a parameter, so ``log|det W| = sum(log_s)`` costs O(C) and
    ``W`` stays invertible. Initialised from a random orthogonal matrix (``torch.linalg.qr`` of a
    Gaussian matrix, decomposed with ``torch.linalg.lu``): the layer starts as a rotation.
    Log-det density per pixel: ``sum(log_s)``.

    Args:
        channels: C.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        q = torch.linalg.qr(torch.randn(channels, channels))[0]
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("perm", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.lower = nn.Parameter(torch.tril(lower, -1))
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def _factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        eye = torch.eye(self.log_s.shape[0], dtype=self.log_s.dtype, device=self.log_s.device)
        lower = torch.tril(self.lower, -1) + eye
        upper = torch.triu(self.upper, 1) + torch.diag(self.sign_s * self.log_s.exp())
        return lower, upper

    def weight(self) -> torch.Tensor:
        """``W (C, C)``."""
        lower, upper = self._factors()
        return self.perm @ lower @ upper

    def inverse_weight(self) -> torch.Tensor:
        """``W^-1 = U^-1 L^-1 P^T`` by two triangular solves (no general inverse)."""
        lower, upper = self._factors()
        m = torch.linalg.solve_triangular(lower, self.perm.T, upper=False, unitriangular=True)
        return torch.linalg.solve_triangular(upper, m, upper=True)

    def transform(self, x):
        return channel_matmul(self.weight(), x), self.log_s.sum().reshape(1, 1, 1, 1)

    def untransform(self, y):
        return channel_matmul(self.inverse_weight(), y), self.log_s.sum().reshape(1, 1, 1, 1)


class AffineCoupling(FlowLayer):
    """``y_a = x_a``, ``y_b = s * x_b + t`` with ``(t, h) = NN(x_a)`` and ``s = sigmoid(h + 2)``.

    ``x_a = x[:, :C//2]`` conditions, ``x_b = x[:, C//2:]`` is transformed. The bounded scale
    ``s in (0, 1)`` (the GLOW code's choice; ``+2`` starts it near 0.88) keeps the layer from
    blowing up activations early in training. ``NN``: conv3x3 -> ReLU -> conv1x1 -> ReLU ->
    conv3x3, the last one zero-initialised so the coupling starts as ``y_b = 0.88 x_b``.
    Log-det density per pixel: ``sum_c log s`` (computed as ``logsigmoid(h + 2)``, stable).

    :meth:`invert_and_backward` and :meth:`invert_and_backward_packed` evaluate ``NN`` once: since ``y_a = x_a`` its
    output gives both ``x_b = (y_b - t) / s`` and, through its graph, the local backward.

    With ``additive=True`` the scale is fixed at ``s = 1`` (GLOW's additive coupling, volume
    preserving): the inverse ``x_b = y_b - t`` cannot amplify. Decoding latents that are not the
    encoding of any training-like image (the flow prox shrinks latents of noisy images) needs
    that: with the affine coupling, ``decode(0.95 * encode(noisy))`` of our pre-trained prior
    overflowed to NaN (divisions by small ``s`` compound over the layers).

    Args:
        channels: C >= 2.
        hidden: channels of the network's two hidden layers.
        additive: fixed unit scale (see above).
    """

    def __init__(self, channels: int, hidden: int = 64, additive: bool = False) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"an affine coupling needs >= 2 channels, got {channels}")
        self.additive = bool(additive)
        self.split = channels // 2
        self.out = channels - self.split
        self.net = nn.Sequential(
            nn.Conv2d(self.split, hidden, 3, padding=1), nn.ReLU(),
            nn.Conv2d(hidden, hidden, 1), nn.ReLU(),
            nn.Conv2d(hidden, 2 * self.out, 3, padding=1),
        )
        # Zero last layer: every step starts close to the identity, so a deep flow starts stable.
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def shift_and_log_scale(self, xa: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``xa (B, C//2, H, W) -> (t, log s)``, each ``(B, C - C//2, H, W)``."""
        h = self.net(xa)
        if self.additive:
            return h[:, : self.out], torch.zeros_like(h[:, self.out :])
        return h[:, : self.out], F.logsigmoid(h[:, self.out :] + 2.0)

    def transform(self, x):
        xa, xb = x[:, : self.split], x[:, self.split :]
        t, log_s = self.shift_and_log_scale(xa)
        return torch.cat([xa, xb * log_s.exp() + t], dim=1), log_s.sum(dim=1, keepdim=True)

    def untransform(self, y):
        ya, yb = y[:, : self.split], y[:, self.split :]
        t, log_s = self.shift_and_log_scale(ya)
        return torch.cat([ya, (yb - t) / log_s.exp()], dim=1), log_s.sum(dim=1, keepdim=True)

    def _rebuild_and_backward(self, y, grad_y, grad_density=None):
        """One ``NN`` evaluation: ``(x, density, grad_x, param_grads)`` from ``y`` and ``dL/dy``.

        ``grad_density`` ``(B, 1, H, W)`` is the gradient reaching this layer's log-det density
        (packed path), None when the loss does not see it.
        """
        ya, yb = y[:, : self.split], y[:, self.split :]
        ga, gb = grad_y[:, : self.split], grad_y[:, self.split :]
        params = self.trainable_parameters()
        with torch.enable_grad():
            xa = ya.detach().requires_grad_(True)
            t, log_s = self.shift_and_log_scale(xa)
            s = log_s.detach().exp()
            xb = (yb - t.detach()) / s
            # y_b = s * x_b + t and density = sum_c log s, differentiated w.r.t. (t, log s):
            grad_log_s = gb * xb * s
            if grad_density is not None:
                grad_log_s = grad_log_s + grad_density  # broadcast over the channels summed
            # An additive coupling's log s is a constant zero: nothing to differentiate there.
            outputs, grad_outputs = ([t, log_s], [gb, grad_log_s]) if log_s.requires_grad else ([t], [gb])
            grads = torch.autograd.grad(outputs, [xa, *params], grad_outputs, allow_unused=True)
        grad_x = torch.cat([ga if grads[0] is None else ga + grads[0], gb * s], dim=1)
        x = torch.cat([ya, xb], dim=1)
        return x, log_s.detach().sum(dim=1, keepdim=True), grad_x, list(grads[1:])

    def invert_and_backward(self, y, grad_y):
        x, _, grad_x, param_grads = self._rebuild_and_backward(y, grad_y)
        return x, grad_x, param_grads

    def invert_and_backward_packed(self, state, grad_state):
        y, ld = state[:, :-1], state[:, -1:]
        x, density, grad_x, param_grads = self._rebuild_and_backward(y, grad_state[:, :-1], grad_state[:, -1:])
        # The log-det channel passes straight through (d ld_out / d ld_in = 1).
        return torch.cat([x, ld - density], dim=1), torch.cat([grad_x, grad_state[:, -1:]], dim=1), param_grads


class Glow(nn.Module):
    """GLOW: ``levels`` x (squeeze, ``depth`` x (ActNorm, InvConv1x1, AffineCoupling), split).

    Inputs: images ``(B, channels, H, W)``, H and W divisible by ``2**levels`` (``image_size``
    is the size that :meth:`sample` draws and :meth:`decode` assumes by default; :meth:`encode`
    takes any valid size, the flow being fully convolutional). Values are expected roughly in
    ``[0, 1]`` or ``[-0.5, 0.5]``: the first ActNorm normalises the data anyway, but
    :meth:`bits_per_dim` counts 256 bins per unit of intensity, i.e. 8-bit data spread over a
    range of width 1 (see :func:`dequantize`).

    Memory: ``memory="autograd"`` stores activations as usual; ``memory="invertible"`` runs each
    level's stack of steps through :func:`~learn2invert.nn.invertible.invertible_sequence`
    whenever autograd records (see the module docstring for how log-dets are carried), so
    activation memory does not grow with ``depth``. Gradients are the same either way (up to
    rounding); train with ``loss.backward()`` (the engine puts parameter gradients in ``.grad``).
    ``memory`` is a plain attribute and may be switched at any time. Like reentrant
    checkpointing, the engine's graph supports a single backward pass: no ``retain_graph``
    re-use, double backward or ``torch.autograd.functional.jacobian`` in invertible mode (use
    ``"autograd"`` for those).

    Args:
        channels: C of the images.
        image_size: ``int`` (square) or ``(H, W)``.
        levels: number of scales L >= 1.
        depth: steps of flow per level K >= 1.
        hidden: hidden channels of the coupling networks.
        memory: ``"autograd"`` or ``"invertible"``.
        anchor_every: passed to the engine (0: store nothing; k: every k-th packed state, to
            bound float32 drift in very deep stacks).
        coupling: ``"affine"`` (the paper's eq. 13, bounded scale) or ``"additive"`` (unit
            scale; stable inversion of arbitrary latents, see :class:`AffineCoupling`).

    ``forward(x)`` is :meth:`log_prob`.
    """

    def __init__(self, channels: int, image_size: int | Sequence[int], levels: int = 3, depth: int = 8,
                 hidden: int = 64, memory: str = "autograd", anchor_every: int = 0, coupling: str = "affine") -> None:
        super().__init__()
        if coupling not in ("affine", "additive"):
            raise ValueError(f"coupling must be 'affine' or 'additive', got {coupling!r}")
        if channels < 1 or levels < 1 or depth < 1 or hidden < 1:
            raise ValueError(f"need channels, levels, depth, hidden >= 1, got {channels}, {levels}, {depth}, {hidden}")
        self.channels, self.levels, self.depth = int(channels), int(levels), int(depth)
        size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        if len(size) != 2:
            raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}")
        self.image_size = size
        self._check_size(*size)
        self.memory = memory
        self._check_memory()
        self.anchor_every = anchor_every
        self.steps = nn.ModuleList()
        c = self.channels
        for level in range(self.levels):
            c *= 4  # squeeze
            layers = []
            for _ in range(self.depth):
                layers += [ActNorm(c), InvConv1x1(c), AffineCoupling(c, hidden, additive=coupling == "additive")]
            self.steps.append(nn.ModuleList(layers))
            if level < self.levels - 1:
                c -= c // 2  # the first half is factored out

    # -- shapes and checks ------------------------------------------------------------------------
    def _check_memory(self) -> None:
        if self.memory not in ("autograd", "invertible"):
            raise ValueError(f"memory must be 'autograd' or 'invertible', got {self.memory!r}")

    def _check_size(self, h: int, w: int) -> None:
        k = 2 ** self.levels
        if h < k or w < k or h % k or w % k:
            raise ValueError(f"H and W must be positive multiples of 2**levels = {k} ({self.levels} levels), "
                             f"got {h}x{w}")

    def _check_image(self, x: torch.Tensor) -> None:
        if x.dim() != 4:
            raise ValueError(f"expected images (B, C, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.channels:
            raise ValueError(f"expected {self.channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})")
        self._check_size(*x.shape[-2:])

    def latent_shapes(self, image_size: Sequence[int] | None = None) -> list[tuple[int, int, int]]:
        """``(C, h, w)`` of each block of latents, in the order they are concatenated in ``z``."""
        h, w = self.image_size if image_size is None else image_size
        self._check_size(h, w)
        shapes, c = [], self.channels
        for level in range(self.levels):
            c, h, w = 4 * c, h // 2, w // 2
            if level < self.levels - 1:
                shapes.append((c // 2, h, w))
                c -= c // 2
        shapes.append((c, h, w))
        return shapes

    def _use_engine(self) -> bool:
        self._check_memory()
        return self.memory == "invertible" and torch.is_grad_enabled()

    # -- the flow ---------------------------------------------------------------------------------
    def _level_forward(self, level: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Steps of one level: ``(B, c, h, w) -> ((B, c, h, w), logdet (B,))``."""
        layers = self.steps[level]
        if self._use_engine():
            state = torch.cat([x, x.new_zeros(x.shape[0], 1, *x.shape[2:])], dim=1)
            state = invertible_sequence([layer.engine_view() for layer in layers], state, self.anchor_every)
            return state[:, :-1], state[:, -1].sum(dim=(1, 2))
        logdet = x.new_zeros(x.shape[0])
        for layer in layers:
            x, ld = layer.forward_and_logdet(x)
            logdet = logdet + ld
        return x, logdet

    def _level_inverse(self, level: int, y: torch.Tensor) -> torch.Tensor:
        layers = list(self.steps[level])[::-1]
        if self._use_engine():
            return invertible_sequence([layer.engine_view(inverted=True) for layer in layers], y, self.anchor_every)
        for layer in layers:
            y = layer.inverse(y)
        return y

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, C, H, W) -> (z (B, C*H*W), log|det dz/dx| (B,))``.

        The first call initialises the ActNorm layers from ``x`` (data-dependent init): make
        it a representative batch.
        """
        self._check_image(x)
        logdet = x.new_zeros(x.shape[0])
        zs = []
        for level in range(self.levels):
            x = squeeze2d(x)
            x, ld = self._level_forward(level, x)
            logdet = logdet + ld
            if level < self.levels - 1:
                half = x.shape[1] // 2
                zs.append(x[:, :half].flatten(1))
                x = x[:, half:]
        zs.append(x.flatten(1))
        return torch.cat(zs, dim=1), logdet

    def decode(self, z: torch.Tensor, image_size: Sequence[int] | None = None) -> torch.Tensor:
        """``z (B, C*H*W) -> x (B, C, H, W)``, the exact inverse of :meth:`encode`.

        ``image_size`` ``(H, W)`` defaults to the model's.
        """
        shapes = self.latent_shapes(image_size)
        dim = sum(c * h * w for c, h, w in shapes)
        if z.dim() != 2 or z.shape[1] != dim:
            raise ValueError(f"expected latents (B, {dim}), got shape {tuple(z.shape)}")
        pieces = torch.split(z, [c * h * w for c, h, w in shapes], dim=1)
        blocks = [p.reshape(z.shape[0], *s) for p, s in zip(pieces, shapes)]
        x = blocks[-1]
        for level in range(self.levels - 1, -1, -1):
            if level < self.levels - 1:
                x = torch.cat([blocks[level], x], dim=1)
            x = self._level_inverse(level, x)
            x = unsqueeze2d(x)
        return x

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density ``log p(x)`` in nats, per sample ``(B,)``: standard normal on z plus the log-det."""
        z, logdet = self.encode(x)
        log_pz = -0.5 * (z * z).sum(dim=1) - 0.5 * z.shape[1] * math.log(2 * math.pi)
        return log_pz + logdet

    forward = log_prob

    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """Mean over the batch of ``-(log p(x) - D log 256) / (D log 2)``, a scalar.

        Assumes 8-bit data on a range of width 1 (``[0, 1]`` or ``[-0.5, 0.5]``) with uniform
        dequantisation noise of one bin (``1/256``) added by the caller, e.g. with
        :func:`dequantize`: ``log p(x) - D log 256`` then lower-bounds the log-probability of the
        discrete image, and the result is the usual (upper-bound) bits per dimension.
        """
        d = x[0].numel()
        return (-(self.log_prob(x) - d * math.log(256.0)) / (d * math.log(2.0))).mean()

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0) -> torch.Tensor:
        """``n`` images ``(n, C, H, W)`` decoded from ``z ~ N(0, temperature**2 I)`` (no gradient).

        For a differentiable sample, call :meth:`decode` on your own ``z``.
        """
        ref = next(self.parameters())
        dim = self.channels * self.image_size[0] * self.image_size[1]
        z = temperature * torch.randn(n, dim, dtype=ref.dtype, device=ref.device)
        return self.decode(z)
