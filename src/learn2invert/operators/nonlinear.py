"""Nonlinear forward models: Fourier phase retrieval and Beer-Lambert (transmission) CT.

Both are :class:`~learn2invert.operators.base.NonlinearOperator`: they have ``A(x)`` and the
solvers take their data-consistency gradient from
:func:`~learn2invert.operators.likelihood.data_gradient` -- phase retrieval through its own
vector-Jacobian product ``A_vjp``, Beer-Lambert CT by autograd through ``exp(-R x)`` with the
Poisson likelihood of photon counts. ``A_dagger(y)`` gives each a first image estimate.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import NonlinearOperator, check_tensor, compute_dtype
from .ct import ParallelBeamCT


class PhaseRetrieval(NonlinearOperator):
    """Fourier phase retrieval ``y = |F P x|``: magnitudes of the oversampled 2D Fourier transform.

    ``P`` zero-pads each image from ``(H, W)`` to ``(s H, s W)`` (bottom and right; ``s`` =
    ``oversampling``, 2 gives the classic uniqueness for real non-negative images) and ``F`` is
    the orthonormal 2D DFT (``norm="ortho"``, not centred: magnitudes are the same up to a shift),
    so ``||A x|| = ||x||`` and the Jacobian has norm at most 1.

    Args:
        oversampling: integer ``s >= 1``.
        complex_input: ``False``: real images ``(B, C, H, W)`` -> ``(B, C, sH, sW)``, one transform
            per channel. ``True``: complex images as 2 (real, imaginary) channels ``(B, 2, H, W)``
            -> ``(B, 1, sH, sW)``.

    Gaussian likelihood on the magnitudes (units of ``x``). The gradient is the closed form
    ``J^T v = P^T F^H (v * F P x / |F P x|)`` (real part for real images), with the phase set to 0
    where ``F P x = 0``, where the modulus has no derivative and autograd would give NaN.
    float16 / bfloat16 inputs are computed and returned in float32 (the FFT's precision).
    """

    def __init__(self, oversampling: int = 2, complex_input: bool = False) -> None:
        super().__init__()
        if isinstance(oversampling, bool) or not isinstance(oversampling, int) or oversampling < 1:
            raise ValueError(f"oversampling must be a positive integer, got {oversampling!r}")
        self.oversampling = oversampling
        self.complex_input = bool(complex_input)

    def extra_repr(self) -> str:
        return f"oversampling={self.oversampling}, complex_input={self.complex_input}"

    def norm_squared(self) -> float:
        """``||J||^2 <= 1`` for every ``x``: a unitary transform followed by a unit-modulus phase."""
        return 1.0

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        """``F P x`` as a complex tensor ``(B, C', sH, sW)`` (C' = 1 for complex input)."""
        owner = type(self).__name__
        if self.complex_input:
            check_tensor(x, "image x", "(B, 2, H, W) (real, imaginary)", channels=2, owner=owner)
        else:
            check_tensor(x, "image x", "(B, C, H, W)", owner=owner)
        x = x.to(compute_dtype(x.dtype))
        h, w = x.shape[-2:]
        s = self.oversampling
        padded = F.pad(x, (0, (s - 1) * w, 0, (s - 1) * h))
        z = torch.complex(padded[:, :1], padded[:, 1:]) if self.complex_input else padded.to(_complex(padded.dtype))
        return torch.fft.fft2(z, norm="ortho")

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Fourier magnitudes ``(B, C, sH, sW)`` (``(B, 1, sH, sW)`` for complex input) of images ``x``."""
        return self._transform(x).abs()

    def _back(self, u: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """``P^T F^H u``: image-shaped, real part for real images, 2 channels for complex ones."""
        z = torch.fft.ifft2(u, norm="ortho")[..., :h, :w]
        return torch.cat([z.real, z.imag], dim=1) if self.complex_input else z.real

    def A_vjp(self, x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """``J(x)^T v`` for ``v`` shaped like ``A(x)``; returns the shape of ``x``."""
        z = self._transform(x)
        check_tensor(v, "v", f"{tuple(z.shape)} (the shape of A(x))", spatial=tuple(z.shape[-2:]),
                     owner=type(self).__name__)
        magnitude = z.abs()
        # Where z = 0 the modulus is not differentiable; its subgradient 0 keeps the step finite.
        phase = torch.where(magnitude > 0, z / magnitude.clamp_min(torch.finfo(magnitude.dtype).tiny),
                            torch.zeros_like(z))
        return self._back(v.to(magnitude.dtype) * phase, *x.shape[-2:])

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Zero-phase back-projection ``P^T F^H y`` (a rough, non-zero start; the image size is ``y``'s / s)."""
        check_tensor(y, "magnitudes y", "(B, C, sH, sW)", owner=type(self).__name__)
        s = self.oversampling
        h, w = y.shape[-2] // s, y.shape[-1] // s
        if h * s != y.shape[-2] or w * s != y.shape[-1]:
            raise ValueError(f"PhaseRetrieval: magnitudes y of shape {tuple(y.shape)} are not a multiple of the "
                             f"oversampling {s}")
        y = y.to(compute_dtype(y.dtype))
        return self._back(y.to(_complex(y.dtype)), h, w)


def _complex(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype == torch.float64 else torch.complex64


class BeerLambertCT(NonlinearOperator):
    """Transmission CT with the Beer-Lambert law: ``y = exp(-a R x)``, measured as Poisson photon counts.

    ``R`` is the parallel-beam Radon transform of :class:`~learn2invert.operators.ct.ParallelBeamCT`
    (line integrals in pixel units), ``a`` = ``attenuation`` converts image values to attenuation
    per pixel, and ``A(x)`` is the transmitted fraction of the blank-scan intensity (1 = an
    unattenuated ray). The noise is Poisson: ``likelihood = "poisson"``, and with noise level
    ``sigma`` the training measurements are ``y = sigma^2 * Poisson(A(x) / sigma^2)``, i.e.
    ``1 / sigma^2`` photons per unattenuated ray and standard deviation ``sigma`` there. The
    gradient comes from autograd through ``exp`` and ``R`` (twice differentiable, as the
    invertible i-RIM needs).

    Args:
        image_size, n_angles, n_detectors: of the Radon transform (images ``(B, C, N, N)``,
            sinograms ``(B, C, n_angles, n_detectors)``).
        attenuation: ``a``, attenuation per pixel of an image value 1 (1 / pixel). Line
            integrals of ``a x`` of a few units keep enough photons behind the object.
        floor: smallest transmitted fraction :meth:`A_dagger` takes the log of (zero counts).
    """

    likelihood = "poisson"

    def __init__(self, image_size: int, n_angles: int, n_detectors: int | None = None, attenuation: float = 1.0,
                 floor: float = 1e-3) -> None:
        super().__init__()
        if not attenuation > 0 or not math.isfinite(attenuation):
            raise ValueError(f"attenuation must be finite and > 0, got {attenuation!r}")
        if not 0 < floor < 1:
            raise ValueError(f"floor must be in (0, 1), got {floor!r}")
        self.radon = ParallelBeamCT(image_size, n_angles, n_detectors)
        self.attenuation, self.floor = float(attenuation), float(floor)
        self._norm2: float | None = None

    def extra_repr(self) -> str:
        return f"attenuation={self.attenuation}, floor={self.floor}"

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Transmitted fractions ``(B, C, n_angles, n_detectors)`` in (0, 1] for non-negative images ``(B, C, N, N)``."""
        return torch.exp(-self.attenuation * self.radon.A(x))

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Log-transform then filtered back-projection: ``FBP(-log max(y, floor)) / a``, shape ``(B, C, N, N)``."""
        return self.radon.fbp(-torch.log(y.clamp_min(self.floor))) / self.attenuation

    def norm_squared(self) -> float:
        """``a^2 ||R||^2``: a bound on ``||J||^2`` for non-negative images (where ``exp(-a R x) <= 1``)."""
        if self._norm2 is None:
            from .likelihood import operator_norm_squared

            n = self.radon.image_size
            like = torch.zeros((1, 1, n, n), dtype=self.radon.matrix.dtype, device=self.radon.matrix.device)
            self._norm2 = self.attenuation**2 * operator_norm_squared(self.radon, like)
        return self._norm2


__all__ = ["BeerLambertCT", "PhaseRetrieval"]
