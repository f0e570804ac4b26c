"""Multi-coil (parallel imaging) Cartesian MRI: the SENSE forward model, coil combination,
coil-sensitivity estimation from the calibration region, and analytic coil maps for simulation.

Layout. Every complex tensor of the library is a real tensor whose dim 1 holds (real, imaginary)
(see :mod:`~learn2invert.operators.fft`); multi-coil data keep that and put the coil axis right
after it, so that :func:`~learn2invert.operators.fft.to_complex`, ``complex_abs`` and ``fft2c``
apply to them unchanged (``fft2c`` of a ``(B, 2, C, H, W)`` tensor transforms each coil over
``(H, W)``)::

    image x                 (B, 2, H, W)           volume: (B, 2, D, H, W)
    sensitivities S         (B or 1, 2, C, H, W)           (B or 1, 2, C, D, H, W)
    coil images, k-space y  (B, 2, C, H, W)                (B, 2, C, D, H, W)

``C`` is the number of receive coils. fastMRI stores multi-coil k-space as complex
``(slices, C, H, W)``: ``from_complex(torch.from_numpy(kspace))`` gives this layout with the
slices as batch (for torch tensors with a trailing ``(real, imag)`` axis, ``(B, C, H, W, 2)``,
use ``.permute(0, 4, 1, 2, 3)``).

The SENSE model: coil ``c`` sees the image weighted by its sensitivity, ``S_c x``, and measures its
Fourier transform on the sampled positions, ``y_c = M F (S_c x)``. The adjoint combines the coils,
``A^T y = sum_c conj(S_c) F^H M y_c``. Sensitivities are dimensionless; with maps normalised so
that ``sum_c |S_c|^2 = 1`` (what :func:`simulated_coil_maps` and :func:`estimate_sensitivities`
return) fully sampled data give back the image exactly: ``A^T A x = x``.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from .base import LinearOperator, check_tensor, compute_dtype
from .fft import from_complex
from .mri import SingleCoilMRI
from .phase import smooth_phase

__all__ = [
    "MultiCoilMRI",
    "rss",
    "sense_combine",
    "sense_expand",
    "calibration_region",
    "centred_acs_columns",
    "estimate_sensitivities",
    "simulated_coil_maps",
]

_SENS_LAYOUT = "(B or 1, 2, C, H, W) or (B or 1, 2, C, D, H, W)"
_COIL_LAYOUT = "(B, 2, C, H, W) or (B, 2, C, D, H, W)"


# ------------------------------------------------------------------------------------ helpers


def _complex(x: torch.Tensor) -> torch.Tensor:
    """Real ``(B, 2, ...)`` -> complex ``(B, ...)``, without re-checking (callers checked)."""
    return torch.complex(x[:, 0], x[:, 1])


def _centred_fft(z: torch.Tensor, ndim: int, inverse: bool) -> torch.Tensor:
    """Centred orthonormal (inverse) FFT of a *complex* tensor over its last ``ndim`` axes.

    The same transform as :func:`~learn2invert.operators.fft.fftnc`, on complex data: the coil
    axis makes multi-coil volumes 6-D, more than ``fftnc``'s layout checks admit, and staying
    complex between the coil weighting and the FFT saves two real/complex conversions per call.
    """
    dims = tuple(range(-ndim, 0))
    z = torch.fft.ifftshift(z, dim=dims)
    z = (torch.fft.ifftn if inverse else torch.fft.fftn)(z, dim=dims, norm="ortho")
    return torch.fft.fftshift(z, dim=dims)


def _masked(mask: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    # torch.where writes a true +0 at unsampled positions (see SingleCoilMRI._mask_kspace).
    return torch.where(mask, k, k.new_zeros(()))


def _check_maps(s: torch.Tensor, owner: str | None) -> None:
    check_tensor(s, "sensitivities", _SENS_LAYOUT, ndims=(5, 6), channels=2, owner=owner)


def _check_coil_tensor(t: torch.Tensor, name: str, maps: torch.Tensor, owner: str) -> None:
    """``t`` must be ``(B, 2, C, *spatial)`` with the coil count and spatial size of ``maps``."""
    spatial = tuple(maps.shape[3:])
    coils = maps.shape[2]
    expected = f"(B, 2, C, {', '.join('DHW'[-len(spatial):])}) = (B, 2, {coils}, {', '.join(map(str, spatial))})"
    check_tensor(t, name, _COIL_LAYOUT, ndims=(5, 6), channels=2, owner=owner)
    if t.dim() != maps.dim() or t.shape[2] != coils or tuple(t.shape[3:]) != spatial:
        raise ValueError(
            f"{owner}: {name} of shape {tuple(t.shape)} does not match the coil sensitivities of shape "
            f"{tuple(maps.shape)}: expected {expected}"
        )
    _check_batch(t, name, maps, owner)


def _check_image(x: torch.Tensor, name: str, maps: torch.Tensor, owner: str) -> None:
    """``x`` must be ``(B, 2, *spatial)`` with the spatial size of ``maps``."""
    spatial = tuple(maps.shape[3:])
    expected = f"(B, 2, {', '.join('DHW'[-len(spatial):])}) = (B, 2, {', '.join(map(str, spatial))})"
    layout = "(B, 2, H, W)" if len(spatial) == 2 else "(B, 2, D, H, W)"
    check_tensor(x, name, layout, ndims=(4, 5), channels=2, owner=owner)
    if tuple(x.shape[2:]) != spatial:
        raise ValueError(
            f"{owner}: {name} of shape {tuple(x.shape)} does not match the coil sensitivities of shape "
            f"{tuple(maps.shape)}: expected {expected}"
        )
    _check_batch(x, name, maps, owner)


def _check_batch(t: torch.Tensor, name: str, maps: torch.Tensor, owner: str) -> None:
    # One set of maps for the whole batch (maps batch 1) or one per sample; an empty batch is
    # always valid (the library's policy), whatever the maps hold.
    if maps.shape[0] not in (1, t.shape[0]) and t.shape[0] != 0:
        raise ValueError(
            f"{owner}: {name} has batch size {t.shape[0]} but the coil sensitivities of shape "
            f"{tuple(maps.shape)} hold {maps.shape[0]} sets of maps; use 1 set (shared) or one per sample"
        )


def _maps_complex(maps: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Real maps ``(Bs, 2, C, ...)`` -> complex ``(Bs, C, ...)`` in the compute ``dtype``."""
    return _complex(maps.to(dtype))


# ------------------------------------------------------------------------------- the operator


class MultiCoilMRI(LinearOperator):
    """Undersampled multi-coil (SENSE) MRI ``y_c = M F (S_c x)``, ``c = 1..C``.

    Shapes (see the module docstring for the layout)::

        A:          x (B, 2, H, W)     -> y (B, 2, C, H, W)     masked centred k-space per coil
        A_adjoint:  y (B, 2, C, H, W)  -> x (B, 2, H, W)        sum_c conj(S_c) F^H M y_c
        A_adjoint_A x (B, 2, H, W)     -> (B, 2, H, W)

    and the same with a depth axis ``D`` after ``C`` for volumes ``(B, 2, D, H, W)``.

    ``F`` is the centred orthonormal FFT over the last ``fft_dims`` axes (fastMRI's ``fft2c`` for
    images; for volumes the 3-D FFT by default, or ``fft_dims=2`` for a per-slice 2-D FFT as in
    multi-slice 2-D acquisitions). ``M`` keeps the sampled positions; all coils share it, since
    they are read out at the same time. Unsampled k-space entries are exactly +0.

    Args:
        mask: sampling pattern as for :class:`~learn2invert.operators.mri.SingleCoilMRI`: bool or
            0/1 tensor (or numpy array) that broadcasts to the *single-coil* k-space
            ``(B, 2, H, W)`` (``(B, 2, D, H, W)``) with size 1 on the channel axis, e.g. ``(W,)``,
            ``(H, W)`` or per sample ``(B, 1, H, W)``; the same mask serves both operators.
            Stored as the bool buffer ``mask``.
        sensitivities: coil maps, real tensor ``(B or 1, 2, C, H, W)`` (or
            ``(B or 1, 2, C, D, H, W)``), channels (real, imaginary): one set shared by the batch
            or one per sample. Stored as the buffer ``sensitivities`` (moves and changes dtype with
            ``.to()`` / ``.double()``). Not normalised here: pass maps with
            ``sum_c |S_c|^2 = 1`` on the object for ``A^T A`` to be the identity at full sampling.
        fft_dims: ``None`` (default: 2-D FFT for images, 3-D for volumes), ``2`` (per-slice 2-D
            FFT over ``(H, W)`` also for volumes) or ``3`` (volumes only).

    Computes in the input's dtype (maps converted to it per call); float16 / bfloat16 input is
    computed in float32 and returned as float32 (no half-precision FFT on the CPU).
    """

    def __init__(self, mask, sensitivities: torch.Tensor, fft_dims: int | None = None) -> None:
        super().__init__()
        owner = type(self).__name__
        _check_maps(sensitivities, owner)
        spatial = tuple(sensitivities.shape[3:])
        if fft_dims is not None and (isinstance(fft_dims, bool) or not isinstance(fft_dims, (int, np.integer))
                                     or fft_dims not in (2, 3)):
            raise ValueError(f"{owner}: fft_dims must be None, 2 or 3, got {fft_dims!r}")
        if fft_dims == 3 and len(spatial) != 3:
            raise ValueError(
                f"{owner}: fft_dims=3 needs volume sensitivities (B or 1, 2, C, D, H, W), got {tuple(sensitivities.shape)}"
            )
        self.fft_dims = len(spatial) if fft_dims is None else int(fft_dims)
        self.register_buffer("mask", SingleCoilMRI._validate_mask(mask))
        self.register_buffer("sensitivities", sensitivities.detach().clone())
        # The mask must fit the maps' spatial grid now; its batch size is checked per call.
        self._coil_mask(self.mask.shape[0] if self.mask.dim() == len(spatial) + 2 else 1, "sensitivities",
                        tuple(sensitivities.shape))

    @property
    def n_coils(self) -> int:
        return int(self.sensitivities.shape[2])

    def _coil_mask(self, batch: int, name: str, shape: tuple[int, ...]) -> torch.Tensor:
        """The mask as ``(Bm, 1, *spatial)`` (dim 1 broadcasts over the coils of complex k-space
        ``(B, C, *spatial)``); raises when it does not fit the single-coil k-space of ``batch``."""
        spatial = tuple(self.sensitivities.shape[3:])
        kspace = (batch, 2, *spatial)
        mask = self.mask
        hint = (
            f"{type(self).__name__}: {name} of shape {shape} does not fit the sampling mask: mask of shape "
            f"{tuple(mask.shape)} must broadcast to the single-coil k-space (B, 2, {', '.join('DHW'[-len(spatial):])}) "
            f"= {kspace} with size 1 on the channel axis (all coils share it), e.g. (W,), "
            f"({', '.join('DHW'[-len(spatial):])}), (B, 1, {', '.join('DHW'[-len(spatial):])})"
        )
        if mask.dim() > len(kspace):
            raise ValueError(hint)
        try:
            broadcast = torch.broadcast_shapes(mask.shape, kspace)
        except RuntimeError:
            raise ValueError(hint) from None
        channel_axis = len(kspace) - 1  # counted from the right
        if broadcast != kspace or (mask.dim() >= channel_axis and mask.shape[-channel_axis] != 1):
            raise ValueError(hint)
        return mask.reshape((1,) * (len(kspace) - mask.dim()) + tuple(mask.shape))

    def _prepare_image(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.dtype]:
        _check_image(x, "image x", self.sensitivities, type(self).__name__)
        return self._coil_mask(x.shape[0], "image x", tuple(x.shape)), compute_dtype(x.dtype)

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Image ``(B, 2, [D,] H, W)`` -> masked centred k-space per coil ``(B, 2, C, [D,] H, W)``."""
        mask, dtype = self._prepare_image(x)
        if x.shape[0] == 0:
            return x.new_zeros((0, 2, *self.sensitivities.shape[2:]), dtype=dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            coil_images = _maps_complex(self.sensitivities, dtype) * _complex(x.to(dtype)).unsqueeze(1)
            return from_complex(_masked(mask, _centred_fft(coil_images, self.fft_dims, inverse=False)))

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """k-space per coil ``(B, 2, C, [D,] H, W)`` -> coil-combined image ``(B, 2, [D,] H, W)``."""
        owner = type(self).__name__
        _check_coil_tensor(y, "k-space y", self.sensitivities, owner)
        mask = self._coil_mask(y.shape[0], "k-space y", tuple(y.shape))
        dtype = compute_dtype(y.dtype)
        if y.shape[0] == 0:
            return y.new_zeros((0, 2, *self.sensitivities.shape[3:]), dtype=dtype)
        with torch.autocast(device_type=y.device.type, enabled=False):
            coil_images = _centred_fft(_masked(mask, _complex(y.to(dtype))), self.fft_dims, inverse=True)
            return from_complex((_maps_complex(self.sensitivities, dtype).conj() * coil_images).sum(1))

    def A_adjoint_A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """``sum_c conj(S_c) F^H M F S_c x``: one mask pass and no real/complex round trip in between."""
        mask, dtype = self._prepare_image(x)
        if x.shape[0] == 0:
            return x.to(dtype, copy=True)
        with torch.autocast(device_type=x.device.type, enabled=False):
            maps = _maps_complex(self.sensitivities, dtype)
            k = _masked(mask, _centred_fft(maps * _complex(x.to(dtype)).unsqueeze(1), self.fft_dims, inverse=False))
            return from_complex((maps.conj() * _centred_fft(k, self.fft_dims, inverse=True)).sum(1))

    def extra_repr(self) -> str:
        sampled = float(self.mask.float().mean()) if self.mask.numel() else 0.0
        return (f"coils={self.n_coils}, sensitivities_shape={tuple(self.sensitivities.shape)}, "
                f"mask_shape={tuple(self.mask.shape)}, sampled_fraction={sampled:.3f}, fft_dims={self.fft_dims}")


# ------------------------------------------------------------------------- coil combination


def rss(coil_images: torch.Tensor) -> torch.Tensor:
    """Root-sum-of-squares coil combination: ``(B, 2, C, [D,] H, W)`` -> magnitude ``(B, 1, [D,] H, W)``.

    ``sqrt(sum_c |z_c|^2)``, the standard magnitude combination when the maps are unknown (equal
    to ``|x|`` for maps normalised to ``sum_c |S_c|^2 = 1``). Keeps the input dtype; its gradient
    is finite (0) at pixels where every coil is 0, unlike ``sqrt`` of the sum.
    """
    check_tensor(coil_images, "coil images", _COIL_LAYOUT, ndims=(5, 6), channels=2, owner="rss")
    return torch.linalg.vector_norm(coil_images, dim=(1, 2)).unsqueeze(1)


def sense_combine(coil_images: torch.Tensor, sensitivities: torch.Tensor) -> torch.Tensor:
    """SENSE (matched-filter) coil combination ``sum_c conj(S_c) z_c``: ``(B, 2, C, [D,] H, W)`` and
    maps ``(B or 1, 2, C, [D,] H, W)`` -> complex image ``(B, 2, [D,] H, W)``.

    The adjoint of :func:`sense_expand`; with maps normalised to ``sum_c |S_c|^2 = 1`` it returns
    ``x`` exactly for coil images ``S_c x`` (and ``x`` times the maps' phase ambiguity for
    estimated maps). Computes in the dtype of ``coil_images`` (float32 for half precision).
    """
    _check_maps(sensitivities, "sense_combine")
    _check_coil_tensor(coil_images, "coil images", sensitivities, "sense_combine")
    dtype = compute_dtype(coil_images.dtype)
    if coil_images.shape[0] == 0:
        return coil_images.new_zeros((0, 2, *sensitivities.shape[3:]), dtype=dtype)
    combined = (_maps_complex(sensitivities, dtype).conj() * _complex(coil_images.to(dtype))).sum(1)
    return from_complex(combined)


def sense_expand(image: torch.Tensor, sensitivities: torch.Tensor) -> torch.Tensor:
    """Coil images ``S_c x``: image ``(B, 2, [D,] H, W)`` and maps ``(B or 1, 2, C, [D,] H, W)`` ->
    ``(B, 2, C, [D,] H, W)``. The image-domain half of :class:`MultiCoilMRI` (before the FFT)."""
    _check_maps(sensitivities, "sense_expand")
    _check_image(image, "image", sensitivities, "sense_expand")
    dtype = compute_dtype(image.dtype)
    if image.shape[0] == 0:
        return image.new_zeros((0, 2, *sensitivities.shape[2:]), dtype=dtype)
    return from_complex(_maps_complex(sensitivities, dtype) * _complex(image.to(dtype)).unsqueeze(1))


# ----------------------------------------------------------------- sensitivity estimation


def _symmetric_run(flags: torch.Tensor, centre: int) -> int:
    """Largest ``h`` such that ``flags[centre - h : centre + h + 1]`` are all True (-1 if the centre is not)."""
    if not bool(flags[centre]):
        return -1
    h = 0
    while centre - h - 1 >= 0 and centre + h + 1 < flags.numel() and bool(flags[centre - h - 1]) and bool(flags[centre + h + 1]):
        h += 1
    return h


def calibration_region(mask: torch.Tensor, shape: Sequence[int]) -> tuple[slice, slice]:
    """The fully sampled calibration (ACS) block of a mask, as ``(rows, cols)`` slices of ``(H, W)``.

    The block is symmetric about the k-space centre ``(H // 2, W // 2)`` (an odd number of rows
    and of columns), so that the low-resolution images made from it have no phase modulation of
    their own. The largest of three candidates is returned: full-height columns (Cartesian
    column masks such as :func:`~learn2invert.operators.masks.random_mask`), full-width rows, and
    a centred square (2-D variable-density masks). A per-sample mask uses the block sampled in
    *every* sample.

    Args:
        mask: bool or 0/1 tensor broadcastable to ``shape`` (e.g. ``(W,)``, ``(H, W)``, ``(B, 1, H, W)``).
        shape: k-space shape ``(..., H, W)``.

    Raises:
        ValueError: if the k-space centre is not sampled (no calibration data).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) < 2 or min(shape) < 1:
        raise ValueError(f"calibration_region: shape must be (..., H, W) with positive sizes, got {shape}")
    mask = SingleCoilMRI._validate_mask(mask)
    try:
        full = mask.expand(torch.broadcast_shapes(mask.shape, shape))
    except RuntimeError:
        raise ValueError(
            f"calibration_region: mask of shape {tuple(mask.shape)} does not broadcast to the k-space {shape}"
        ) from None
    sampled = full.reshape(-1, *shape[-2:]).all(0)  # (H, W): sampled in every sample / slice / coil
    height, width = shape[-2:]
    hc, wc = height // 2, width // 2
    candidates = []
    h = _symmetric_run(sampled.all(0), wc)  # fully sampled columns
    if h >= 0:
        candidates.append((slice(0, height), slice(wc - h, wc + h + 1)))
    h = _symmetric_run(sampled.all(1), hc)  # fully sampled rows
    if h >= 0:
        candidates.append((slice(hc - h, hc + h + 1), slice(0, width)))
    r = -1
    while hc - r - 1 >= 0 and wc - r - 1 >= 0 and hc + r + 1 < height and wc + r + 1 < width and bool(
        sampled[hc - r - 1 : hc + r + 2, wc - r - 1 : wc + r + 2].all()
    ):
        r += 1
    if r >= 0:
        candidates.append((slice(hc - r, hc + r + 1), slice(wc - r, wc + r + 1)))
    if not candidates:
        raise ValueError(
            f"calibration_region: the k-space centre {(hc, wc)} of the mask is not sampled, so there is no "
            "calibration region; use a mask with a fully sampled centre (center_fraction > 0) or pass acs="
        )
    return max(candidates, key=lambda rc: (rc[0].stop - rc[0].start) * (rc[1].stop - rc[1].start))


# The fraction of centre k-space columns coil maps are estimated from by default: fastMRI's
# fully sampled centre at 4x.
ACS_FRACTION = 0.08


def centred_acs_columns(width: int, fraction: float) -> int:
    """The odd number ``n`` of centred k-space columns, about ``fraction * width``, whose block
    ``[width // 2 - n // 2, width // 2 + n // 2]`` is symmetric about the k-space centre.

    It is the ``acs=n`` of :func:`estimate_sensitivities`, rounded down to odd so that the
    low-resolution images carry no phase ramp of their own (as :func:`calibration_region` picks
    blocks). A column mask with a fully sampled centre of ``round(fraction * width)`` columns
    (:func:`~learn2invert.operators.masks.random_mask`) samples this whole block.
    """
    if not 0 < fraction <= 1 or width < 1:
        raise ValueError(f"centred_acs_columns: need width >= 1 and fraction in (0, 1], got {width}, {fraction}")
    n = min(width, max(1, int(round(fraction * width))))
    return n if n % 2 else n - 1


def _taper(n: int, full: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A Tukey taper (cosine over the outer quarter at each end, flat in between) of length ``n``
    that never reaches 0 (its endpoints are excluded), or ones if the block spans the whole axis
    (nothing was truncated there, so nothing rings).

    Why Tukey: a full Hann window over the block halves the resolution of the low-resolution
    images, and the estimate suffers more from that blur (at tissue edges) than from ringing;
    on the brain test slice (8 coils, 10 ACS columns of 128) the mean map error inside the
    object is 0.023 with this taper, 0.033 untapered and 0.053 with a Hann window.
    """
    if n >= full:
        return torch.ones(n, dtype=dtype, device=device)
    alpha = 0.5
    k = torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)  # in (0, 1)
    edge = torch.minimum(k, 1 - k)
    taper = torch.where(edge < alpha / 2, 0.5 * (1 - torch.cos(2 * math.pi * edge / alpha)), torch.ones_like(k))
    return taper.to(dtype=dtype, device=device)


def estimate_sensitivities(
    kspace: torch.Tensor,
    mask=None,
    *,
    acs: int | Sequence[int] | None = None,
    threshold: float = 0.05,
    window: bool = True,
) -> torch.Tensor:
    """Low-resolution coil-sensitivity estimate from the fully sampled calibration (ACS) region.

    The k-space outside the ACS block is dropped (the block tapered by a Tukey window along each
    truncated axis, to damp Gibbs ringing), the block is transformed to low-resolution coil images
    ``z_c``, and ``S_c = z_c / sqrt(sum_c |z_c|^2)`` wherever that root-sum-of-squares exceeds
    ``threshold`` times its per-sample maximum; elsewhere (background, where the ratio is noise)
    the maps are 0. Inside the support ``sum_c |S_c|^2 = 1`` exactly.

    Phase ambiguity: ``z_c ~ S_c x_low``, so the estimate is ``S_c exp(i angle(x_low))``: it
    carries the object's low-resolution phase. Any SENSE reconstruction with these maps returns
    ``x exp(-i angle(x_low))``, the same magnitude. This is the usual "low-resolution" (or
    "ACS-ratio") method; ESPIRiT does better near edges and with aliasing-free support masks.

    Args:
        kspace: centred multi-coil k-space ``(B, 2, C, H, W)``, zero-filled where not sampled
            (e.g. :meth:`MultiCoilMRI.A`). 2-D only: fold the slices of a per-slice volume into B.
        mask: the sampling mask (see :func:`calibration_region`); ``None`` infers it from the
            nonzero entries of ``kspace``.
        acs: instead of a mask, the ACS size: an int number of centre columns (full height) or
            ``(rows, cols)``, the block ``[H // 2 - rows // 2, H // 2 - rows // 2 + rows)`` and
            likewise for columns (symmetric about the centre for odd sizes, as
            :func:`calibration_region` picks them).
        threshold: relative root-sum-of-squares below which the maps are set to 0.
        window: taper the ACS block (``False``: hard truncation).

    Returns:
        maps ``(B, 2, C, H, W)`` in the compute dtype of ``kspace``.
    """
    owner = "estimate_sensitivities"
    check_tensor(kspace, "k-space", "(B, 2, C, H, W)", ndims=(5,), channels=2, owner=owner)
    if not 0 <= threshold < 1:
        raise ValueError(f"{owner}: threshold must be in [0, 1), got {threshold}")
    height, width = kspace.shape[-2:]
    if acs is not None:
        if mask is not None:
            raise ValueError(f"{owner}: pass either mask or acs, not both")
        size = (height, acs) if isinstance(acs, (int, np.integer)) else tuple(acs)
        if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and 1 <= s for s in size) \
                or size[0] > height or size[1] > width:
            raise ValueError(f"{owner}: acs must be an int <= W={width} or (rows, cols) within {(height, width)}, got {acs!r}")
        rows = slice(height // 2 - size[0] // 2, height // 2 - size[0] // 2 + size[0])
        cols = slice(width // 2 - size[1] // 2, width // 2 - size[1] // 2 + size[1])
    else:
        if mask is None:
            if kspace.shape[0] == 0:
                raise ValueError(f"{owner}: cannot infer the sampling mask of an empty batch; pass mask or acs")
            mask = (kspace != 0).any(dim=2).any(dim=1, keepdim=True)  # (B, 1, H, W): any coil nonzero
        rows, cols = calibration_region(mask, (kspace.shape[0], 1, height, width))
    dtype = compute_dtype(kspace.dtype)
    if kspace.shape[0] == 0:
        return kspace.to(dtype, copy=True)
    with torch.autocast(device_type=kspace.device.type, enabled=False):
        k = _complex(kspace.to(dtype))
        block = torch.zeros_like(k)
        taper = 1.0
        if window:
            taper = (_taper(rows.stop - rows.start, height, dtype, k.device)[:, None]
                     * _taper(cols.stop - cols.start, width, dtype, k.device)[None, :])
        block[..., rows, cols] = k[..., rows, cols] * taper
        low = _centred_fft(block, 2, inverse=True)  # (B, C, H, W)
        norm = torch.linalg.vector_norm(low, dim=1, keepdim=True)  # (B, 1, H, W)
        peak = norm.amax(dim=(-2, -1), keepdim=True)
        support = norm > threshold * peak
        maps = torch.where(support, low / torch.where(support, norm, torch.ones_like(norm)), low.new_zeros(()))
    return from_complex(maps)


# ------------------------------------------------------------------- simulated coil maps


def simulated_coil_maps(
    n_coils: int,
    shape: Sequence[int],
    *,
    ring_radius: float = 1.5,
    coil_radius: float = 0.6,
    rotation: float = 0.0,
    phase_amplitude: float = 0.0,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Analytic receive-coil sensitivities of ``n_coils`` loops on a ring around the field of view.

    Geometry, in coordinates where the field of view spans ``[-1, 1]`` on each axis (so the ring is
    an ellipse in pixels when ``H != W``, hugging an elongated field of view such as the axial
    brain): coil ``c`` sits at angle ``rotation + 2 pi c / C`` on the ring of radius
    ``ring_radius`` (> sqrt 2: outside the field of view, corners included), with its axis
    pointing at the centre. Its
    magnitude is the on-axis Biot-Savart field of a circular loop of radius ``coil_radius`` at the
    distance ``d`` of each pixel, ``a^2 / (a^2 + d^2)^(3/2)``: smooth, largest near the coil. Its
    phase is the direction from the coil to the pixel relative to the coil axis, plus
    ``2 pi c / C`` (as in birdcage coil models; smooth inside the field of view since the coil is
    outside it). The maps are then divided by their root-sum-of-squares, so that
    ``sum_c |S_c|^2 = 1`` at every pixel, the object included.

    Args:
        n_coils: number of coils ``C`` (>= 1; 8-15 in typical head arrays).
        shape: ``(H, W)``.
        ring_radius: ring radius in half fields of view; must exceed sqrt(2) so that the ring
            clears the corners of the field of view (a coil inside it would put a phase
            singularity and a sharp magnitude peak into the image).
        coil_radius: loop radius in half fields of view (larger: flatter, less distinct maps).
        rotation: angle of coil 0 in radians (0: on the +W axis, counter-clockwise from there).
        phase_amplitude: with a ``generator``: each coil's phase gets an extra random smooth
            (:func:`~learn2invert.operators.phase.smooth_phase`, order 2) field of amplitude up to this, in radians.
        generator: ``None`` gives deterministic maps; a CPU generator also randomises the
            ring's rotation (uniform over one coil spacing, added to ``rotation``) and, if
            ``phase_amplitude > 0``, the extra phase.
        dtype: float32 or float64 result.

    Returns:
        ``(2, C, H, W)`` real tensor, channels (real, imaginary); add a batch axis (``[None]``)
        for :class:`MultiCoilMRI`.
    """
    owner = "simulated_coil_maps"
    if isinstance(n_coils, bool) or not isinstance(n_coils, (int, np.integer)) or n_coils < 1:
        raise ValueError(f"{owner}: n_coils must be a positive int, got {n_coils!r}")
    shape = tuple(shape) if isinstance(shape, (Sequence, torch.Size)) else shape
    if not isinstance(shape, tuple) or len(shape) != 2 or not all(
        isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s >= 1 for s in shape
    ):
        raise ValueError(f"{owner}: shape must be (H, W) with positive ints, got {shape!r}")
    if not (ring_radius > math.sqrt(2) and coil_radius > 0):
        raise ValueError(f"{owner}: need ring_radius > sqrt(2) (coils outside the field of view, corners included) "
                         f"and coil_radius > 0, got {ring_radius}, {coil_radius}")
    if phase_amplitude < 0:
        raise ValueError(f"{owner}: phase_amplitude must be >= 0, got {phase_amplitude}")
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{owner}: dtype must be torch.float32 or torch.float64, got {dtype}")
    height, width = (int(s) for s in shape)
    # Pixel centres in [-1, 1], the k-space centre convention (index n // 2 is 0).
    v = (torch.arange(height, dtype=torch.float64) - height // 2) / (height / 2)
    u = (torch.arange(width, dtype=torch.float64) - width // 2) / (width / 2)
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    if generator is not None:
        rotation = rotation + float(torch.rand((), generator=generator, dtype=torch.float64)) * 2 * math.pi / n_coils
    maps = []
    for c in range(n_coils):
        angle = rotation + 2 * math.pi * c / n_coils
        # Row index grows downwards; v is "up" = -row so the ring runs counter-clockwise on screen.
        cu, cv = ring_radius * math.cos(angle), -ring_radius * math.sin(angle)
        du, dv = uu - cu, vv - cv
        d2 = du * du + dv * dv
        magnitude = coil_radius**2 / (coil_radius**2 + d2) ** 1.5
        # Direction from the coil to the pixel, measured from the coil's axis (towards the centre).
        phase = torch.atan2(dv, du) - math.atan2(-cv, -cu) + 2 * math.pi * c / n_coils
        if generator is not None and phase_amplitude > 0:
            phase = phase + smooth_phase((height, width), generator, order=2, max_amplitude=phase_amplitude,
                                         dtype=torch.float64)
        maps.append(torch.polar(magnitude, phase))
    s = torch.stack(maps)  # (C, H, W) complex128
    s = s / torch.linalg.vector_norm(s, dim=0, keepdim=True)
    return torch.stack((s.real, s.imag)).to(dtype)
