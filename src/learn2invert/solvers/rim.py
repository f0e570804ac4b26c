"""Recurrent inference machine (RIM), Putzky & Welling 2017, with its GDN / FFN ablations.

The RIM iterates in a latent space ``eta`` whose image is ``x = Psi(eta)`` (``Psi`` = link
function). Each step feeds the current estimate and the gradient of the Gaussian log-likelihood
with respect to ``eta`` to a small recurrent network ``g`` (paper eqs. 9-12, 15)::

    grad_t     = Psi'(eta_t) o A^T (y - A Psi(eta_t)) / (sigma^2 + eps),   eps = softplus(phi)
    s_{t+1}    = h*(Psi(eta_t), grad_t, s_t)
    eta_{t+1}  = eta_t + g(Psi(eta_t), grad_t, s_{t+1})

and returns every estimate ``x_t = Psi(eta_t)``, t = 1..T, so that a loss can weigh each step
(paper eq. 13). Two cells are available:

- ``architecture="strided"`` (paper Sec. 4.1): 3x3 conv with stride 2 (64 ch) + norm + tanh ->
  conv-GRU (256 ch) at the downsampled resolution -> 3x3 transposed conv (64 ch) back to full
  resolution + norm + tanh -> 3x3 conv to the image channels.
- ``architecture="mri"``: the RIM baseline of the i-RIM paper (Putzky & Welling 2019, Sec. 3.3,
  after Lønning et al.): three convolutions and two conv-GRUs with 64 channels, all at full
  resolution (machine state = image + 2 x 64 channels, their Table 1). The paper gives no kernel
  sizes; we use those of the authors' public RIM baseline: conv 5x5 + ReLU -> GRU (1x1) ->
  conv 3x3 dilation 2 + ReLU -> GRU (1x1) -> conv 3x3, with replicate padding.

Ablations (paper Sec. 4.4): ``variant="gdn"`` feeds only the gradient (no current estimate);
``variant="ffn"`` replaces every GRU by a ReLU convolution, so the network has no state.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..nn.conv_gru import ConvGRUCell, conv_nd
from ..nn.prox.base import zero_last
from ..operators.base import LinearOperator
from .base import Solver

VARIANTS = ("rim", "gdn", "ffn")
ARCHITECTURES = ("strided", "mri")
OUTPUT_INITS = ("zero", "random")
LINKS = ("identity", "sigmoid")
NORMS = ("batch", "instance", "layer", "none")
MEMORY_MODES = ("autograd", "checkpoint")
INITS = ("adjoint", "zeros", "scaled_adjoint")

# The sigmoid link needs eta_0 = logit(x_0); x_0 = A^T y is rarely inside (0, 1), so it is clipped
# first. The margin keeps Psi'(eta_0) >= ~0.01: a tighter clip would start pixels so deep in the
# flat tails of the sigmoid that the likelihood gradient w.r.t. eta (scaled by Psi') vanishes there.
SIGMOID_INIT_MARGIN = 1e-2


# ----------------------------------------------------------------------------------------- links
class _Link:
    """Link function ``x = Psi(eta)`` with its derivative and (clipped) inverse."""

    name = "identity"

    def __call__(self, eta: torch.Tensor) -> torch.Tensor:
        return eta

    def pullback(self, eta: torch.Tensor, grad_x: torch.Tensor) -> torch.Tensor:
        """Chain rule: gradient w.r.t. ``eta`` from the gradient w.r.t. ``x = Psi(eta)``."""
        return grad_x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _SigmoidLink(_Link):
    """Logistic link: estimates live in (0, 1) (paper Sec. 4.3, data scaled to [0, 1])."""

    name = "sigmoid"

    def __call__(self, eta: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(eta)

    def pullback(self, eta: torch.Tensor, grad_x: torch.Tensor) -> torch.Tensor:
        # d sigmoid / d eta = sigmoid (1 - sigmoid), applied element-wise (Psi acts per pixel,
        # so its Jacobian is diagonal). Written out rather than taken with autograd inside the
        # forward pass, so that the step stays an ordinary differentiable graph that training can
        # back-propagate through (no create_graph double-backward needed).
        s = torch.sigmoid(eta)
        return grad_x * s * (1.0 - s)

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logit(x.clamp(SIGMOID_INIT_MARGIN, 1.0 - SIGMOID_INIT_MARGIN))


def _make_link(name: str) -> _Link:
    if name == "identity":
        return _Link()
    if name == "sigmoid":
        return _SigmoidLink()
    raise ValueError(f"link must be one of {LINKS}, got {name!r}")


# ------------------------------------------------------------------------------------------ cells
def _make_norm(norm: str, channels: int, dims: int) -> nn.Module:
    """Normalisation after the strided / transposed convolutions of the strided cell."""
    if norm == "batch":  # the paper's choice
        return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm3d)(channels)
    if norm == "instance":
        return (nn.InstanceNorm2d if dims == 2 else nn.InstanceNorm3d)(channels, affine=True)
    if norm == "layer":  # batch-size independent, also works at 1x1 resolution
        return nn.GroupNorm(1, channels)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


class StridedRIMCell(nn.Module):
    """The RIM update network of Putzky & Welling 2017 (Sec. 4.1), for 2D or 3D images.

    ``input (B, in_channels, *S) -> delta (B, out_channels, *S)`` plus one recurrent state of shape
    ``(B, hidden_channels, *ceil(S / stride))``. Layers: ``kernel_size`` conv with ``stride``
    (``conv_channels``) + norm + tanh -> conv-GRU (``hidden_channels``, kernel ``kernel_size``) ->
    transposed conv (``conv_channels``) back to ``S`` + norm + tanh -> ``kernel_size`` conv to
    ``out_channels``. With ``recurrent=False`` (FFN ablation) the GRU becomes conv + ReLU.
    Zero padding, as with TensorFlow's "SAME" convolutions the paper used.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dims: int = 2,
        conv_channels: int = 64,
        hidden_channels: int = 256,
        stride: int = 2,
        kernel_size: int = 3,
        norm: str = "batch",
        recurrent: bool = True,
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1 or kernel_size < stride:
            # An odd kernel at least as wide as the stride sees every pixel and gives
            # ceil(S / stride) outputs with padding kernel_size // 2.
            raise ValueError(f"kernel_size must be odd and >= stride, got kernel_size={kernel_size}, stride={stride}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        conv = conv_nd(dims)
        pad = kernel_size // 2
        self.dims = dims
        self.stride = stride
        self.hidden_channels = hidden_channels
        self.recurrent = recurrent
        self.down = conv(in_channels, conv_channels, kernel_size, stride=stride, padding=pad)
        self.down_norm = _make_norm(norm, conv_channels, dims)
        if recurrent:
            self.rnn = ConvGRUCell(conv_channels, hidden_channels, kernel_size, dims=dims)
        else:
            self.rnn = conv(conv_channels, hidden_channels, kernel_size, padding=pad)
        self.up = conv_nd(dims, transpose=True)(hidden_channels, conv_channels, kernel_size, stride=stride, padding=pad)
        self.up_norm = _make_norm(norm, conv_channels, dims)
        # No bias on the output: a bias would add the same drift to eta at every step, growing
        # linearly with the number of steps, which hurts running longer than in training.
        self.out = conv(conv_channels, out_channels, kernel_size, padding=pad, bias=False)

    def initial_state(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Zero state at the downsampled resolution (empty for the stateless FFN)."""
        if not self.recurrent:
            return []
        low = [math.ceil(n / self.stride) for n in image.shape[2:]]
        return [image.new_zeros((image.shape[0], self.hidden_channels, *low))]

    def forward(self, inp: torch.Tensor, state: Sequence[torch.Tensor],
                shift: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``inp (B, in_channels, *S)``, state list -> ``(delta (B, out_channels, *S), new state list)``.
        ``shift (B, conv_channels, 1, ...)`` is added to the first layer's features (the noise level)."""
        h = self.down_norm(self.down(inp))
        h = torch.tanh(h if shift is None else h + shift)
        if self.recurrent:
            h = self.rnn(h, state[0])
            new_state = [h]
        else:
            h = F.relu(self.rnn(h))
            new_state = []
        # output_size resolves the ambiguity of transposed convolutions for odd sizes.
        u = self.up(h, output_size=list(inp.shape[2:]))
        u = torch.tanh(self.up_norm(u))
        return self.out(u), new_state


class MRIRIMCell(nn.Module):
    """The RIM baseline network of the i-RIM paper (Sec. 3.3), for 2D or 3D images.

    ``conv 5x5 (conv_channels) + ReLU -> GRU 1x1 (hidden_channels) -> conv 3x3 dilation 2
    (conv_channels) + ReLU -> GRU 1x1 (hidden_channels) -> conv 3x3 -> out_channels``, all at the
    input resolution, replicate padding (avoids the zero-padding edge a k-space reconstruction
    would otherwise learn around). With ``recurrent=False`` (FFN ablation) each GRU becomes a
    1x1 conv + ReLU. Kernel sizes and dilations follow the authors' public baseline; the paper
    itself only gives "three convolutional layers and two GRUs with 64 hidden channels".
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dims: int = 2,
        conv_channels: int = 64,
        hidden_channels: int = 64,
        recurrent: bool = True,
    ) -> None:
        super().__init__()
        conv = conv_nd(dims)
        self.dims = dims
        self.hidden_channels = hidden_channels
        self.recurrent = recurrent
        self.conv1 = conv(in_channels, conv_channels, 5, padding=2, padding_mode="replicate")
        self.conv2 = conv(hidden_channels, conv_channels, 3, padding=2, dilation=2, padding_mode="replicate")
        # No bias on the output for the same reason as in StridedRIMCell (no per-step drift).
        self.conv3 = conv(hidden_channels, out_channels, 3, padding=1, padding_mode="replicate", bias=False)
        if recurrent:
            self.rnn1 = ConvGRUCell(conv_channels, hidden_channels, 1, dims=dims)
            self.rnn2 = ConvGRUCell(conv_channels, hidden_channels, 1, dims=dims)
        else:
            self.rnn1 = conv(conv_channels, hidden_channels, 1)
            self.rnn2 = conv(conv_channels, hidden_channels, 1)

    def initial_state(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Two zero states at full resolution (empty for the stateless FFN)."""
        if not self.recurrent:
            return []
        shape = (image.shape[0], self.hidden_channels, *image.shape[2:])
        return [image.new_zeros(shape), image.new_zeros(shape)]

    def forward(self, inp: torch.Tensor, state: Sequence[torch.Tensor],
                shift: torch.Tensor | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """``inp (B, in_channels, *S)``, state list -> ``(delta (B, out_channels, *S), new state list)``.
        ``shift (B, conv_channels, 1, ...)`` is added to the first layer's features (the noise level)."""
        h = self.conv1(inp)
        h = F.relu(h if shift is None else h + shift)
        if self.recurrent:
            s1 = self.rnn1(h, state[0])
            s2 = self.rnn2(F.relu(self.conv2(s1)), state[1])
            return self.conv3(s2), [s1, s2]
        h = F.relu(self.rnn1(h))
        h = F.relu(self.rnn2(F.relu(self.conv2(h))))
        return self.conv3(h), []


@contextlib.contextmanager
def _batch_stats_frozen(module: nn.Module) -> Iterator[None]:
    """Let every training-mode BatchNorm in ``module`` run as usual but discard its update of the
    running statistics (``running_mean``, ``running_var``, ``num_batches_tracked``).

    Used while torch.utils.checkpoint recomputes a step during backward: the recomputation must
    give the same activations (batch statistics, as in the forward pass) but must not update the
    running averages a second time, or checkpointed training would drift from plain training.
    The buffers are swapped for scratch copies rather than detached (``running_mean=None``)
    because the recomputation must save exactly the tensors the forward pass saved.
    """
    names = ("running_mean", "running_var", "num_batches_tracked")
    saved = []
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats:
            originals = {n: getattr(m, n) for n in names}
            saved.append((m, originals))
            for n, buffer in originals.items():
                if buffer is not None:
                    setattr(m, n, buffer.clone())
    try:
        yield
    finally:
        for m, originals in saved:
            for n, buffer in originals.items():
                setattr(m, n, buffer)


# -------------------------------------------------------------------------------------- the solver
class RIM(Solver):
    """Recurrent inference machine for linear inverse problems ``y = A x + n``, ``n ~ N(0, sigma^2)``.

    Args:
        channels: image channels C: 1 (grey), 2 (complex as real/imaginary), 3 (RGB), or any other.
        dims: 2 for images ``(B, C, H, W)``, 3 for volumes ``(B, C, D, H, W)``.
        steps: default number of iterations T (may be overridden per call, also beyond the
            training T). Default: 20 for ``"strided"`` (paper Sec. 4.1), 8 for ``"mri"`` (i-RIM Sec. 3.3).
        variant: ``"rim"`` (estimate + gradient in, GRU state), ``"gdn"`` (gradient only in),
            ``"ffn"`` (estimate + gradient in, GRUs replaced by ReLU convolutions, no state).
        architecture: ``"strided"`` (Putzky & Welling 2017) or ``"mri"`` (i-RIM paper's RIM baseline).
        link: ``"identity"`` (default: works for signed data such as complex MRI images) or
            ``"sigmoid"`` (estimates in (0, 1), the paper's choice for images scaled to [0, 1]).
        sigma: default noise standard deviation, in the units of ``y``, used when the call gives
            none (1.0, the paper's random-projection setting; pass the real one).
        memory: ``"autograd"`` (store every activation) or ``"checkpoint"`` (store only each step's
            inputs and recompute the step during backward; same gradients, activation memory of one step).
        conv_channels: channels of the non-recurrent hidden convolutions (paper: 64).
        hidden_channels: channels of each GRU state. Default 256 for ``"strided"`` (paper), 64 for ``"mri"``.
        stride: downsampling factor of the strided cell (paper: 2). ``"strided"`` only.
        kernel_size: kernel size of the strided cell's convolutions (paper: 3). ``"strided"`` only.
        norm: ``"batch"`` (paper), ``"instance"``, ``"layer"`` (GroupNorm with one group) or
            ``"none"``. ``"strided"`` only (the MRI baseline has no normalisation).
        eps_init: initial value of ``eps = softplus(phi)`` added to ``sigma^2`` (paper eq. 15); the
            paper does not give one. ``phi`` is a trainable scalar parameter.
        eps_units: ``"lipschitz"`` (default): ``eps`` in units of each call's ``||A||^2``, so the
            gradient the network sees has the units of ``x`` on any operator; ``"absolute"``: in
            units of ``y^2`` (runs saved before December 2026). The same on operators of norm 1.
        sigma_input: also give the network the noise level: ``log sigma`` of each sample, mapped by a
            linear layer (zero at the start, so the untrained or fine-tuned-from RIM is unchanged)
            to a shift of the first layer's features. Without it the network sees ``sigma`` only
            through ``sigma^2 + eps``, which a trained ``eps`` much larger than ``sigma^2`` hides (a
            blind denoiser over a range of noise levels).
        init: starting estimate when the call gives no ``x0``: ``"adjoint"`` (``A^T y``),
            ``"zeros"`` (better where ``A^T y`` is far off in scale, e.g. unnormalised random
            projections, whose ``A^T A`` is about ``m`` times the identity) or
            ``"scaled_adjoint"`` (``A^T y / ||A||^2``, in the units of ``x`` on any operator: CT,
            unnormalised projections; see :func:`~learn2invert.operators.likelihood.back_projection`).
            Nonlinear operators start from their ``A_dagger(y)`` for both adjoint choices.
        output_init: ``"zero"`` (default) zeroes the cell's output convolution, so an untrained RIM
            returns its starting estimate at every step (within 1.0-1.1x of the best-scaled
            adjoint's error on every built-in operator, docs/BENCHMARKS.md) and training starts
            from there; ``"random"`` keeps PyTorch's default initialisation, which every RIM of
            docs/ and projects/ trained before the zero start was added used (their configs pin it).

    Call ``rim(y, operator, x0=None, steps=None, sigma=None)``: see :meth:`forward`.
    """

    def __init__(
        self,
        channels: int = 1,
        dims: int = 2,
        steps: int | None = None,
        variant: str = "rim",
        architecture: str = "strided",
        link: str = "identity",
        sigma: float = 1.0,
        memory: str = "autograd",
        conv_channels: int = 64,
        hidden_channels: int | None = None,
        stride: int | None = None,
        kernel_size: int | None = None,
        norm: str | None = None,
        eps_init: float = 1e-2,
        init: str = "adjoint",
        output_init: str = "zero",
        eps_units: str = "lipschitz",
        sigma_input: bool = False,
    ) -> None:
        super().__init__()
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        if output_init not in OUTPUT_INITS:
            raise ValueError(f"output_init must be one of {OUTPUT_INITS}, got {output_init!r}")
        self.init = init
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if dims not in (2, 3):
            raise ValueError(f"dims must be 2 or 3, got {dims!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")
        if memory not in MEMORY_MODES:
            raise ValueError(f"memory must be one of {MEMORY_MODES} for the RIM, got {memory!r}")
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        self.channels = channels
        self.dims = dims
        self.variant = variant
        self.architecture = architecture
        self.memory = memory
        self.sigma = float(sigma)
        self._link = _make_link(link)
        self.steps = self.check_steps(steps, 20 if architecture == "strided" else 8)

        # Input: current estimate Psi(eta) (C) and likelihood gradient (C); GDN drops the estimate.
        in_channels = channels if variant == "gdn" else 2 * channels
        recurrent = variant != "ffn"
        if architecture == "strided":
            self.cell: nn.Module = StridedRIMCell(
                in_channels,
                channels,
                dims=dims,
                conv_channels=conv_channels,
                hidden_channels=256 if hidden_channels is None else hidden_channels,
                stride=2 if stride is None else stride,
                kernel_size=3 if kernel_size is None else kernel_size,
                norm="batch" if norm is None else norm,
                recurrent=recurrent,
            )
        else:
            for name, value in (("stride", stride), ("kernel_size", kernel_size)):
                if value is not None:
                    raise ValueError(f"{name} applies to architecture='strided' only; the 'mri' cell has fixed kernels")
            if norm not in (None, "none"):
                raise ValueError("norm applies to architecture='strided' only; the 'mri' cell has no normalisation")
            self.cell = MRIRIMCell(
                in_channels,
                channels,
                dims=dims,
                conv_channels=conv_channels,
                hidden_channels=64 if hidden_channels is None else hidden_channels,
                recurrent=recurrent,
            )
        self.sigma_embed = nn.Linear(1, conv_channels) if sigma_input else None
        if self.sigma_embed is not None:  # starts at zero: the noise level changes nothing until trained
            zero_last(self.sigma_embed)
        if output_init == "zero":
            # The update delta is then 0 for any input: the estimate stays at its start until
            # training moves the output weights (their gradient is not zero, so it does).
            zero_last(self.cell.out if architecture == "strided" else self.cell.conv3)
        self.add_eps(eps_init, eps_units)

    @property
    def link(self) -> str:
        """Name of the link function Psi."""
        return self._link.name

    def extra_repr(self) -> str:
        return (f"channels={self.channels}, dims={self.dims}, steps={self.steps}, variant={self.variant!r}, "
                f"architecture={self.architecture!r}, link={self.link!r}, sigma={self.sigma}, memory={self.memory!r}")

    def check_image(self, x: torch.Tensor, what: str = "the image (x0, or A_adjoint(y) when x0 is None)") -> None:
        """The base checks, and a training-mode batch norm needs more than one value per channel."""
        super().check_image(x, what)
        norm = getattr(self.cell, "down_norm", None)
        if self.training and isinstance(norm, nn.modules.batchnorm._BatchNorm) and x.shape[0] > 0:
            low = [math.ceil(n / self.cell.stride) for n in x.shape[2:]]
            if x.shape[0] * math.prod(low) < 2:
                raise ValueError(
                    f"RIM: batch normalisation in training mode needs more than one value per channel, but an image "
                    f"batch of shape {tuple(x.shape)} gives 1 after the stride-{self.cell.stride} convolution; use a "
                    "larger batch or image, .eval(), or norm='instance' / 'layer' / 'none'"
                )

    def latent_gradient(
        self, eta: torch.Tensor, y: torch.Tensor, operator: LinearOperator, sigma2: torch.Tensor,
        eps_scale: float | None = None,
    ) -> torch.Tensor:
        """Gradient of ``log p(y | eta)`` w.r.t. ``eta``, noise variance ``sigma^2 + eps``.

        For a linear operator and Gaussian noise ``Psi'(eta) o A^T (y - A Psi(eta)) / (sigma^2 + eps)``
        (paper eq. 15 pulled back through the link by the chain rule); any other operator or noise
        model through :func:`~learn2invert.operators.likelihood.data_gradient`. Shape of ``eta``;
        ``sigma2`` is the noise variance, broadcastable to ``eta``; ``eps_scale`` the unit of ``eps``
        for this call (:meth:`eps_scale`; looked up when not given).
        """
        return self._link.pullback(eta, self.data_gradient(self._link(eta), y, operator, sigma2, eps_scale))

    def _step(
        self, eta: torch.Tensor, y: torch.Tensor, sigma2: torch.Tensor, *state: torch.Tensor, operator: LinearOperator,
        eps_scale: float | None = None,
    ) -> tuple[torch.Tensor, ...]:
        """One RIM update: ``(eta_t, s_t) -> (eta_{t+1}, s_{t+1})``, returned as ``(eta, *state)``."""
        grad = self.latent_gradient(eta, y, operator, sigma2, eps_scale)
        inp = grad if self.variant == "gdn" else torch.cat([self._link(eta), grad], dim=1)
        delta, new_state = self.cell(inp, state, self._noise_shift(sigma2, eta))
        return (eta + delta, *new_state)

    def _noise_shift(self, sigma2: torch.Tensor, eta: torch.Tensor) -> torch.Tensor | None:
        """``(B, conv_channels, 1, ...)`` from each sample's ``log sigma`` (``sigma_input`` only)."""
        if self.sigma_embed is None:
            return None
        variance = sigma2.reshape(sigma2.shape[0] if sigma2.dim() else 1, -1).mean(1, keepdim=True)  # (B or 1, 1)
        log_sigma = 0.5 * torch.log(variance).expand(eta.shape[0], 1)
        return self.sigma_embed(log_sigma).reshape(eta.shape[0], -1, *([1] * (eta.dim() - 2)))

    def forward(
        self,
        y: torch.Tensor,
        operator: LinearOperator,
        x0: torch.Tensor | None = None,
        steps: int | None = None,
        sigma: float | torch.Tensor | None = None,
    ) -> list[torch.Tensor]:
        """Run the RIM.

        Args:
            y: measurements, in whatever layout ``operator`` expects (shape errors are raised by
                the operator), in the dtype of the parameters; NaN or Inf raise a ``ValueError``.
            operator: the forward model: ``A`` and the data-consistency gradient of
                :func:`~learn2invert.operators.likelihood.data_gradient` (``A_adjoint`` for linear
                operators; ``A_vjp`` or autograd for nonlinear ones).
            x0: initial estimate, shape ``(B, C, *S)``. Default ``operator.A_adjoint(y)`` (the
                back-projection, or zero-filled reconstruction in MRI; ``A_dagger(y)`` for a
                nonlinear operator); the image shape is taken from it. Given ``x0``, ``A_adjoint(y)``
                is never computed. For the sigmoid link, ``eta_0 = logit(clip(x0, 0.01, 0.99))``.
            steps: number of iterations T; default the constructor's. May exceed the training T.
            sigma: noise standard deviation in units of ``y``: a float or a ``(B, 1, ..., 1)``
                tensor; default the constructor's ``sigma``. Must be > 0.

        Returns:
            List of T tensors ``Psi(eta_t)``, t = 1..T, each of shape ``(B, C, *S)``; the last is the
            reconstruction. The recurrent state starts at zeros (at the downsampled resolution
            for the strided cell).
        """
        steps = self.check_steps(steps, self.steps)
        x0 = self.start(y, operator, x0)
        sigma2 = self.noise_variance(sigma, x0)
        eta = self._link.inverse(x0)
        state = self.cell.initial_state(x0)
        eps_scale = self.eps_scale(operator, x0)  # ||A||^2 once per call, not once per step

        iterates = []
        use_checkpoint = self.memory == "checkpoint" and torch.is_grad_enabled()
        for _ in range(steps):
            if use_checkpoint:
                eta, *state = checkpoint(self._recomputable_step(), eta, y, sigma2, *state,
                                         operator=operator, eps_scale=eps_scale, use_reentrant=False)
            else:
                eta, *state = self._step(eta, y, sigma2, *state, operator=operator, eps_scale=eps_scale)
            iterates.append(self._link(eta))
        return iterates

    def _recomputable_step(self) -> Callable[..., tuple[torch.Tensor, ...]]:
        """``_step`` for torch.utils.checkpoint: calls after the first (the recomputation during
        backward) run with BatchNorm running statistics frozen, see :func:`_batch_stats_frozen`."""
        calls = 0

        def step(*args, operator, eps_scale):
            nonlocal calls
            calls += 1
            if calls == 1:
                return self._step(*args, operator=operator, eps_scale=eps_scale)
            with _batch_stats_frozen(self):
                return self._step(*args, operator=operator, eps_scale=eps_scale)

        return step
