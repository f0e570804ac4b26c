"""Gaussian blur: a 2D convolution applied to every channel with the same kernel."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import LinearOperator, check_tensor

_PADDINGS = ("circular", "zeros")


def gaussian_kernel(kernel_size: int, sigma: float, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Isotropic 2D Gaussian kernel of shape ``(kernel_size, kernel_size)`` that sums to 1.

    Taps are the Gaussian density sampled at integer offsets ``-r..r`` (``r = kernel_size // 2``)
    from the centre, ``sigma`` in pixels; the truncation to the window is compensated by the
    normalisation, so blurring a constant image leaves it unchanged.
    """
    radius = kernel_size // 2
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    profile = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = torch.outer(profile, profile)
    return (kernel / kernel.sum()).to(dtype)


class GaussianBlur(LinearOperator):
    """Blur ``y = k * x`` with an isotropic Gaussian kernel, same size in and out.

    The same 2D kernel is applied to each channel separately (a depthwise convolution), so grey
    ``(B, 1, H, W)`` and RGB ``(B, 3, H, W)`` images both work; ``y`` has the shape of ``x``.
    The LUSER paper's deblurring uses ``GaussianBlur(9, sigma=5 ** 0.5)`` (a "variance of 5"),
    the flow-unfolding paper ``sigma=5`` pixels.

    Args:
        kernel_size: odd window width in pixels.
        sigma: standard deviation of the Gaussian in pixels (> 0).
        padding: how the image is extended beyond its border. ``"circular"`` (default) makes
            ``A`` a circulant matrix, diagonalised by the 2D DFT; it needs ``H, W >=
            kernel_size // 2``. ``"zeros"`` treats pixels outside the image as 0 (the adjoint is
            then the transposed convolution, which is not a blur near the border).

    The kernel is a non-persistent buffer of shape ``(kernel_size, kernel_size)`` (it is derived
    from the arguments, so it is not saved in ``state_dict``). It is built in float64 and cast to
    the input's dtype on each call, so float32 and float64 inputs both get a correctly rounded
    kernel; ``.to(device)`` moves it, and ``.float()`` / ``.half()`` round it for good.
    """

    kernel: torch.Tensor

    def __init__(self, kernel_size: int, sigma: float, padding: str = "circular") -> None:
        super().__init__()
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be an odd positive integer, got {kernel_size!r}")
        if not math.isfinite(float(sigma)) or float(sigma) <= 0:
            raise ValueError(f"sigma must be a finite number > 0 (in pixels), got {sigma!r}")
        if padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
        self.kernel_size = kernel_size
        self.sigma = float(sigma)
        self.padding = padding
        # Kept in float64: a float32 copy could not be made exact again by a later .double().
        self.register_buffer("kernel", gaussian_kernel(kernel_size, self.sigma), persistent=False)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, sigma={self.sigma}, padding={self.padding!r}"

    def _check(self, t: torch.Tensor, name: str) -> None:
        check_tensor(t, name, "(B, C, H, W)", ndims=(4,), owner=type(self).__name__)
        radius = self.kernel_size // 2
        if self.padding == "circular" and min(t.shape[-2:]) < radius:
            raise ValueError(
                f"{type(self).__name__}: {name} of shape {tuple(t.shape)} is too small for a circular blur with "
                f"kernel_size {self.kernel_size}: H and W must be >= {radius} in (B, C, H, W)"
            )

    def _weight(self, t: torch.Tensor) -> torch.Tensor:
        return self.kernel.to(dtype=t.dtype)[None, None]

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Blur ``x`` of shape ``(B, C, H, W)``; returns ``(B, C, H, W)``."""
        self._check(x, "x")
        b, c, h, w = x.shape
        # Folding channels into the batch gives the depthwise convolution with one 1-channel kernel.
        flat = x.reshape(b * c, 1, h, w)
        r = self.kernel_size // 2
        if self.padding == "circular":
            out = F.conv2d(F.pad(flat, (r, r, r, r), mode="circular"), self._weight(x))
        else:
            out = F.conv2d(flat, self._weight(x), padding=r)
        return out.reshape(b, c, h, w)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Adjoint blur of ``y`` of shape ``(B, C, H, W)``; returns ``(B, C, H, W)``."""
        self._check(y, "y")
        b, c, h, w = y.shape
        flat = y.reshape(b * c, 1, h, w)
        r = self.kernel_size // 2
        weight = self._weight(y)
        if self.padding == "circular":
            # The transpose of a circulant correlation is the correlation with the flipped kernel;
            # flipping keeps the adjoint exact even though the Gaussian happens to be symmetric.
            out = F.conv2d(F.pad(flat, (r, r, r, r), mode="circular"), weight.flip(-2, -1))
        else:
            out = F.conv_transpose2d(flat, weight, padding=r)
        return out.reshape(b, c, h, w)
