"""The data term of every gradient-based solver, taken in one place, for linear and nonlinear physics.

A solver needs ``grad_x log p(y | x)``, the data-consistency gradient. :func:`data_gradient` gives
it for any forward model ``lambda = A(x)``, in this order of preference:

1. the operator's own ``likelihood_gradient(x, y, variance)`` (a closed form it knows best);
2. ``J^T r`` with the operator's vector-Jacobian product ``A_vjp(x, v)`` (deepinv's name; for a
   linear operator ``A_vjp(x, v) = A_adjoint(v)``, which the base class provides), or
   ``A_adjoint(v)`` for a duck-typed operator that has one and does not say ``linear = False``;
3. otherwise autograd through ``A`` (which is the gradient of the negative log-likelihood).

``r = -d NLL / d lambda`` is the residual of the noise model: ``y - lambda`` for the Gaussian
(default) and ``y / lambda - 1`` for the Poisson one (named by ``likelihood="poisson"`` or by
the operator's ``likelihood`` attribute). The result is divided by ``variance``: the noise
variance ``sigma^2`` for Gaussian noise, and for Poisson counts the gain ``sigma^2`` (the
intensity of one count, ``y = sigma^2 * Poisson(lambda / sigma^2)``), for which
``-grad NLL / sigma^2`` is the exact log-likelihood gradient. On linear operators with the
Gaussian model the arithmetic is exactly the old hard-wired ``A^T (y - A x) / sigma^2``, so
trained models give bit-identical outputs.
"""
from __future__ import annotations

import weakref

import torch

LIKELIHOODS = ("gaussian", "poisson")


class NoGradientError(TypeError):
    """An operator offers no way to take the data-consistency gradient."""


def likelihood_of(operator, likelihood: str | None = None) -> str:
    """The noise model to use: ``likelihood`` if given, else the operator's ``likelihood`` attribute, else Gaussian."""
    name = likelihood or getattr(operator, "likelihood", None) or "gaussian"
    if name not in LIKELIHOODS:
        raise ValueError(f"{type(operator).__name__}: unknown likelihood {name!r} (choose from {', '.join(LIKELIHOODS)})")
    return name


def is_linear(operator) -> bool:
    """Linear unless it says ``linear = False``; a duck-typed operator must have ``A_adjoint`` to count as linear."""
    flag = getattr(operator, "linear", None)
    if flag is not None:
        return bool(flag)
    return callable(getattr(operator, "A_adjoint", None))


def _residual(ax: torch.Tensor, y: torch.Tensor, likelihood: str) -> torch.Tensor:
    """``-d NLL / d lambda`` at ``lambda = A(x)``, shape of ``y``."""
    if likelihood == "gaussian":
        return y - ax
    # Poisson NLL = sum(lambda - y log lambda); lambda <= 0 has no likelihood: the floor keeps a
    # start outside the model's domain finite instead of 0/0.
    return y / ax.clamp_min(torch.finfo(ax.dtype).tiny) - 1.0


def negative_log_likelihood(operator, x: torch.Tensor, y: torch.Tensor, likelihood: str | None = None) -> torch.Tensor:
    """Per-sample ``NLL(y | A(x))`` up to constants, shape ``(B,)``, undivided by the noise variance.

    Gaussian: ``0.5 ||y - A(x)||^2``; Poisson: ``sum(A(x) - y log A(x))``. Its gradient is
    ``-data_gradient(operator, x, y)`` (the same noise model, the same floor on ``A(x)``).
    """
    ax = operator.A(x)
    _check_shapes(ax, y, None)
    if likelihood_of(operator, likelihood) == "gaussian":
        value = 0.5 * (y - ax).pow(2)
    else:
        value = ax - y * torch.log(ax.clamp_min(torch.finfo(ax.dtype).tiny))
    return value.flatten(1).sum(dim=1)


def _vector_jacobian(operator):
    """``(x, v) -> J(x)^T v`` from the operator's own methods, or None where only autograd can give it."""
    vjp = getattr(operator, "A_vjp", None)
    if callable(vjp):
        return vjp
    if getattr(operator, "linear", None) is not False and callable(getattr(operator, "A_adjoint", None)):
        return lambda x, v: operator.A_adjoint(v)
    return None


def _check_shapes(ax: torch.Tensor, y: torch.Tensor, owner: str | None) -> None:
    if ax.shape != y.shape:
        # Caught here because y - A x would otherwise broadcast silently.
        prefix = f"{owner}: " if owner else ""
        raise ValueError(f"{prefix}A(x) has shape {tuple(ax.shape)} but y has shape {tuple(y.shape)}; "
                         "x0 must have the image shape (B, C, ...) of A_adjoint(y)")


def data_gradient(operator, x: torch.Tensor, y: torch.Tensor, variance: float | torch.Tensor | None = None,
                  likelihood: str | None = None, owner: str | None = None) -> torch.Tensor:
    """``grad_x log p(y | x)``: the data-consistency gradient of any operator (see the module docstring).

    Args:
        operator: the forward model: anything with ``A(x)``; plus ``likelihood_gradient``,
            ``A_vjp`` or ``A_adjoint`` where it has them.
        x: the current image estimate ``(B, C, *S)``.
        y: measurements in the layout ``operator.A`` produces (units of ``A(x)``).
        variance: ``sigma^2`` (Gaussian: noise variance; Poisson: intensity of one count), a float
            or a tensor broadcastable to ``x`` such as ``(B, 1, 1, 1)``; ``None`` leaves the result
            undivided (``J^T r``, the gradient of ``-0.5 ||y - A x||^2`` in the Gaussian case).
        likelihood: ``"gaussian"`` or ``"poisson"``; default the operator's ``likelihood``
            attribute, else Gaussian.
        owner: the solver asking, named in error messages.

    Returns:
        The gradient, shape of ``x``. Differentiable (twice, through autograd) when grad mode is on
        and ``x`` requires grad, as learned solvers and the invertible i-RIM need.

    Raises:
        ValueError: ``A(x)`` does not have the shape of ``y``, or the gradient not that of ``x``.
        NoGradientError: a nonlinear operator with no ``likelihood_gradient``/``A_vjp`` whose
            ``A`` autograd cannot differentiate; the message names its class.
    """
    own = getattr(operator, "likelihood_gradient", None)
    if callable(own):
        grad = own(x, y, 1.0 if variance is None else variance)
    else:
        name = likelihood_of(operator, likelihood)
        vjp = _vector_jacobian(operator)
        if vjp is not None:
            ax = operator.A(x)
            _check_shapes(ax, y, owner)
            grad = vjp(x, _residual(ax, y, name))
        else:
            grad = _autograd_vjp(operator, x, y, name, owner)
        if variance is not None:
            grad = grad / variance
    if grad.shape != x.shape:
        raise ValueError(f"{type(operator).__name__}: the data-consistency gradient has shape {tuple(grad.shape)}, "
                         f"expected the image shape {tuple(x.shape)}")
    return grad


def _autograd_vjp(operator, x: torch.Tensor, y: torch.Tensor, likelihood: str, owner: str | None) -> torch.Tensor:
    """``J^T r`` by autograd through ``operator.A`` (= ``-grad NLL``); keeps the graph when the caller records one."""
    record = torch.is_grad_enabled() and x.requires_grad
    message = (f"{type(operator).__name__}: cannot take the data-consistency gradient of this operator: it has no "
               "likelihood_gradient(x, y, variance), no A_vjp(x, v) and no A_adjoint (or says linear = False), and "
               "autograd cannot differentiate its A(x) (computed outside torch?); give it one of these methods")
    with torch.enable_grad():  # also at inference, where the caller runs under no_grad
        xg = x if x.requires_grad else x.detach().requires_grad_(True)
        try:
            ax = operator.A(xg)
        except RuntimeError as err:  # e.g. x.numpy() inside A: torch refuses it on a tensor that requires grad
            if "requires grad" in str(err):
                raise NoGradientError(message) from err
            raise
        _check_shapes(ax, y, owner)
        if not ax.requires_grad:
            raise NoGradientError(message)
        (grad,) = torch.autograd.grad(ax, xg, _residual(ax, y, likelihood), create_graph=record)
    return grad if record else grad.detach()


def likelihood_gradient(operator, x: torch.Tensor, y: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Gradient of the log-likelihood ``log p(y | x)`` with respect to ``x``, noise level ``sigma``.

    For a linear operator and Gaussian noise this is ``A^T (y - A x) / sigma^2`` with the shape of
    ``x``; other operators and noise models as in :func:`data_gradient`. ``sigma`` is the noise
    standard deviation in the units of ``y`` (a float or a tensor broadcastable to ``x``, e.g.
    ``(B, 1, 1, 1)``); the RIM adds a small trainable ``eps`` to ``sigma^2`` so that noise-free
    problems stay finite.
    """
    sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if torch.any(sigma_t <= 0):
        raise ValueError(f"sigma must be > 0 for the likelihood gradient, got {sigma}")
    return data_gradient(operator, x, y, sigma_t**2)


def back_projection(operator, y: torch.Tensor, scaled: bool = False) -> torch.Tensor:
    """A first image estimate from ``y``: ``A_adjoint(y)`` for linear operators, the operator's
    ``A_dagger(y)`` (deepinv's name for its inverse or initial guess) for nonlinear ones.

    ``scaled=True`` divides the adjoint by ``||A||^2`` (:func:`operator_norm_squared`): one
    gradient step of step ``1 / ||A||^2`` from zero, in the units of ``x`` whatever the scale of
    ``A`` (``A^T y`` of CT or of an unnormalised projection is hundreds of times too large).
    ``A_dagger`` is an image estimate already and is never rescaled.
    """
    if is_linear(operator):
        aty = operator.A_adjoint(y)
        if scaled:
            aty = aty / lipschitz_scale(operator, aty)
        return aty
    dagger = getattr(operator, "A_dagger", None)
    if not callable(dagger):
        raise NoGradientError(f"{type(operator).__name__} is nonlinear and has no A_dagger(y) to start from; "
                              "pass x0 (an image estimate of shape (B, C, ...))")
    return dagger(y)


def normal(operator, x: torch.Tensor) -> torch.Tensor:
    """``A^T A x``: the operator's ``A_adjoint_A`` where it has one, else ``A_adjoint(A(x))``."""
    method = getattr(operator, "A_adjoint_A", None)
    return method(x) if callable(method) else operator.A_adjoint(operator.A(x))


def normal_norm_per_sample(operator, x_like: torch.Tensor, iterations: int = 30, seed: int = 0) -> torch.Tensor:
    """``||A_b||_2^2`` for each sample b by power iteration on ``A^T A``, shape (B,).

    Same method as :func:`learn2invert.solvers.classical.normal_operator_norm`, run on the whole
    batch at once with one Rayleigh quotient per sample. That function probes only the first
    sample (``x_like[:1]``), which gives no per-sample value and fails for operators whose
    physics is batched per sample (e.g. a ``SingleCoilMRI`` with a ``(B, 1, H, W)`` mask, as the
    training measurements build), since they reject a 1-sample input.
    """
    def per_sample_sum(t: torch.Tensor) -> torch.Tensor:
        return t.flatten(1).sum(dim=1)  # not reshape(B, -1): that is ambiguous for B = 0

    g = torch.Generator().manual_seed(seed)
    v = torch.randn(x_like.shape, generator=g, dtype=x_like.dtype).to(x_like.device)
    tiny = torch.finfo(x_like.dtype).tiny
    value = torch.zeros(x_like.shape[0], dtype=x_like.dtype, device=x_like.device)
    for _ in range(iterations):
        norms = torch.sqrt(per_sample_sum(v * v)).clamp_min(tiny)
        v = v / norms.reshape(-1, *([1] * (v.dim() - 1)))
        w = normal(operator, v)
        if w.shape != v.shape:
            raise ValueError(f"A_adjoint_A returned shape {tuple(w.shape)} for an image of shape {tuple(v.shape)}")
        value = per_sample_sum(v * w)
        v = w
    return value


_NORM_CACHE: "weakref.WeakKeyDictionary[object, dict]" = weakref.WeakKeyDictionary()


def operator_norm_squared(operator, x_like: torch.Tensor, iterations: int = 30, seed: int = 0) -> float:
    """``||A||_2^2``, the Lipschitz constant of the Gaussian data term's gradient.

    The operator's own ``norm_squared()`` where it knows it exactly (orthonormal FFTs, masks,
    the identity); else the largest eigenvalue of ``A^T A`` by power iteration on a random batch
    shaped like ``x_like`` (the largest over its samples, so per-sample physics works too),
    cached per operator object, batch shape and dtype (0 for an empty batch). Linear operators
    only, unless they report it.
    """
    known = getattr(operator, "norm_squared", None)
    if callable(known):
        return float(known())
    if not is_linear(operator):
        raise NoGradientError(f"{type(operator).__name__} is nonlinear and reports no norm_squared(); "
                              "give the step size by hand")
    key = (tuple(x_like.shape), x_like.dtype, x_like.device)
    try:
        cache = _NORM_CACHE.setdefault(operator, {})
    except TypeError:  # not weak-referenceable: no cache
        cache = {}
    if key not in cache:
        with torch.no_grad():
            norms = normal_norm_per_sample(operator, x_like, iterations, seed)
        cache[key] = float(norms.max()) if norms.numel() else 0.0  # an empty batch has no scale
    return cache[key]


def lipschitz_scale(operator, x_like: torch.Tensor) -> float:
    """``||A||^2`` (:func:`operator_norm_squared`) as the unit of Lipschitz step units: steps are
    divided by it, penalties multiplied. 1 where there is no scale (a zero operator, an empty
    batch), which keeps the steps finite."""
    return operator_norm_squared(operator, x_like) or 1.0


__all__ = ["LIKELIHOODS", "NoGradientError", "back_projection", "data_gradient", "is_linear", "likelihood_gradient",
           "likelihood_of", "lipschitz_scale", "negative_log_likelihood", "normal", "normal_norm_per_sample",
           "operator_norm_squared"]
