"""Classical, training-free reconstructions used as baselines in every table.

- :func:`conjugate_gradient`: batched CG for symmetric positive (semi-)definite systems.
- :func:`tikhonov`: ``argmin_x ||A x - y||^2 + lam ||R x||^2`` with ``R`` = identity or the
  finite-difference gradient, solved by CG on the normal equations. It works for any
  :class:`~learn2invert.operators.LinearOperator`.
- :func:`nonlinear_tikhonov`: the same smoothness prior for a nonlinear forward model,
  ``argmin_x NLL(y | A(x)) + lam/2 ||D x||^2`` by accelerated gradient descent.
- :class:`Adjoint` and :class:`TikhonovSolver`: the same baselines with the solver call
  ``solver(y, operator, x0=None, steps=None, sigma=None) -> [x]`` of :class:`~learn2invert.solvers.base.Solver`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..operators.base import LinearOperator, check_finite, check_measurements, check_tensor, compute_dtype
from ..operators.gradient import FiniteDifference
from ..operators.likelihood import back_projection, data_gradient, negative_log_likelihood, normal
from .base import Solver


def _batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample inner product, shape (B, 1, ..., 1) so it broadcasts against a and b."""
    dims = tuple(range(1, a.dim()))
    return torch.sum(a * b, dim=dims, keepdim=True)


def conjugate_gradient(
    apply_matrix: Callable[[torch.Tensor], torch.Tensor],
    b: torch.Tensor,
    x0: torch.Tensor | None = None,
    iterations: int = 50,
    tolerance: float = 1e-6,
) -> torch.Tensor:
    """Solve ``M x = b`` for each sample of a batch by conjugate gradients.

    Args:
        apply_matrix: ``x -> M x`` for a symmetric positive (semi-)definite ``M`` acting per sample.
        b: right-hand side, shape (B, ...).
        x0: initial guess, default zeros.
        iterations: maximum number of CG iterations.
        tolerance: stop once every sample has ``||r|| <= tolerance * ||b||``.

    Returns:
        x with the shape of b.
    """
    if x0 is not None and (not isinstance(x0, torch.Tensor) or x0.shape != b.shape):
        got = tuple(x0.shape) if isinstance(x0, torch.Tensor) else type(x0).__name__
        raise ValueError(f"conjugate_gradient: x0 must have the shape of b {tuple(b.shape)}, got {got}")
    # CG is linear in (b, x0): run it on data divided by a power of two per sample, which is exact
    # in floating point, so that its inner products (squares of the data) cannot overflow for
    # large-valued data (|b| above about 1e19 in float32); the result is scaled back at the end.
    scale = None
    if b.dim() >= 2 and b.numel():
        dims = tuple(range(1, b.dim()))
        peak = b.detach().abs().amax(dim=dims, keepdim=True)
        if x0 is not None:
            peak = torch.maximum(peak, x0.detach().abs().amax(dim=dims, keepdim=True))
        scale = torch.where(peak > 0, torch.exp2(torch.floor(torch.log2(peak))), torch.ones_like(peak))
        b = b / scale
        x0 = None if x0 is None else x0 / scale
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - apply_matrix(x)
    p = r.clone()
    rr = _batch_dot(r, r)
    bb = _batch_dot(b, b).clamp_min(torch.finfo(b.dtype).tiny)
    for _ in range(iterations):
        if torch.all(rr <= tolerance**2 * bb):
            break
        mp = apply_matrix(p)
        pmp = _batch_dot(p, mp)
        # Samples that already converged have p = 0; guard their step against 0/0.
        alpha = torch.where(pmp > 0, rr / pmp.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rr))
        x = x + alpha * p
        r = r - alpha * mp
        rr_new = _batch_dot(r, r)
        beta = torch.where(rr > 0, rr_new / rr.clamp_min(torch.finfo(b.dtype).tiny), torch.zeros_like(rr))
        p = r + beta * p
        rr = rr_new
    return x if scale is None else x * scale


def normal_operator_norm(operator: LinearOperator, x_like: torch.Tensor, iterations: int = 30, seed: int = 0) -> float:
    """Largest eigenvalue of ``A^T A`` (= ``||A||_2^2``) by power iteration on one random image.

    ``x_like`` gives the image shape, dtype and device (its values are not used). Used to set
    regularisation weights and step sizes relative to the operator's scale.
    """
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(x_like[:1].shape, generator=g, dtype=x_like.dtype).to(x_like.device)
    value = 0.0
    for _ in range(iterations):
        v = v / torch.linalg.vector_norm(v)
        w = normal(operator, v)
        value = float(torch.sum(v * w))
        v = w
    return value


def tikhonov(
    operator: LinearOperator,
    y: torch.Tensor,
    lam: float,
    regulariser: str = "gradient",
    x0: torch.Tensor | None = None,
    iterations: int = 100,
    tolerance: float = 1e-6,
) -> torch.Tensor:
    """Tikhonov-regularised least squares ``argmin_x ||A x - y||^2 + lam ||R x||^2``.

    Args:
        operator: the forward model.
        y: measurements, the shape ``operator.A`` produces.
        lam: regularisation weight (>= 0).
        regulariser: ``"gradient"`` (smoothness, R = finite differences; needs image-shaped x of
            rank 4 or 5) or ``"identity"`` (minimum-norm flavour, R = I).
        x0: initial guess; default ``A^T y``.
        iterations: CG iterations on the normal equations.
        tolerance: CG stops once every sample's residual is below ``tolerance * ||A^T y||``.

    Returns:
        The estimate, shape and dtype of ``A^T y``. float16 / bfloat16 data are solved in float32
        (their CG inner products overflow from about 256 x 256 pixels on) and rounded back.

    Raises ``ValueError`` for non-finite ``y`` or ``x0`` and an ``x0`` not shaped like ``A^T y``.
    """
    try:
        lam_value = float(lam)
    except (TypeError, ValueError, RuntimeError):
        lam_value = math.nan
    if isinstance(lam, bool) or not (math.isfinite(lam_value) and lam_value >= 0):
        raise ValueError(f"tikhonov: lam must be a finite number >= 0, got {lam!r}")
    if regulariser not in ("gradient", "identity"):
        raise ValueError(f"regulariser must be 'gradient' or 'identity', got {regulariser!r}")
    check_measurements(y, "tikhonov")
    dtype = y.dtype
    y = y.to(compute_dtype(dtype))
    rhs = operator.A_adjoint(y)
    if x0 is not None:
        expected = f"{tuple(rhs.shape)} (that of A_adjoint(y))"
        check_tensor(x0, "x0", expected, ndims=(rhs.dim(),), owner="tikhonov")
        if x0.shape != rhs.shape:
            raise ValueError(f"tikhonov: x0 must have the image shape {expected}, got {tuple(x0.shape)}")
        check_finite(x0, "x0", "tikhonov")
        x0 = x0.to(rhs.dtype)
    if regulariser == "gradient":
        grad = FiniteDifference()

        def regularised(x: torch.Tensor) -> torch.Tensor:
            return normal(operator, x) + lam * grad.A_adjoint(grad.A(x))
    else:

        def regularised(x: torch.Tensor) -> torch.Tensor:
            return normal(operator, x) + lam * x

    x = conjugate_gradient(regularised, rhs, x0=rhs if x0 is None else x0, iterations=iterations, tolerance=tolerance)
    return x.to(dtype)


def nonlinear_tikhonov(operator, y: torch.Tensor, lam: float, x0: torch.Tensor | None = None,
                       iterations: int = 200) -> torch.Tensor:
    """Smoothness-regularised fit of a nonlinear model: ``argmin_x NLL(y | A(x)) + lam/2 ||D x||^2``.

    ``NLL`` is the operator's noise model (:func:`~learn2invert.operators.likelihood.negative_log_likelihood`:
    Gaussian least squares, or Poisson for photon counts as in Beer-Lambert CT) and ``D`` the
    finite-difference gradient. The problem is non-convex (phase retrieval), so the result
    depends on the start: default the operator's ``A_dagger(y)``. Solved by Nesterov-accelerated
    gradient descent with a backtracking (Armijo) step and a restart whenever the objective
    rises, so every iterate is at least as good as the last; gradients come from
    :func:`~learn2invert.operators.likelihood.data_gradient` (the operator's own vector-Jacobian
    product, else autograd). With a linear operator and Gaussian noise it is half of
    :func:`tikhonov`'s objective, so it has the same minimiser for the same ``lam`` (found more slowly).

    Args:
        operator: anything with ``A(x)`` that :func:`data_gradient` can differentiate.
        y: measurements ``(B, ...)`` in the units of ``A(x)``.
        lam: weight of the smoothness term (>= 0), in the units of the NLL (undivided by sigma^2).
        x0: start ``(B, C, H, W)``; default ``A_dagger(y)`` (``A^T y`` for a linear operator).
        iterations: gradient steps.

    Returns:
        The estimate, shape of ``x0``, without autograd history.
    """
    lam = float(lam)
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"nonlinear_tikhonov: lam must be a finite number >= 0, got {lam!r}")
    check_measurements(y, "nonlinear_tikhonov")
    grad_op = FiniteDifference()

    def objective(x: torch.Tensor) -> torch.Tensor:  # per sample, (B,)
        d = grad_op.A(x)
        return negative_log_likelihood(operator, x, y) + 0.5 * lam * d.pow(2).flatten(1).sum(dim=1)

    def gradient(x: torch.Tensor) -> torch.Tensor:
        return -data_gradient(operator, x, y, owner="nonlinear_tikhonov") + lam * grad_op.A_adjoint(grad_op.A(x))

    def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return v.reshape(-1, *([1] * (like.dim() - 1)))

    with torch.no_grad():
        x = (back_projection(operator, y) if x0 is None else x0).detach().clone()
        check_finite(x, "x0", "nonlinear_tikhonov")
        f_x = objective(x)
        z = x.clone()
        momentum = torch.ones_like(f_x)  # Nesterov's t_k, per sample
        step = torch.ones_like(f_x)  # step size per sample, found by backtracking
        for _ in range(iterations):
            f_z, g_z = objective(z), gradient(z)
            g2 = g_z.pow(2).flatten(1).sum(dim=1)
            while True:  # Armijo: halve the step of each sample whose objective did not fall enough
                candidate = z - per_sample(step, z) * g_z
                f_c = objective(candidate)
                short = ~(f_c <= f_z - 0.5 * step * g2) & (step > 1e-12)
                if not bool(short.any()):
                    break
                step = torch.where(short, 0.5 * step, step)
            # A sample whose objective rose keeps its last iterate and restarts without momentum.
            rises = f_c > f_x
            next_momentum = (1 + torch.sqrt(1 + 4 * momentum**2)) / 2
            extrapolated = candidate + per_sample((momentum - 1) / next_momentum, z) * (candidate - x)
            x = torch.where(per_sample(rises, x), x, candidate)
            f_x = torch.where(rises, f_x, f_c)
            z = torch.where(per_sample(rises, z), x, extrapolated)
            momentum = torch.where(rises, torch.ones_like(momentum), next_momentum)
            step = 1.5 * step  # let the step grow again after a backtrack
    return x


class Adjoint(Solver):
    """The zero-iteration baseline as a solver: ``A^T y`` (the zero-filled image in MRI;
    ``A_dagger(y)`` for a nonlinear operator), or ``A^T y / ||A||^2`` with ``scaled=True``.

    Call ``adjoint(y, operator, x0=None, steps=None, sigma=None)`` -> ``[x]``, ``x`` of shape
    ``(B, C, *S)`` in the dtype of ``y`` (float16 / bfloat16 computed in float32). A given ``x0``
    is checked like every solver's start (image shape of ``A^T y``, finite) and returned: nothing
    is iterated. ``steps`` and ``sigma`` are unused. ``channels``: the image channels C to accept
    (``None``: any), for a caller that expects a fixed layout.
    """

    def __init__(self, scaled: bool = False, channels: int | None = None) -> None:
        super().__init__()
        self.init, self.channels = ("scaled_adjoint" if scaled else "adjoint"), channels

    def forward(self, y: torch.Tensor, operator: LinearOperator, x0: torch.Tensor | None = None,
                steps: int | None = None, sigma: float | torch.Tensor | None = None) -> list[torch.Tensor]:
        dtype = y.dtype if isinstance(y, torch.Tensor) else None
        if dtype is not None:  # a non-tensor y is refused by start() with the solver's name
            y = y.to(compute_dtype(dtype))
        x = self.start(y, operator, x0)
        if x0 is not None:
            image = self.initial_estimate(y, operator)
            if x.shape != image.shape:
                raise ValueError(f"Adjoint: x0 must have the image shape {tuple(image.shape)} (that of A_adjoint(y)), "
                                 f"got {tuple(x.shape)}")
        return [x.to(dtype)]


class TikhonovSolver(Solver):
    """:func:`tikhonov` as a solver: ``argmin_x ||A x - y||^2 + lam ||R x||^2`` by conjugate gradients.

    Args:
        lam, regulariser, iterations, tolerance: as in :func:`tikhonov` (``iterations`` are its CG iterations).
        channels: the image channels C to accept (``None``: any), for a caller that expects a fixed layout.

    Call ``solver(y, operator, x0=None, steps=None, sigma=None)`` -> ``[x]``, ``x`` with the shape
    and dtype of ``A^T y``; ``x0`` warm-starts CG (default ``A^T y``), ``steps`` overrides
    ``iterations``, ``sigma`` is unused (``lam`` carries the noise level).
    """

    def __init__(self, lam: float, regulariser: str = "gradient", iterations: int = 100, tolerance: float = 1e-6,
                 channels: int | None = None) -> None:
        super().__init__()
        self.lam, self.regulariser, self.iterations, self.tolerance = lam, regulariser, iterations, tolerance
        self.channels = channels

    def forward(self, y: torch.Tensor, operator: LinearOperator, x0: torch.Tensor | None = None,
                steps: int | None = None, sigma: float | torch.Tensor | None = None) -> list[torch.Tensor]:
        iterations = self.check_steps(steps, self.iterations)
        x = tikhonov(operator, y, self.lam, self.regulariser, x0=x0, iterations=iterations, tolerance=self.tolerance)
        if self.channels is not None:  # tikhonov() takes any layout; check the one this solver promised
            self.check_image(x, "the image A_adjoint(y)")
        return [x]

    def extra_repr(self) -> str:
        return f"lam={self.lam}, regulariser={self.regulariser!r}, iterations={self.iterations}"
