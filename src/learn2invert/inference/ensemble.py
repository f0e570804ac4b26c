"""Geometric self-ensemble: reconstruct flipped and rotated copies of the problem and average.

A learned solver is not exactly equivariant to flips and quarter turns, so its errors on the eight
copies of a problem related by the symmetries of the square differ in part, and their mean is
closer to the truth (the "x8" self-ensemble of image restoration: Timofte, Rothe & Van Gool,
"Seven ways to improve example-based single image super resolution", CVPR 2016). For an inverse
problem the measurement cannot be flipped in general, so the solver instead reconstructs ``T x``
from the same ``y`` under the operator ``A T^-1`` (:class:`TransformedOperator`), and the result is
mapped back with ``T^-1``. Any linear operator works (MRI masks, CT, blur, projections); the cost is
one reconstruction per copy.

Measured (``l2i bench compare --ensemble 8``, docs/BENCHMARKS.md): +0.15 to +0.22 dB for the
grey-denoising RIM at sigma 15-50; +0.06 dB for the shipped i-RIM at 4x MRI and +0.09 dB for ``mri_irim_mixed`` on
the real MR scan, whose remaining error is mostly not of this kind.
"""
from __future__ import annotations

import torch

from ..operators.likelihood import is_linear, normal, operator_norm_squared

__all__ = ["Dihedral", "TransformedOperator", "self_ensemble", "ENSEMBLE_SIZES"]

ENSEMBLE_SIZES = (1, 2, 4, 8)


class Dihedral:
    """One symmetry of the square on the last two axes: ``k`` quarter turns, then a left-right
    flip if ``flip``. Orthogonal, so its inverse is its transpose."""

    def __init__(self, k: int, flip: bool) -> None:
        self.k, self.flip = int(k) % 4, bool(flip)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.rot90(x, self.k, (-2, -1)) if self.k else x
        return torch.flip(x, (-1,)) if self.flip else x

    def inverse(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flip(x, (-1,)) if self.flip else x
        return torch.rot90(x, -self.k, (-2, -1)) if self.k else x

    def __repr__(self) -> str:
        return f"Dihedral(k={self.k}, flip={self.flip})"


# The first four keep the image's shape (identity, left-right flip, up-down flip, half turn), so
# ensembles of up to four also work on non-square images.
_ORDER = ((0, False), (0, True), (2, True), (2, False), (1, False), (1, True), (3, False), (3, True))


class TransformedOperator:
    """``A T^-1`` for an orthogonal image transform ``T``: a solver that reconstructs with it
    from the measurements ``y = A x`` estimates ``T x``.

    Forwards ``A_adjoint`` (``T A^T``), ``A_adjoint_A``, ``norm_squared`` (``T`` keeps the norm),
    the ``likelihood`` name and an operator's own ``likelihood_gradient``.
    """

    def __init__(self, operator, transform: Dihedral, x_like: torch.Tensor) -> None:
        if not is_linear(operator):
            raise ValueError(f"a self-ensemble needs a linear operator (A and A_adjoint); "
                             f"{type(operator).__name__} is nonlinear")
        self.operator, self.transform, self._x_like = operator, transform, x_like
        if getattr(operator, "likelihood", None) is not None:
            self.likelihood = operator.likelihood
        own = getattr(operator, "likelihood_gradient", None)
        if callable(own):  # d/dz f(T^-1 z) = T grad f for orthogonal T
            self.likelihood_gradient = lambda z, y, variance: transform(own(transform.inverse(z), y, variance))

    def A(self, z: torch.Tensor) -> torch.Tensor:
        return self.operator.A(self.transform.inverse(z))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:
        return self.transform(self.operator.A_adjoint(y))

    def A_adjoint_A(self, z: torch.Tensor) -> torch.Tensor:
        return self.transform(normal(self.operator, self.transform.inverse(z)))

    def norm_squared(self) -> float:
        return operator_norm_squared(self.operator, self._x_like)  # cached on the operator itself


def self_ensemble(solver, y: torch.Tensor, operator, size: int = 8, x0: torch.Tensor | None = None,
                  **kwargs) -> torch.Tensor:
    """The mean of ``size`` reconstructions of ``y`` under flipped and rotated copies of the problem.

    Args:
        solver: any solver called as ``solver(y, operator, x0=..., **kwargs)`` returning its iterates.
        y: measurements, in the layout ``operator`` expects.
        operator: a linear forward operator.
        size: 1 (the solver alone), 2 (and its left-right flip), 4 (and the up-down flip and half
            turn: any image shape) or 8 (and the quarter turns: square images only).
        x0: start image ``(B, C, *S)``, transformed with each copy; default the solver's own.
        **kwargs: passed to the solver (``sigma``, ``steps``).

    Returns:
        The averaged reconstruction, shape of the solver's last iterate ``(B, C, *S)``.
    """
    if size not in ENSEMBLE_SIZES:
        raise ValueError(f"the self-ensemble size must be one of {ENSEMBLE_SIZES}, got {size}")
    if x0 is not None:  # passed only when given: a solver (or a user's stand-in) may take no x0
        kwargs = {**kwargs, "x0": x0}
    if size == 1:
        return solver(y, operator, **kwargs)[-1]
    x_like = operator.A_adjoint(y) if x0 is None else x0
    if size == 8 and x_like.shape[-1] != x_like.shape[-2]:
        raise ValueError(f"a self-ensemble of 8 turns the image by quarter turns and needs square images; this one "
                         f"is {tuple(x_like.shape[-2:])}: use 4 or fewer")
    total = None
    for k, flip in _ORDER[:size]:
        t = Dihedral(k, flip)
        if x0 is not None:
            kwargs["x0"] = t(x0)
        estimate = t.inverse(solver(y, TransformedOperator(operator, t, x_like), **kwargs)[-1])
        total = estimate if total is None else total + estimate
    return total / size
