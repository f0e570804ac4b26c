"""Centred, orthonormal Fourier transforms on the 2-channel real convention for complex images.

A complex image or k-space is a real tensor ``(B, 2, ...)`` whose channels are (real, imaginary).
The transforms follow fastMRI's ``fft2c``: ``ifftshift`` -> ``fftn(norm="ortho")`` -> ``fftshift``,
so the zero frequency sits at index ``n // 2`` of each transformed axis and the transform is
unitary (``ifft2c`` is both its inverse and its adjoint, and it preserves the l2 norm).

Mixed precision: PyTorch has no bfloat16 FFT (and no half-precision FFT on the CPU), so the
transforms take float16/bfloat16 inputs (as autocast makes them) in float32, with autocast off,
and return float32; float32 and float64 inputs keep their precision.
"""
from __future__ import annotations

import torch

from .base import check_tensor

__all__ = [
    "to_complex",
    "from_complex",
    "complex_abs",
    "fftnc",
    "ifftnc",
    "fft2c",
    "ifft2c",
    "fft3c",
    "ifft3c",
]


def to_complex(x: torch.Tensor) -> torch.Tensor:
    """``(B, 2, ...)`` real (float32/float64) -> complex ``(B, ...)`` (complex64/complex128)."""
    check_tensor(x, "x", "(B, 2, ...)", ndims=tuple(range(2, 9)), channels=2)
    return torch.complex(x[:, 0], x[:, 1])


def from_complex(z: torch.Tensor) -> torch.Tensor:
    """Complex ``(B, ...)`` -> real ``(B, 2, ...)`` with channels (real, imaginary)."""
    if not isinstance(z, torch.Tensor) or not z.is_complex():
        raise ValueError(f"from_complex expects a complex tensor of shape (B, ...), got {type(z).__name__}"
                         + (f" of dtype {z.dtype}" if isinstance(z, torch.Tensor) else ""))
    if z.dim() < 1:
        raise ValueError("from_complex expects a complex tensor of shape (B, ...), got a 0-dim tensor")
    return torch.stack((z.real, z.imag), dim=1)


def complex_abs(x: torch.Tensor) -> torch.Tensor:
    """Magnitude of a 2-channel complex tensor: ``(B, 2, ...)`` -> ``(B, 1, ...)``.

    Goes through ``torch.abs`` of the complex view because its gradient at 0 is defined as 0,
    whereas ``sqrt(re^2 + im^2)`` back-propagates NaN at zero pixels (common in masked k-space
    and image backgrounds).
    """
    return to_complex(x).abs().unsqueeze(1)


def _spatial_dims(ndim: int) -> tuple[int, ...]:
    if ndim not in (1, 2, 3):
        raise ValueError(f"ndim must be 1, 2 or 3 transformed axes, got {ndim}")
    return tuple(range(-ndim, 0))


def _check(x: torch.Tensor, ndim: int, name: str) -> None:
    layout = {1: "(B, 2, ..., W)", 2: "(B, 2, H, W) or (B, 2, D, H, W)", 3: "(B, 2, D, H, W)"}[ndim]
    ndims = (4, 5) if ndim == 2 else (ndim + 2,) if ndim == 3 else tuple(range(3, 9))
    check_tensor(x, name, layout, ndims=ndims, channels=2)


def _centred_fft(x: torch.Tensor, ndim: int, inverse: bool) -> torch.Tensor:
    """The shared body of :func:`fftnc` / :func:`ifftnc`; half-precision input runs in float32."""
    dims = _spatial_dims(ndim)
    if x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    with torch.autocast(device_type=x.device.type, enabled=False):
        z = torch.fft.ifftshift(to_complex(x), dim=dims)
        z = (torch.fft.ifftn if inverse else torch.fft.fftn)(z, dim=dims, norm="ortho")
        return from_complex(torch.fft.fftshift(z, dim=dims))


def fftnc(x: torch.Tensor, ndim: int = 2) -> torch.Tensor:
    """Centred orthonormal FFT over the last ``ndim`` axes of a 2-channel tensor (shape kept).

    float16/bfloat16 input is transformed in float32 and the result is float32.
    """
    _check(x, ndim, "image x")
    return _centred_fft(x, ndim, inverse=False)


def ifftnc(y: torch.Tensor, ndim: int = 2) -> torch.Tensor:
    """Centred orthonormal inverse FFT over the last ``ndim`` axes; inverse and adjoint of :func:`fftnc`.

    float16/bfloat16 input is transformed in float32 and the result is float32.
    """
    _check(y, ndim, "k-space y")
    return _centred_fft(y, ndim, inverse=True)


def fft2c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D FFT: image ``(B, 2, H, W)`` -> k-space ``(B, 2, H, W)``.

    A ``(B, 2, D, H, W)`` input is transformed slice by slice (over H, W only).
    """
    return fftnc(x, 2)


def ifft2c(y: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 2-D inverse FFT: k-space ``(B, 2, H, W)`` -> image ``(B, 2, H, W)``."""
    return ifftnc(y, 2)


def fft3c(x: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 3-D FFT: volume ``(B, 2, D, H, W)`` -> k-space ``(B, 2, D, H, W)``."""
    return fftnc(x, 3)


def ifft3c(y: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal 3-D inverse FFT: k-space ``(B, 2, D, H, W)`` -> volume ``(B, 2, D, H, W)``."""
    return ifftnc(y, 3)
