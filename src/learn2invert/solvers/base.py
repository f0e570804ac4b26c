"""The solver contract: one call for every reconstruction method, learned or classical.

Every solver is an ``nn.Module`` called as::

    estimates = solver(y, operator, x0=None, steps=None, sigma=None)

- ``y``: measurements in the layout ``operator.A`` produces, ``(B, ...)``, finite.
- ``operator``: the forward model (``A``; ``A_adjoint`` or ``A_vjp`` for the data gradient).
- ``x0``: starting image ``(B, C, *S)``; default chosen by the solver's ``init``
  (:meth:`Solver.initial_estimate`).
- ``steps``: iterations to run; default the solver's own (ignored by one-pass and fixed-point solvers).
- ``sigma``: noise standard deviation in units of ``y`` (a float or a ``(B, 1, ..., 1)`` tensor);
  used by the solvers that weigh the data term by it (RIM, i-RIM), accepted and ignored by the others.

It returns a non-empty list of image estimates ``(B, C, *S)``; the last one is the reconstruction.

:class:`Solver` holds what every ``forward`` used to repeat: the entry checks of ``y`` and
``x0`` (:meth:`~Solver.start`), the ``steps`` and ``sigma`` checks, the learned ``eps`` added to
``sigma^2`` and the data-consistency gradient. The optional hooks that training and the unrolled
solver call are methods with defaults that do nothing special:

- :meth:`~Solver.parameter_groups`: optimiser groups (default: one group of every parameter);
- :meth:`~Solver.diagnostics`: scalars of the last forward pass for the training log
  (default: none; equilibrium solvers report their fixed-point solves).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..nn.prox.base import inverse_softplus
from ..operators.base import check_finite, check_measurements, check_parameter_dtype
from ..operators.likelihood import NoGradientError, back_projection, data_gradient, lipschitz_scale

# Units of a solver's step sizes, penalties or noise-variance floor: as given, or relative to
# ||A||^2 (the Lipschitz constant of the Gaussian data term's gradient) of each call's operator.
STEP_UNITS = ("absolute", "lipschitz")


def check_step_units(value: str, name: str = "step_units") -> str:
    """``value`` if it is one of :data:`STEP_UNITS`, else a ValueError naming the parameter."""
    if value not in STEP_UNITS:
        raise ValueError(f"{name} must be one of {STEP_UNITS}, got {value!r}")
    return value

INITS = ("adjoint", "scaled_adjoint", "zeros", "measurement")


class Solver(nn.Module):
    """Base class of the solvers: the call contract, its entry checks and the optional hooks.

    Subclasses implement :meth:`forward` with the signature below and use the helpers; the
    class attributes describe what the solver takes and are read by the checks:

    Attributes:
        channels: image channels C the solver needs, or ``None`` (any; the operator checks).
        dims: spatial dimensions (2 or 3), or ``None`` (2 or 3).
        init: default starting image, one of :data:`INITS` (see :meth:`initial_estimate`).
        sigma: default noise standard deviation, in units of ``y``, when a call gives none.

    Subclassing adds no parameters and no buffers: state-dict keys are the subclass's own.
    """

    channels: int | None = None
    dims: int | None = None
    init: str = "adjoint"
    sigma: float = 1.0

    def forward(self, y: torch.Tensor, operator, x0: torch.Tensor | None = None, steps: int | None = None,
                sigma: float | torch.Tensor | None = None) -> list[torch.Tensor]:
        """Reconstruct: ``y (B, ...)`` -> list of estimates ``(B, C, *S)``, the last one the result."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward(y, operator, x0, steps, sigma)")

    @property
    def name(self) -> str:
        """The solver's name in error messages (its class name)."""
        return type(self).__name__

    # ------------------------------------------------------------------------------ entry checks
    def start(self, y: torch.Tensor, operator, x0: torch.Tensor | None = None) -> torch.Tensor:
        """Check a call's measurements and return its starting image ``(B, C, *S)``.

        ``y`` must be a real floating tensor ``(B, ...)``, finite, in the parameters' dtype.
        Without ``x0`` the start is :meth:`initial_estimate`; a given ``x0`` is checked
        (:meth:`check_image`, the batch size of ``y``, finite) and returned as it is. Raises
        ``ValueError`` naming the solver.
        """
        check_measurements(y, self.name)
        check_parameter_dtype(self, y, "measurements y", self.name)
        if x0 is None:
            x0 = self.initial_estimate(y, operator)
            self.check_image(x0)
            return x0
        self.check_image(x0)
        if x0.shape[0] != y.shape[0]:
            raise ValueError(f"{self.name}: x0 of shape {tuple(x0.shape)} has another batch size than y "
                             f"{tuple(y.shape)}; x0 must have the image shape (B, C, ...) of A_adjoint(y)")
        check_finite(x0, "x0", self.name)
        return x0

    def initial_estimate(self, y: torch.Tensor, operator) -> torch.Tensor:
        """The starting image when a call gives no ``x0``, by :attr:`init`:

        ``"adjoint"``: ``A^T y`` (a nonlinear operator's ``A_dagger(y)``); ``"scaled_adjoint"``:
        ``A^T y / ||A||^2``, in the units of ``x`` on any operator; ``"zeros"``: zeros of that
        shape; ``"measurement"``: ``y`` itself, for operators whose measurements are images
        (denoising, deblurring, inpainting). Shape ``(B, C, *S)``.
        """
        aty = back_projection(operator, y, scaled=self.init == "scaled_adjoint")  # its shape also for "zeros"
        if self.init == "zeros":
            return torch.zeros_like(aty)
        if self.init == "measurement":
            if y.shape != aty.shape:
                raise ValueError(f"init='measurement' needs measurements in image space; y has shape {tuple(y.shape)}, "
                                 f"images have shape {tuple(aty.shape)} (use init='adjoint')")
            return y
        return aty

    def check_image(self, x: torch.Tensor, what: str = "the image (x0, or A_adjoint(y) when x0 is None)") -> None:
        """Raise a ``ValueError`` unless ``x`` is a real floating image ``(B, C, *S)`` this solver
        takes (:attr:`channels`, :attr:`dims`, no empty dimension but B) in its parameters' dtype.
        Subclasses add their own limits (sizes, normalisation) and call this first."""
        layout = {2: "(B, C, H, W)", 3: "(B, C, D, H, W)", None: "(B, C, H, W) or (B, C, D, H, W)"}[self.dims]
        ranks = (4, 5) if self.dims is None else (self.dims + 2,)
        if (not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.dim() not in ranks
                or (self.channels is not None and x.shape[1] != self.channels) or 0 in x.shape[1:]):
            got = f"shape {tuple(x.shape)} and dtype {x.dtype}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"this {self.name} (dims={self.dims}, channels={self.channels}) needs real floating-point "
                             f"images of shape {layout} with C={self.channels}; {what} has {got}")
        check_parameter_dtype(self, x, what, self.name)

    @staticmethod
    def check_steps(steps: int | None, default: int, limit: int | None = None) -> int:
        """``steps`` of a call (``default`` when ``None``): a positive int, at most ``limit``
        where the weights are untied per step."""
        steps = default if steps is None else steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1 or (limit is not None and steps > limit):
            bound = "a positive int" if limit is None else f"an int in [1, {limit}] (untied weights per step)"
            raise ValueError(f"steps must be {bound}, got {steps!r}")
        return steps

    def noise_variance(self, sigma: float | torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
        """``sigma^2`` (default :attr:`sigma`) as a tensor of ``like``'s dtype and device, broadcastable
        to the image ``like``: a float, or a tensor such as ``(B, 1, ..., 1)``. Finite and > 0."""
        sigma = self.sigma if sigma is None else sigma
        s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device)
        if s.numel() != 1:
            try:
                ok = s.dim() == like.dim() and torch.broadcast_shapes(s.shape, like.shape) == like.shape
            except RuntimeError:
                ok = False
            if not ok:
                raise ValueError(f"sigma must be a float or a tensor of shape (B, 1, ...) broadcastable to the image "
                                 f"{tuple(like.shape)}, got shape {tuple(s.shape)}")
        if not bool(torch.all(s > 0)) or not bool(torch.all(torch.isfinite(s))):
            raise ValueError(f"sigma (noise standard deviation) must be finite and > 0, got {sigma}")
        return s * s

    # ------------------------------------------------------------------------------ the data term
    def add_eps(self, eps_init: float, eps_units: str = "lipschitz") -> None:
        """Give the solver a trainable ``eps = softplus(phi)`` that :meth:`data_gradient` adds to
        ``sigma^2`` (it keeps noise-free problems finite; RIM paper eq. 15). Registers ``phi``.
        ``eps_units="lipschitz"``: ``eps`` counts in units of each call's ``||A||^2``, so the
        gradient ``A^T (y - A x) / (sigma^2 + eps ||A||^2)`` has the units of ``x`` on any operator
        (CT, super-resolution, unnormalised projections); ``"absolute"``: in units of ``y^2``."""
        if not eps_init > 0:
            raise ValueError(f"eps_init must be > 0, got {eps_init}")
        self.eps_units = check_step_units(eps_units, "eps_units")
        # phi = softplus^-1(eps_init), so that eps starts at eps_init.
        self.phi = nn.Parameter(torch.tensor(inverse_softplus(float(eps_init))))

    @property
    def eps(self) -> torch.Tensor:
        """``softplus(phi)``, 0-dim, units of ``y^2`` or of ``||A||^2`` (see :meth:`add_eps`)."""
        return F.softplus(self.phi)

    def eps_scale(self, operator, x: torch.Tensor) -> float:
        """What ``eps`` is multiplied by for this call: 1, or ``||A||^2`` in Lipschitz units."""
        if self.eps_units == "absolute":
            return 1.0
        try:
            return lipschitz_scale(operator, x)
        except NoGradientError as err:
            raise NoGradientError(f"{self.name}: eps_units='lipschitz' needs ||A||^2: {err}; or set "
                                  "solver.params.eps_units: absolute") from None

    def data_gradient(self, x: torch.Tensor, y: torch.Tensor, operator,
                      sigma2: torch.Tensor | None = None, eps_scale: float | None = None) -> torch.Tensor:
        """``grad_x log p(y | x)`` of :func:`~learn2invert.operators.likelihood.data_gradient`, shape of ``x``:
        ``A^T (y - A x) / (sigma2 + eps)`` for a linear operator and Gaussian noise (``eps`` times
        :meth:`eps_scale`, looked up here unless the caller gives it: solvers that call this every
        step look it up once per call); with ``sigma2=None`` undivided (unit variance, no ``eps``)."""
        if sigma2 is None:
            variance = None
        else:
            variance = sigma2 + self.eps * (self.eps_scale(operator, x) if eps_scale is None else eps_scale)
        return data_gradient(operator, x, y, variance, owner=self.name)

    # ----------------------------------------------------------------------------------- hooks
    def parameter_groups(self, lr: float) -> list[dict]:
        """Optimiser parameter groups at base learning rate ``lr``. Default: one group of every
        parameter (what ``optimizer(model.parameters(), lr=lr)`` builds); solvers whose scalars
        train at another rate override it."""
        return [{"params": list(self.parameters()), "lr": lr}]

    def diagnostics(self) -> dict[str, float]:
        """Scalars about the last forward pass for the training log (default: none; equilibrium
        solvers give their fixed-point iterations and residuals)."""
        return {}


__all__ = ["INITS", "Solver"]
