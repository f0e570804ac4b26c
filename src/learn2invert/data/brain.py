"""The MNI152 T1 brain template as an embedded MRI data set, with random smooth phase.

The template (ICBM 2009a nonlinear symmetric, 1 mm isotropic, skull-stripped, 197 x 233 x 189
voxels in RAS+ order) ships with nilearn, so the library has realistic brain anatomy to train and
test on without downloading anything. Real MR images are complex: their phase varies smoothly
(B0 inhomogeneity, coil phase), so each item gets a random low-order polynomial phase and comes
out as ``(2, H, W)`` (real, imaginary) with ``|x|`` equal to the template's magnitude.

Splits. There is a single brain, so the splits are disjoint *slab* ranges along the slicing axis,
not different subjects (the anatomy of train and test differs by position, not by person).
Slices with less than ``min_foreground`` (5%) of their pixels above 10% of the peak are dropped
first; the remaining range ``[lo, hi]`` is cut at fixed fractions (:data:`SPLIT_LAYOUT`)::

    inferior/left   0%  -- train --  40%  -- val --  60%  -- test --  80%  -- train --  100%

and :data:`SPLIT_GUARD` (4) slices are discarded at the start of every piece after the first,
because neighbouring 1 mm slices of a smooth template are nearly identical and would leak across
splits. For the axial default this gives train = slices 12-66 and 126-148, val = 71-93,
test = 98-121 (voxel index along z, inferior to superior). The template is exactly left-right
symmetric (slice ``x`` mirrors ``196 - x``), so sagittal slicing uses only the left hemisphere
and midline (``x <= 98``); otherwise mirror-image slices would sit in train and test.
"""
from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ..operators.phase import smooth_phase
from .nifti import _axis_index, foreground_fraction, load_nifti, slice_stack

__all__ = [
    "MNI152_SHAPE",
    "SPLIT_LAYOUT",
    "SPLIT_GUARD",
    "load_mni152",
    "split_slice_indices",
    "center_crop_or_pad",
    "BrainSlices",
    "BrainPatches3D",
]

MNI152_SHAPE = (197, 233, 189)
"""Voxel grid of the template, RAS+ order (left->right, posterior->anterior, inferior->superior)."""

SPLIT_LAYOUT: tuple[tuple[str, float, float], ...] = (
    ("train", 0.0, 0.4),
    ("val", 0.4, 0.6),
    ("test", 0.6, 0.8),
    ("train", 0.8, 1.0),
)
"""(split, start, stop) as fractions of the usable slab along the slicing axis."""

SPLIT_GUARD = 4
"""Slices dropped between consecutive pieces of :data:`SPLIT_LAYOUT` (1 mm each)."""

_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
# Voxels above this fraction of the peak count as tissue when deciding what is "nearly empty".
_TISSUE_THRESHOLD = 0.1


def _mni152_path() -> str:
    """Location of the template file inside the nilearn installation."""
    try:
        from nilearn.datasets import MNI152_FILE_PATH
    except ImportError as exc:
        raise ImportError(
            "The embedded MNI152 brain data needs nilearn, which ships the template. "
            "Install it with: pip install 'learn2invert[brain]'"
        ) from exc
    return str(MNI152_FILE_PATH)


@functools.lru_cache(maxsize=1)
def load_mni152() -> np.ndarray:
    """The MNI152 T1 template as a float32 array of shape (197, 233, 189), values in [0, 1].

    Voxels are 1 mm, RAS+ order; intensities are the stored uint8 values divided by their
    maximum, so the brightest voxel is exactly 1. The array is decoded once per process and
    cached; it is returned read-only so no caller can corrupt the cache (copy it to modify it).

    Raises:
        ImportError: if nilearn is not installed (``pip install 'learn2invert[brain]'``).
    """
    volume, voxel_size = load_nifti(_mni152_path())
    data = volume[0].numpy()
    if data.shape != MNI152_SHAPE or not np.allclose(voxel_size, 1.0):
        raise ValueError(
            f"unexpected MNI152 template: shape {data.shape}, voxel size {voxel_size} mm "
            f"(expected {MNI152_SHAPE}, 1 mm); is the nilearn installation intact?"
        )
    data = data / data.max()
    data.setflags(write=False)
    return data


def _item_generator(seed: int, split: str, index: int, epoch: int = 0) -> torch.Generator:
    """A generator seeded from (seed, split, index[, epoch]) alone, so an item is the same in any
    order, in any DataLoader worker, on any run."""
    entropy = [int(seed), _SPLIT_CODES[split], int(index)] + ([int(epoch)] if epoch else [])
    state = np.random.SeedSequence(entropy).generate_state(2)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


def _split_segments(split: str, axis: int | str, min_foreground: float) -> list[tuple[int, int]]:
    """Half-open ``(start, stop)`` slice ranges of ``split`` along ``axis`` (see module doc)."""
    if split not in _SPLIT_CODES:
        raise ValueError(f"split must be 'train', 'val' or 'test'; got {split!r}")
    axis = _axis_index(axis)
    stack = slice_stack(load_mni152(), axis)
    n_total = stack.shape[0]
    if axis == 0:
        # Left hemisphere and midline only: the symmetric template mirrors x onto 196 - x.
        n_total = (MNI152_SHAPE[0] - 1) // 2 + 1
        stack = stack[:n_total]
    usable = np.nonzero(foreground_fraction(stack, _TISSUE_THRESHOLD) >= min_foreground)[0]
    if usable.size == 0:
        raise ValueError(f"no slice has {min_foreground:.0%} foreground; lower min_foreground")
    lo, n = int(usable[0]), int(usable[-1] - usable[0] + 1)
    segments = []
    for piece, (name, start, stop) in enumerate(SPLIT_LAYOUT):
        first = lo + round(start * n) + (SPLIT_GUARD if piece > 0 else 0)
        last = lo + round(stop * n)
        if name == split and last > first:
            segments.append((first, last))
    return segments


def split_slice_indices(split: str, axis: int | str = "axial", min_foreground: float = 0.05) -> np.ndarray:
    """Slice numbers of ``split`` along ``axis`` (indices into :func:`slice_stack` of the template).

    Slices with less than ``min_foreground`` of their pixels above 10% of the peak are left out
    even inside a split's range, so that no item is nearly empty.

    Returns:
        Sorted int64 array.
    """
    stack = slice_stack(load_mni152(), axis)
    fg = foreground_fraction(stack, _TISSUE_THRESHOLD)
    out = [k for a, b in _split_segments(split, axis, min_foreground) for k in range(a, b) if fg[k] >= min_foreground]
    return np.asarray(out, dtype=np.int64)


def center_crop_or_pad(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Centre-crop or zero-pad the trailing ``len(size)`` dimensions of ``x`` to ``size``.

    A crop keeps ``[(n - s) // 2, (n - s) // 2 + s)`` (fastMRI's convention); a pad puts
    ``(s - n) // 2`` zeros before and the rest after.
    """
    size = tuple(int(s) for s in size)
    for d, s in enumerate(size, start=x.ndim - len(size)):
        n = x.shape[d]
        if s < n:
            x = x.narrow(d, (n - s) // 2, s)
        elif s > n:
            pad_shape = list(x.shape)
            before = (s - n) // 2
            pad_shape[d] = before
            zeros_before = x.new_zeros(pad_shape)
            pad_shape[d] = s - n - before
            x = torch.cat([zeros_before, x, x.new_zeros(pad_shape)], dim=d)
    return x


def _apply_phase(magnitude: torch.Tensor, phase: torch.Tensor | None) -> torch.Tensor:
    """``(1, *S)`` magnitude and ``S`` phase (radians) -> ``(2, *S)`` real/imaginary."""
    if phase is None:
        return torch.cat([magnitude, torch.zeros_like(magnitude)])
    return torch.cat([magnitude * torch.cos(phase), magnitude * torch.sin(phase)])


class BrainSlices(Dataset):
    """2D complex slices of the MNI152 template, one item per slice of a split.

    Items are float32 ``(2, H, W)`` (real, imaginary): the template magnitude (peak voxel of the
    volume = 1, so ``|x| <= 1``) times ``exp(i * phase)`` with a :func:`smooth_phase` map drawn
    from ``(seed, split, index)``; the same index always gives the same image. Orientation as in
    :func:`~learn2invert.data.nifti.slice_stack` (axial: anterior up, subject's left on the left).

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint slab ranges; see the module doc).
        size: output ``(H, W)`` or one int for a square; centre crop/zero pad after resampling.
            ``None`` keeps the native grid (axial 233 x 197). The brain spans about 181 x 145
            pixels axially, so sizes below that trim the frontal and occipital poles unless
            ``scale`` shrinks the image first (e.g. ``size=128, scale=0.7``).
        axis: ``"axial"`` (default), ``"coronal"`` or ``"sagittal"`` (or 0/1/2).
        phase: add the random phase; ``False`` gives a zero imaginary channel.
        seed: seed of the phase draws.
        scale: in-plane resampling factor (0.5 = 2 mm pixels), antialiased bilinear.
        min_foreground: minimum fraction of tissue pixels for a slice to be used.
        phase_order: polynomial order of the phase (see :func:`smooth_phase`).
        max_phase: largest phase amplitude in radians.
        augment: training augmentation: each epoch (see :meth:`set_epoch`) draws a new phase map
            and flips each slice left-right with probability 1/2, still reproducibly from
            ``(seed, split, index, epoch)``. One brain gives few slices; this multiplies them.

    Attributes:
        slice_indices: template slice numbers used, in item order.
    """

    def __init__(
        self,
        split: str = "train",
        size: int | Sequence[int] | None = None,
        axis: int | str = "axial",
        phase: bool = True,
        seed: int = 0,
        scale: float = 1.0,
        min_foreground: float = 0.05,
        phase_order: int = 3,
        max_phase: float = math.pi,
        augment: bool = False,
    ) -> None:
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        if size is not None and min((size,) if isinstance(size, int) else tuple(size)) < 1:
            raise ValueError(f"size must be positive, got {size!r}")
        self.split = split
        self.axis = _axis_index(axis)
        self.size = (int(size), int(size)) if isinstance(size, int) else (tuple(size) if size is not None else None)
        self.phase = phase
        self.seed = seed
        self.scale = float(scale)
        self.phase_order = phase_order
        self.max_phase = max_phase
        self.slice_indices = split_slice_indices(split, self.axis, min_foreground)
        if len(self.slice_indices) == 0:
            raise ValueError(f"split {split!r} has no slices with min_foreground={min_foreground}")
        self.augment = bool(augment)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """With ``augment``: select the epoch's phase maps and flips (no effect otherwise)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.slice_indices)

    def magnitude(self, index: int) -> torch.Tensor:
        """The magnitude image of item ``index``: float32 ``(1, H, W)`` in [0, 1]."""
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} slices")
        k = int(self.slice_indices[index])
        image = torch.from_numpy(slice_stack(load_mni152(), self.axis)[k].copy())[None]
        if self.scale != 1.0:
            image = F.interpolate(
                image[None], scale_factor=self.scale, mode="bilinear", antialias=True, align_corners=False
            )[0].clamp_(0.0, 1.0)
        if self.size is not None:
            image = center_crop_or_pad(image, self.size)
        return image

    def __getitem__(self, index: int) -> torch.Tensor:
        magnitude = self.magnitude(index)
        index = index % len(self)  # negative indices draw the same phase as their positive twin
        # Epoch 0 of an augmented set is the plain set; later epochs draw new phases and flips.
        gen = _item_generator(self.seed, self.split, index, self.epoch if self.augment else 0)
        if self.augment and self.epoch and bool(torch.rand((), generator=gen) < 0.5):
            magnitude = magnitude.flip(-1)
        phase = None
        if self.phase:
            phase = smooth_phase(magnitude.shape[-2:], gen, order=self.phase_order, max_amplitude=self.max_phase)
        return _apply_phase(magnitude, phase)


class BrainPatches3D(Dataset):
    """3D complex patches of the MNI152 template on a regular grid, one item per patch.

    Items are float32 ``(2, D, H, W)`` (real, imaginary); ``D`` runs inferior->superior and each
    ``(H, W)`` plane is an axial slice oriented as in :class:`BrainSlices`. The phase is a 3D
    :func:`smooth_phase` drawn from ``(seed, split, index)``. Patches come from the split's
    axial slab pieces (see the module doc), never straddle two pieces, and are kept when at least
    ``min_foreground`` of their voxels are tissue. The val and test slabs are 23 and 24 slices
    thick, which bounds ``D`` for those splits.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"``.
        patch: ``(D, H, W)`` in voxels (1 mm).
        stride: grid step ``(D, H, W)``; defaults to ``patch`` (non-overlapping patches).
        phase: add the random phase; ``False`` gives a zero imaginary channel.
        seed: seed of the phase draws.
        min_foreground: minimum fraction of tissue voxels in a kept patch.
        phase_order: polynomial order of the phase.
        max_phase: largest phase amplitude in radians.

    Attributes:
        positions: ``(z, row, col)`` corner of each patch in the oriented ``(189, 233, 197)`` volume.
    """

    def __init__(
        self,
        split: str = "train",
        patch: Sequence[int] = (16, 64, 64),
        stride: Sequence[int] | None = None,
        phase: bool = True,
        seed: int = 0,
        min_foreground: float = 0.1,
        phase_order: int = 3,
        max_phase: float = math.pi,
    ) -> None:
        self.patch = tuple(int(p) for p in patch)
        self.stride = tuple(int(s) for s in stride) if stride is not None else self.patch
        if len(self.patch) != 3 or len(self.stride) != 3 or min(self.patch + self.stride) < 1:
            raise ValueError(f"patch and stride must be three positive ints; got {patch}, {stride}")
        self.split = split
        self.phase = phase
        self.seed = seed
        self.phase_order = phase_order
        self.max_phase = max_phase
        volume = slice_stack(load_mni152(), "axial")
        _, n_rows, n_cols = volume.shape
        d, h, w = self.patch
        if h > n_rows or w > n_cols:
            raise ValueError(f"patch {self.patch} is larger than the axial plane {(n_rows, n_cols)}")
        tissue = volume > _TISSUE_THRESHOLD
        segments = _split_segments(split, "axial", 0.05)
        self.positions: list[tuple[int, int, int]] = []
        for start, stop in segments:
            for z in range(start, stop - d + 1, self.stride[0]):
                for r in range(0, n_rows - h + 1, self.stride[1]):
                    for c in range(0, n_cols - w + 1, self.stride[2]):
                        if tissue[z : z + d, r : r + h, c : c + w].mean() >= min_foreground:
                            self.positions.append((z, r, c))
        if not self.positions:
            raise ValueError(
                f"no {self.patch} patch fits split {split!r}: its slabs are "
                f"{[b - a for a, b in segments]} slices thick (min_foreground={min_foreground})"
            )

    def __len__(self) -> int:
        return len(self.positions)

    def magnitude(self, index: int) -> torch.Tensor:
        """The magnitude of patch ``index``: float32 ``(1, D, H, W)`` in [0, 1]."""
        z, r, c = self.positions[index]
        d, h, w = self.patch
        block = slice_stack(load_mni152(), "axial")[z : z + d, r : r + h, c : c + w]
        return torch.from_numpy(block.copy())[None]

    def __getitem__(self, index: int) -> torch.Tensor:
        magnitude = self.magnitude(index)
        phase = None
        if self.phase:
            index = index % len(self)
            gen = _item_generator(self.seed, self.split, index)
            phase = smooth_phase(self.patch, gen, order=self.phase_order, max_amplitude=self.max_phase)
        return _apply_phase(magnitude, phase)
