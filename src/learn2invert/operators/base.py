"""Base class and input checks shared by every forward operator and solver.

An operator is a small ``nn.Module`` that knows the physics ``y = A x`` and its exact adjoint.
Solvers only ever call ``A``, ``A_adjoint`` and ``A_adjoint_A``; they never know which operator
they were given (the names match deepinv's physics objects so those plug in unchanged).

Input policy, the same for every operator and solver of the library:

* **Layout.** Every public entry point (``A``, ``A_adjoint``, ``A_adjoint_A``, each solver call)
  checks the type, dtype and shape of its inputs and raises a ``ValueError`` whose message starts
  with the operator or solver name and states the expected shape, e.g.
  ``"SingleCoilMRI: k-space y must have shape (B, 2, H, W) or (B, 2, D, H, W), got ..."``.
  These checks read only metadata (no pass over the data, no GPU synchronisation).
* **Dtypes.** Tensors must be real floating point. float32 and float64 results keep the input
  dtype. float16 / bfloat16 are accepted too: operators with native kernels for them (blur,
  super-resolution, masks, dense projections, finite differences) return the input dtype; those
  without (the FFTs of MRI and Fourier projections, CT's sparse products) compute in float32 and
  return float32, never rounding a float32 result down (as :mod:`~learn2invert.operators.fft`
  does, so that under autocast the data term keeps float32 precision). Integer and bool tensors
  are refused; complex data go in as 2 (real, imaginary) channels. Learned solvers need the
  dtype of their parameters (convert the model or the data); the classical solvers (TV,
  Tikhonov) solve float16 / bfloat16 data in float32 and return the dtype of ``y``.
* **Empty batches.** ``B = 0`` is valid everywhere and gives an empty batch of the documented
  output shape. A size-0 dimension other than the batch is refused.
* **NaN / Inf.** Operators do *not* look at values: they are linear maps and propagate NaN and
  Inf as IEEE arithmetic does. A check there would cost a full pass and, on GPU, a host
  synchronisation at every call, and an iterative solver calls ``A`` and ``A^T`` tens to hundreds
  of times per reconstruction. The *solvers* refuse non-finite data instead, once per call at
  their entry (:func:`check_measurements`, :func:`check_finite`): measurements ``y`` or a start
  image ``x0`` holding NaN or Inf raise a ``ValueError`` that counts them, so a corrupt input
  never comes back as a silently NaN reconstruction.
"""
from __future__ import annotations

import torch
from torch import nn

# Dtypes accepted, but computed (and returned) in float32 where a kernel has no implementation for them.
REDUCED_PRECISION = (torch.float16, torch.bfloat16)


class LinearOperator(nn.Module):
    """A linear forward model ``y = A x`` with its exact adjoint ``A^T``.

    Subclasses implement :meth:`A` and :meth:`A_adjoint`; both act on batches (first dim = B).
    Calling the module applies ``A``. Buffers (masks, kernels, system matrices) move with
    ``.to(device)`` / ``.double()`` like any module state. See the module docstring for the input
    policy (layout checks, dtypes, empty batches, NaN/Inf propagation) that subclasses follow.
    """

    linear = True

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802 - the field's standard name
        raise NotImplementedError(f"{type(self).__name__} must implement A")

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        raise NotImplementedError(f"{type(self).__name__} must implement A_adjoint")

    def A_adjoint_A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Normal operator ``A^T A x`` (subclasses override when a cheaper form exists)."""
        return self.A_adjoint(self.A(x))

    def A_vjp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Vector-Jacobian product ``J(x)^T v``; the Jacobian of a linear map is the map, so ``A^T v``."""
        return self.A_adjoint(v)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)


class NonlinearOperator(nn.Module):
    """A nonlinear forward model ``y = A(x)`` (the mean of the measurements, units of ``y``).

    Subclasses implement :meth:`A`. Solvers take the data-consistency gradient from
    :func:`~learn2invert.operators.likelihood.data_gradient`: the subclass's ``A_vjp(x, v)``
    (``J(x)^T v``) when it defines one, else autograd through ``A``. ``likelihood`` names the
    noise model (``"gaussian"`` or ``"poisson"``) the solvers and the training measurements use,
    and ``A_dagger(y)`` (optional) gives a first image estimate where no adjoint exists.
    """

    linear = False
    likelihood = "gaussian"

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        raise NotImplementedError(f"{type(self).__name__} must implement A")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)


def _prefix(owner: str | None) -> str:
    return f"{owner}: " if owner else ""


def check_tensor(
    x: torch.Tensor,
    name: str,
    expected: str,
    ndims: tuple[int, ...] = (4,),
    channels: int | None = None,
    spatial: tuple[int, ...] | None = None,
    owner: str | None = None,
) -> None:
    """Raise a ``ValueError`` that names the expected shape when ``x`` does not fit.

    Checks, in this order: a ``torch.Tensor``, real (not complex), floating point, one of
    ``ndims`` dimensions, ``channels``, trailing ``spatial`` sizes, and no dimension of size 0
    except the batch (dim 0). Reads only metadata, never the values.

    Args:
        x: the tensor to check.
        name: what the caller calls it (``"x"``, ``"k-space y"``), used in the message.
        expected: the expected layout for the message, e.g. ``"(B, 2, H, W)"``.
        ndims: allowed numbers of dimensions.
        channels: required size of dim 1, if any.
        spatial: required trailing sizes, if any (compared with ``x.shape[-len(spatial):]``).
        owner: the operator or solver that checks (e.g. ``"SingleCoilMRI"``); the message starts
            with it.
    """
    p = _prefix(owner)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{p}{name} must be a torch.Tensor of shape {expected}, got {type(x).__name__}")
    if x.is_complex():
        raise ValueError(
            f"{p}{name} is a complex tensor; learn2invert expects real tensors of shape {expected} "
            "with (real, imaginary) as 2 channels (e.g. torch.view_as_real(z).movedim(-1, 1))"
        )
    if not x.is_floating_point():
        raise ValueError(f"{p}{name} must be a real floating-point tensor of shape {expected}, got dtype {x.dtype}")
    if x.dim() not in ndims:
        raise ValueError(f"{p}{name} must have shape {expected}, got {tuple(x.shape)} ({x.dim()} dims)")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{p}{name} must have shape {expected} with {channels} channel(s), got {tuple(x.shape)}")
    if spatial is not None and tuple(x.shape[-len(spatial):]) != tuple(spatial):
        raise ValueError(
            f"{p}{name} must have shape {expected} with trailing size {tuple(spatial)}, got {tuple(x.shape)}"
        )
    if 0 in x.shape[1:]:
        raise ValueError(
            f"{p}{name} must have shape {expected} with no empty dimension except the batch B, got {tuple(x.shape)}"
        )


def check_finite(x: torch.Tensor, name: str, owner: str | None = None) -> None:
    """Raise a ``ValueError`` that counts the NaN and Inf entries of ``x``, if it has any.

    One reduction over ``x`` and, on GPU, one host synchronisation: meant for the entry of a
    solver (once per call), not for operators called inside an iteration.
    """
    if x.numel() == 0 or bool(torch.isfinite(x).all()):
        return
    nan = int(torch.isnan(x).sum())
    inf = int(torch.isinf(x).sum())
    raise ValueError(
        f"{_prefix(owner)}{name} contains {nan} NaN and {inf} infinite value(s) out of {x.numel()}; "
        "reconstructions need finite data (mask or replace missing and saturated values first)"
    )


def check_measurements(y: torch.Tensor, owner: str, name: str = "measurements y") -> None:
    """Entry check of a solver's measurements: a real floating tensor ``(B, ...)`` with no empty
    dimension but the batch, all finite. The exact layout is the operator's business (it checks
    it in ``A_adjoint``); this check also covers operators that check nothing."""
    check_tensor(y, name, "(B, ...) in the layout the operator produces", ndims=tuple(range(1, 9)), owner=owner)
    check_finite(y, name, owner)


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        return torch.is_autocast_enabled() or torch.is_autocast_cpu_enabled()


def check_parameter_dtype(module: nn.Module, x: torch.Tensor, name: str, owner: str) -> None:
    """A learned solver's data must have the dtype of its parameters: raise a ``ValueError``
    saying how to convert, instead of torch's "Input type (double) and bias type (float)" deep
    inside a convolution. Under ``torch.autocast`` for ``x``'s device any dtype passes: autocast
    casts at each layer (and operators made of autocast layers return its lower precision)."""
    param = next(module.parameters(), None)
    if param is not None and x.dtype != param.dtype and not _autocast_enabled(x.device.type):
        raise ValueError(
            f"{owner}: {name} has dtype {x.dtype} but the model's parameters have dtype {param.dtype}; "
            f"convert the data (.to({param.dtype})) or the model (model.to({x.dtype}))"
        )


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype to compute in for ``dtype``: float32 for float16 / bfloat16, ``dtype`` otherwise."""
    return torch.float32 if dtype in REDUCED_PRECISION else dtype


def adjoint_mismatch(operator: LinearOperator, x: torch.Tensor, generator: torch.Generator | None = None) -> float:
    """Relative error of the dot-product test ``|<A x, y> - <x, A^T y>| / (|<A x, y>| + |<x, A^T y>|)``.

    ``y`` is random with the shape of ``A x``. Use float64 inputs for a meaningful test: a correct
    adjoint gives about 1e-15 there. Useful for checking a user's own operator too.
    """
    ax = operator.A(x)
    y = torch.randn(ax.shape, dtype=ax.dtype, device=ax.device, generator=generator)
    aty = operator.A_adjoint(y)
    if aty.shape != x.shape:
        raise ValueError(f"A_adjoint returned shape {tuple(aty.shape)}, expected the shape of x {tuple(x.shape)}")
    lhs = torch.sum(ax * y)
    rhs = torch.sum(x * aty)
    return float((lhs - rhs).abs() / (lhs.abs() + rhs.abs()).clamp_min(torch.finfo(x.dtype).tiny))
