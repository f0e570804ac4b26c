"""Single-coil Cartesian MRI: a centred orthonormal Fourier transform followed by a sampling mask."""
from __future__ import annotations

import numpy as np
import torch

from .base import LinearOperator, check_tensor, compute_dtype
from .fft import fftnc, ifftnc

__all__ = ["SingleCoilMRI"]

_LAYOUT = "(B, 2, H, W) or (B, 2, D, H, W)"


class SingleCoilMRI(LinearOperator):
    """Undersampled single-coil MRI ``y = M F x`` on 2-channel (real, imaginary) tensors.

    ``F`` is the centred orthonormal FFT (:func:`~learn2invert.operators.fft.fft2c` for images
    ``(B, 2, H, W)``, the 3-D :func:`~learn2invert.operators.fft.fft3c` for volumes
    ``(B, 2, D, H, W)``; by default the rank of the input picks which, see ``fft_dims``) and ``M``
    keeps the sampled k-space positions and zeroes the rest. ``y`` is the zero-filled k-space
    with the shape of ``x``. Since ``F`` is unitary and ``M`` a projection, ``A^T y = F^H M y``
    and ``A^T A x = F^H M F x``.

    Multi-slice 2-D acquisitions (each slice excited and encoded on its own, as in most clinical
    2-D protocols and the fastMRI volumes) sample every slice's 2-D k-space, not a 3-D one:
    ``fft_dims=2`` gives that model for volumes, ``y[:, :, d] = M_d F_2D x[:, :, d]``.

    Args:
        mask: sampling pattern, ``torch.bool`` or a 0/1 float/int tensor (or numpy array) that
            broadcasts to the k-space ``(B, 2, H, W)`` (``(B, 2, D, H, W)`` in 3-D) with size 1
            on the channel axis, so that real and imaginary parts share it: e.g. ``(W,)`` columns,
            ``(H, W)``, ``(1, W)``, ``(D, H, W)`` or one mask per sample ``(B, 1, H, W)``.
            It is stored as the bool buffer ``mask`` (moves with ``.to(device)``).
        fft_dims: number of trailing axes the FFT transforms. ``None`` (default, unchanged
            behaviour): 2 for images ``(B, 2, H, W)``, 3 for volumes ``(B, 2, D, H, W)``. ``2``:
            the 2-D FFT over ``(H, W)`` for images and, slice by slice, for volumes (a ``(H, W)``
            mask then samples every slice alike; ``(D, H, W)`` gives each slice its own).
            ``3``: the 3-D FFT; volumes only (an image input raises).
    """

    def __init__(self, mask, fft_dims: int | None = None) -> None:
        super().__init__()
        if fft_dims is not None and (isinstance(fft_dims, bool) or not isinstance(fft_dims, (int, np.integer))
                                     or fft_dims not in (2, 3)):
            raise ValueError(f"{type(self).__name__}: fft_dims must be None, 2 or 3, got {fft_dims!r}")
        self.fft_dims = None if fft_dims is None else int(fft_dims)
        self.register_buffer("mask", self._validate_mask(mask))

    def norm_squared(self) -> float:
        """``||A||^2``: 1 (a unitary FFT then a 0/1 projection), 0 for an empty mask."""
        return float(bool(self.mask.any()))

    @staticmethod
    def _validate_mask(mask) -> torch.Tensor:
        if isinstance(mask, np.ndarray):
            mask = torch.from_numpy(mask)
        if not isinstance(mask, torch.Tensor):
            raise ValueError(f"mask must be a tensor broadcastable to k-space {_LAYOUT}, got {type(mask).__name__}")
        if mask.is_complex():
            raise ValueError(f"mask must be real (bool or 0/1) and broadcastable to k-space {_LAYOUT}, got dtype {mask.dtype}")
        if mask.dim() == 0:
            raise ValueError(f"mask must broadcast to k-space {_LAYOUT} with at least one axis, e.g. (W,) or (H, W); got a 0-dim tensor")
        if mask.dtype == torch.bool:
            return mask.clone()
        if mask.is_floating_point() and torch.isnan(mask).any():
            raise ValueError("mask contains NaN; it must hold only 0 and 1 (or be torch.bool)")
        # A weighted mask would make A_adjoint_A differ from A_adjoint(A(.)) and break the
        # +0 masking below, so anything but 0/1 is refused rather than silently thresholded.
        if not torch.all((mask == 0) | (mask == 1)):
            bad = mask[(mask != 0) & (mask != 1)].flatten()[:3].tolist()
            raise ValueError(f"mask must hold only 0 and 1 (or be torch.bool), found values such as {bad}")
        return mask != 0

    def _check(self, t: torch.Tensor, name: str) -> torch.Tensor:
        """Validate ``t`` and return the mask ready to broadcast against it."""
        if self.fft_dims == 3:  # a 3-D FFT needs a depth axis
            check_tensor(t, name, "(B, 2, D, H, W) (fft_dims=3)", ndims=(5,), channels=2, owner=type(self).__name__)
        else:
            check_tensor(t, name, _LAYOUT, ndims=(4, 5), channels=2, owner=type(self).__name__)
        mask = self.mask
        expected = ("(B, 2, H, W)" if t.dim() == 4 else "(B, 2, D, H, W)") + f" = {tuple(t.shape)}"
        hint = (
            f"{type(self).__name__}: {name} of shape {tuple(t.shape)} does not fit the sampling mask: mask of "
            f"shape {tuple(mask.shape)} must broadcast to the k-space {expected} with size 1 on the channel axis, "
            "e.g. (W,), (H, W), (1, 1, H, W)" + (" or (D, H, W)" if t.dim() == 5 else "")
        )
        if mask.dim() > t.dim():
            raise ValueError(hint)
        try:
            broadcast = torch.broadcast_shapes(mask.shape, t.shape)
        except RuntimeError:
            raise ValueError(hint) from None
        if broadcast != t.shape:
            raise ValueError(hint)
        channel_axis = t.dim() - 1  # counted from the right: mask.shape[-channel_axis] is dim 1
        if mask.dim() >= channel_axis and mask.shape[-channel_axis] != 1:
            raise ValueError(hint)
        return mask

    def _fft_dims(self, t: torch.Tensor) -> int:
        """Axes to transform: ``fft_dims`` if set, else the spatial rank of ``t``."""
        return t.dim() - 2 if self.fft_dims is None else self.fft_dims

    @staticmethod
    def _mask_kspace(mask: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        # torch.where writes a true +0 at unsampled positions; multiplying by a 0/1 mask would
        # leave -0 wherever k was negative, which leaks into sign-sensitive code downstream.
        return torch.where(mask, k, k.new_zeros(()))

    # An empty batch returns at once (the FFT backends reject it). float16 / bfloat16 input is
    # transformed in float32 and the result stays float32, as with fftnc (no half FFT on CPU,
    # none for bfloat16 at all; under autocast the data term keeps float32 precision).

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Image ``(B, 2, [D,] H, W)`` -> masked centred k-space of the same shape."""
        mask = self._check(x, "image x")
        if x.shape[0] == 0:
            return x.to(compute_dtype(x.dtype), copy=True)
        k = fftnc(x.to(compute_dtype(x.dtype)), self._fft_dims(x))
        return self._mask_kspace(mask, k)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """k-space ``(B, 2, [D,] H, W)`` -> zero-filled image ``F^H M y`` of the same shape."""
        mask = self._check(y, "k-space y")
        if y.shape[0] == 0:
            return y.to(compute_dtype(y.dtype), copy=True)
        work = y.to(compute_dtype(y.dtype))
        return ifftnc(self._mask_kspace(mask, work), self._fft_dims(y))

    def A_adjoint_A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """``F^H M F x``: one mask pass instead of two (``M`` is a projection, ``M^T M = M``)."""
        mask = self._check(x, "image x")
        if x.shape[0] == 0:
            return x.to(compute_dtype(x.dtype), copy=True)
        work = x.to(compute_dtype(x.dtype))
        dims = self._fft_dims(x)
        return ifftnc(self._mask_kspace(mask, fftnc(work, dims)), dims)

    def extra_repr(self) -> str:
        sampled = float(self.mask.float().mean()) if self.mask.numel() else 0.0
        fft = "" if self.fft_dims is None else f", fft_dims={self.fft_dims}"
        return f"mask_shape={tuple(self.mask.shape)}, sampled_fraction={sampled:.3f}{fft}"
