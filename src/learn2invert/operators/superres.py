"""Super-resolution: MATLAB ``imresize``-style anti-aliased downscaling by an integer factor.

The RIM paper (Sec. 4.6, footnote 6) re-implemented MATLAB's bicubic kernel so that its forward
model matches the test protocol of Huang et al. (2015), which makes the low-resolution images
with ``imresize(x, 1/f)``. For a downscale by ``f`` MATLAB's ``contributions()`` does:

* output pixel ``i`` (0-based) is centred at input coordinate ``f * i + (f - 1) / 2``
  (pixel centres at integers);
* the interpolation kernel is stretched by ``f`` and divided by ``f`` (anti-aliasing), so the
  bicubic kernel (Keys' cubic convolution with ``a = -0.5``) covers ``4 f`` input pixels;
* the weights of each output pixel are normalised to sum 1, then indices that fall outside the
  image are mirrored, edge pixel included (``... 1 0 | 0 1 2 ... n-1 | n-1 n-2 ...``).

Because the output centres advance by exactly ``f`` input pixels, every output pixel has the same
weights: the operator is a strided 1D correlation along H, then along W, of the padded image.
Padding is an index gather, so its exact adjoint folds the padded border back (an index add).
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from .base import LinearOperator, check_tensor

_PADDINGS = ("symmetric", "circular")


def _cubic(t: torch.Tensor) -> torch.Tensor:
    # Keys' cubic convolution with a = -0.5, the kernel MATLAB calls "bicubic".
    t = t.abs()
    near = (1.5 * t - 2.5) * t * t + 1
    far = ((-0.5 * t + 2.5) * t - 4) * t + 2
    return torch.where(t <= 1, near, torch.where(t <= 2, far, torch.zeros_like(t)))


def _triangle(t: torch.Tensor) -> torch.Tensor:
    return (1 - t.abs()).clamp_min(0)


def _box(t: torch.Tensor) -> torch.Tensor:
    # MATLAB's box is half-open on [-0.5, 0.5); the sample points never fall on its edges for
    # integer factors, but keeping the convention makes the kernel match MATLAB's definition.
    return ((t >= -0.5) & (t < 0.5)).to(t.dtype)


# name -> (kernel function, support width in units of the low-resolution pixel)
_KERNELS: dict[str, tuple[Callable[[torch.Tensor], torch.Tensor], float]] = {
    "bicubic": (_cubic, 4.0),
    "bilinear": (_triangle, 2.0),
    "box": (_box, 1.0),
}


def downscale_taps(factor: int, kernel: str = "bicubic") -> tuple[torch.Tensor, int]:
    """1D weights of MATLAB's anti-aliased ``imresize`` downscaling by an integer ``factor``.

    Returns ``(taps, offset)``: low-resolution pixel ``i`` is ``sum_t taps[t] * x[f * i + t - offset]``
    (indices outside ``0..n-1`` to be extended by the boundary rule). ``taps`` is float64 of
    length ``4 f`` (even ``f``) or ``4 f - 1`` (odd ``f``) for ``"bicubic"``, sums to 1, and holds
    only the non-zero weights; ``offset`` is how many pixels the window of output pixel ``i``
    starts before input pixel ``f * i`` (so the image needs ``offset`` pixels of padding on the left).
    """
    if kernel not in _KERNELS:
        raise ValueError(f"kernel must be one of {tuple(_KERNELS)}, got {kernel!r}")
    function, width = _KERNELS[kernel]
    reach = int(math.ceil(width * factor / 2)) + 1
    # Candidate input offsets o = j - f*i; their distance to the output centre is o - (f-1)/2.
    offsets = torch.arange(-reach, reach + factor, dtype=torch.int64)
    distance = offsets.to(torch.float64) - (factor - 1) / 2
    weights = function(distance / factor) / factor
    nonzero = torch.nonzero(weights).flatten()
    first, last = int(nonzero[0]), int(nonzero[-1])
    taps = weights[first : last + 1]
    return taps / taps.sum(), -int(offsets[first])


def _padding_index(n: int, before: int, after: int, mode: str, device: torch.device) -> torch.Tensor:
    """Source index in ``0..n-1`` of each position of a length-``n`` axis padded by ``before``/``after``."""
    positions = torch.arange(-before, n + after, device=device)
    if mode == "circular":
        return positions % n
    # Symmetric extension has period 2n: 0..n-1 then n-1..0. Taking the position modulo 2n makes
    # it valid even when the padding is wider than the image (several reflections).
    folded = positions % (2 * n)
    return torch.where(folded < n, folded, 2 * n - 1 - folded)


class SuperResolution(LinearOperator):
    """Downscaling ``y = S_f K x`` by an integer factor, as MATLAB ``imresize(x, 1/f)`` does in double.

    ``x``: ``(B, C, H, W)`` with ``H`` and ``W`` divisible by ``factor``; ``y``:
    ``(B, C, H / f, W / f)``. Each channel is filtered separately with the same separable kernel
    (see the module docstring), so RGB images follow the RIM paper's protocol channel by channel.
    Unlike MATLAB on ``uint8`` images, nothing is rounded: quantise ``y`` with
    ``operators.noise.quantize`` if the protocol needs 8-bit measurements.

    Args:
        factor: 2, 3 or 4 (the RIM paper's scales).
        kernel: ``"bicubic"`` (default, MATLAB's default), ``"bilinear"`` (MATLAB's triangle) or
            ``"box"`` (average over ``f x f`` blocks).
        padding: ``"symmetric"`` (default; MATLAB's mirror extension that repeats the edge pixel)
            or ``"circular"`` (periodic; makes ``A A^T`` shift-invariant).

    The 1D weights are a non-persistent buffer ``taps`` (derived from the arguments, so not in
    ``state_dict``), built in float64 and cast to the input's dtype on each call; ``.to(device)``
    moves them, and ``.float()`` / ``.half()`` round them for good.
    """

    taps: torch.Tensor

    def __init__(self, factor: int, kernel: str = "bicubic", padding: str = "symmetric") -> None:
        super().__init__()
        if isinstance(factor, bool) or factor not in (2, 3, 4):
            raise ValueError(f"factor must be 2, 3 or 4, got {factor!r}")
        if padding not in _PADDINGS:
            raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
        taps, offset = downscale_taps(factor, kernel)
        self.factor = factor
        self.kernel = kernel
        self.padding = padding
        # Kept in float64: a float32 copy could not be made exact again by a later .double().
        self.register_buffer("taps", taps, persistent=False)
        # The last output pixel's window ends len(taps) - offset - factor pixels past the image end.
        self._before = offset
        self._after = len(taps) - offset - factor

    def extra_repr(self) -> str:
        return f"factor={self.factor}, kernel={self.kernel!r}, padding={self.padding!r}"

    def _pad(self, t: torch.Tensor, dim: int) -> torch.Tensor:
        index = _padding_index(t.shape[dim], self._before, self._after, self.padding, t.device)
        return t.index_select(dim, index)

    def _unpad(self, t: torch.Tensor, dim: int, n: int) -> torch.Tensor:
        # Adjoint of the gather: every padded position sends its value back to its source pixel.
        index = _padding_index(n, self._before, self._after, self.padding, t.device)
        shape = list(t.shape)
        shape[dim] = n
        return t.new_zeros(shape).index_add_(dim, index, t)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Downscale ``x`` of shape ``(B, C, H, W)`` to ``(B, C, H / f, W / f)``."""
        check_tensor(x, "x", f"(B, C, H, W) with H and W divisible by factor {self.factor}", ndims=(4,),
                     owner=type(self).__name__)
        b, c, h, w = x.shape
        f = self.factor
        if h % f or w % f or h == 0 or w == 0:
            raise ValueError(f"{type(self).__name__}: x must have shape (B, C, H, W) with H and W divisible by "
                             f"factor {f}, got {tuple(x.shape)}")
        taps = self.taps.to(x.dtype)
        t = x.reshape(b * c, 1, h, w)
        t = F.conv2d(self._pad(t, 2), taps.view(1, 1, -1, 1), stride=(f, 1))
        t = F.conv2d(self._pad(t, 3), taps.view(1, 1, 1, -1), stride=(1, f))
        return t.reshape(b, c, h // f, w // f)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Adjoint of :meth:`A`: ``y`` of shape ``(B, C, h, w)`` to ``(B, C, f h, f w)``."""
        check_tensor(y, "y", f"(B, C, H / factor, W / factor), factor {self.factor}", ndims=(4,),
                     owner=type(self).__name__)
        b, c, h, w = y.shape
        f = self.factor
        taps = self.taps.to(y.dtype)
        t = y.reshape(b * c, 1, h, w)
        # The transposed strided correlation returns exactly the padded length, so no output_padding.
        t = self._unpad(F.conv_transpose2d(t, taps.view(1, 1, 1, -1), stride=(1, f)), 3, w * f)
        t = self._unpad(F.conv_transpose2d(t, taps.view(1, 1, -1, 1), stride=(f, 1)), 2, h * f)
        return t.reshape(b, c, h * f, w * f)


# ------------------------------------------------------------------------- the bicubic baseline

def upscale_matrix(n: int, factor: int) -> torch.Tensor:
    """``(factor n, n)`` float64 matrix of MATLAB ``imresize(., factor)`` (bicubic) along one axis.

    High-resolution pixel ``j`` sits at low-resolution coordinate ``u = (j + 0.5) / f - 0.5`` (the
    pixel-centre convention of :class:`SuperResolution`); it takes the 4 nearest low-resolution
    pixels with weights ``cubic(u - k)`` (Keys, ``a = -0.5``, normalised to sum 1), indices outside
    ``0..n-1`` mirrored with the edge pixel repeated, as MATLAB's ``contributions``.
    """
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1 or n < 1:
        raise ValueError(f"upscale_matrix needs a positive size and integer factor, got n={n!r}, factor={factor!r}")
    j = torch.arange(factor * n, dtype=torch.float64)
    u = (j + 0.5) / factor - 0.5
    k = torch.floor(u).unsqueeze(1) + torch.arange(-1, 3, dtype=torch.float64)  # (f n, 4)
    weights = _cubic(u.unsqueeze(1) - k)
    weights = weights / weights.sum(dim=1, keepdim=True)
    folded = k.long() % (2 * n)  # symmetric extension has period 2n: 0..n-1, n-1..0
    index = torch.where(folded < n, folded, 2 * n - 1 - folded)
    return torch.zeros(factor * n, n, dtype=torch.float64).scatter_add_(1, index, weights)


def bicubic_matlab(y: torch.Tensor, factor: int) -> torch.Tensor:
    """MATLAB ``imresize(y, factor)`` with its default bicubic kernel: the classical
    super-resolution baseline of the RIM paper's protocol (Huang et al. 2015).

    ``y``: ``(B, C, h, w)`` low-resolution images; returns ``(B, C, factor h, factor w)``. For
    ``SuperResolution(factor)`` (bicubic, symmetric) this equals ``factor**2 * A_adjoint(y)`` to
    rounding: along one axis ``A`` has weights ``cubic((j - f i - (f-1)/2) / f) / f``, so
    ``f A^T y`` at pixel ``j`` is ``sum_i cubic(u_j - i) y_i``, which is ``imresize(y, f)``.
    """
    check_tensor(y, "y", "(B, C, h, w)", ndims=(4,), owner="bicubic_matlab")
    rows = upscale_matrix(y.shape[-2], factor).to(device=y.device, dtype=y.dtype)
    cols = upscale_matrix(y.shape[-1], factor).to(device=y.device, dtype=y.dtype)
    return rows @ y @ cols.T
