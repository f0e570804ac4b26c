"""A richer MRI training distribution from the one embedded brain: three orientations, random
geometry and contrast, drawn on the fly.

:class:`BrainSlices` gives 78 axial training slices of one averaged template; a network trained on
them learns that template. :class:`BrainSliceMix` draws each training item from a pool of axial,
coronal and sagittal slices and then changes, all from a generator seeded by
``(seed, index, epoch)`` so any item can be drawn again exactly:

- geometry: in-plane scale (log-uniform in ``scale_range`` times ``scale``), rotation, left-right
  flip, translation and a smooth elastic deformation, applied as one resampling;
- contrast: a gamma curve and a smooth multiplicative bias field (the receive-coil shading of
  real scans);
- phase: the random smooth phase of :func:`~learn2invert.operators.phase.smooth_phase`, as in :class:`BrainSlices`;
- content (optional, ``natural``): a share of items are crops of the embedded *training*
  photographs (:data:`~.natural.TRAIN_IMAGES`) instead of brain slices. An averaged template
  brain is smooth and sits on a black background; real scans have sharp edges, texture and tissue
  up to the border of the field of view, and a model that only ever saw the template leaves
  their aliasing in place. ``dead_leaves`` adds synthetic images of flat regions with sharp
  edges at every scale (the structure TV assumes).

Held-out data stays held out. The validation and test sets are axial slabs (see
:mod:`.brain`); coronal and sagittal slices cut through every axial level, so before they are
taken the axial levels of the validation and test slabs (with :data:`~.brain.SPLIT_GUARD`
slices on either side) are cut out of the volume and the two remaining pieces are joined with a
gap of empty rows. No voxel of the validation or test slabs reaches a training item.
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
from .brain import SPLIT_GUARD, _apply_phase, _item_generator, _split_segments, load_mni152, split_slice_indices
from .dead_leaves import dead_leaves
from .natural import TRAIN_IMAGES, available_images, load_image
from .nifti import foreground_fraction, slice_stack

__all__ = ["BrainSliceMix", "training_slice_pool", "augment_magnitude"]

ORIENTATIONS = ("axial", "coronal", "sagittal")
_PHOTO_TRIES = 8  # crops drawn per photograph item before a dark one is accepted
_GAP_ROWS = 8  # empty rows between the two pieces left when the held-out axial levels are cut out


def _held_out_axial_levels() -> tuple[int, int]:
    """``[start, stop)`` axial levels (z) of the validation and test slabs plus guard slices."""
    val = _split_segments("val", "axial", 0.05)
    test = _split_segments("test", "axial", 0.05)
    return val[0][0] - SPLIT_GUARD, test[-1][1] + SPLIT_GUARD


@functools.lru_cache(maxsize=8)
def training_slice_pool(orientation: str, min_foreground: float = 0.05) -> tuple[np.ndarray, ...]:
    """Native-resolution (1 mm) training magnitudes of one orientation: float32 ``(H, W)`` arrays in [0, 1].

    Axial slices are the training slices of :class:`BrainSlices`. Coronal and sagittal slices
    come from the volume with the held-out axial levels cut out (module doc); slices with less
    than ``min_foreground`` tissue are dropped.
    """
    if orientation not in ORIENTATIONS:
        raise ValueError(f"orientation must be one of {ORIENTATIONS}, got {orientation!r}")
    volume = load_mni152()
    if orientation == "axial":
        stack = slice_stack(volume, "axial")
        return tuple(np.ascontiguousarray(stack[k]) for k in split_slice_indices("train", "axial", min_foreground))
    z0, z1 = _held_out_axial_levels()
    gap = np.zeros(volume.shape[:2] + (_GAP_ROWS,), dtype=volume.dtype)
    stack = slice_stack(np.concatenate([volume[:, :, :z0], gap, volume[:, :, z1:]], axis=2), orientation)
    keep = foreground_fraction(stack, 0.1) >= min_foreground
    return tuple(np.ascontiguousarray(s) for s, k in zip(stack, keep) if k)


def _smooth_field(shape: tuple[int, int], generator: torch.Generator, grid: int = 4) -> torch.Tensor:
    """A smooth random field of ``shape``: N(0, 1) values on a ``grid x grid`` lattice, bicubically upsampled."""
    coarse = torch.randn((1, 1, grid, grid), generator=generator)
    return F.interpolate(coarse, size=shape, mode="bicubic", align_corners=True)[0, 0]


def augment_magnitude(
    image: torch.Tensor,
    size: tuple[int, int],
    generator: torch.Generator,
    *,
    scale: float = 0.35,
    scale_range: Sequence[float] = (0.8, 1.25),
    rotation: float = 10.0,
    shift: float = 0.08,
    elastic: float = 1.5,
    flip: bool = True,
    gamma_range: Sequence[float] = (0.8, 1.25),
    bias: float = 0.3,
) -> torch.Tensor:
    """One random geometric and contrast change of a magnitude image.

    Args:
        image: ``(H0, W0)`` float32 magnitude in [0, 1] at native resolution.
        size: output ``(H, W)`` in pixels.
        generator: the source of every random draw (CPU).
        scale: pixels per native pixel before the random part (0.35: 2.9 mm pixels).
        scale_range: ``[low, high]`` factor on ``scale``, drawn log-uniformly; ``[1, 1]`` disables.
        rotation: largest rotation in degrees (uniform in ``[-rotation, rotation]``).
        shift: largest translation as a fraction of the output size.
        elastic: largest elastic displacement in output pixels (a smooth field; 0 disables).
        flip: flip left-right with probability 1/2.
        gamma_range: ``[low, high]`` exponent of the intensity curve, drawn log-uniformly.
        bias: largest ``|log|`` of the smooth multiplicative bias field (0 disables).

    Returns:
        ``(1, H, W)`` float32 magnitude, non-negative, at most about ``exp(bias)``.
    """
    h, w = size
    low, high = (float(v) for v in scale_range)
    if not 0 < low <= high or scale <= 0:
        raise ValueError(f"scale must be positive and scale_range = [low, high] with 0 < low <= high; got {scale}, {scale_range}")
    u = torch.rand(8, generator=generator, dtype=torch.float64).tolist()
    s = scale * math.exp(math.log(low) + u[0] * (math.log(high) - math.log(low)))
    small = F.interpolate(image[None, None].float(), scale_factor=s, mode="bilinear", antialias=True,
                          align_corners=False, recompute_scale_factor=False)
    hi, wi = small.shape[-2:]
    angle = math.radians(rotation * (2 * u[1] - 1))
    ty, tx = shift * h * (2 * u[2] - 1), shift * w * (2 * u[3] - 1)
    # Output pixel centres relative to the output centre, mapped into input pixel coordinates.
    ys = torch.arange(h, dtype=torch.float32) - (h - 1) / 2
    xs = torch.arange(w, dtype=torch.float32) - (w - 1) / 2
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    if elastic > 0:
        yy = yy + elastic * _smooth_field((h, w), generator).clamp(-2, 2) / 2
        xx = xx + elastic * _smooth_field((h, w), generator).clamp(-2, 2) / 2
    if flip and u[4] < 0.5:
        xx = -xx
    cos, sin = math.cos(angle), math.sin(angle)
    y_in = cos * yy - sin * xx + (hi - 1) / 2 + ty
    x_in = sin * yy + cos * xx + (wi - 1) / 2 + tx
    grid = torch.stack([(2 * x_in + 1) / wi - 1, (2 * y_in + 1) / hi - 1], dim=-1)[None]
    out = F.grid_sample(small, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0].clamp_(0.0, 1.0)
    g_low, g_high = (float(v) for v in gamma_range)
    gamma = math.exp(math.log(g_low) + u[5] * (math.log(g_high) - math.log(g_low)))
    out = out.pow(gamma)
    if bias > 0:
        out = out * torch.exp(smooth_phase((h, w), generator, order=2, max_amplitude=bias))
    return out


class BrainSliceMix(Dataset):
    """Complex training slices drawn on the fly from three orientations of the MNI152 template.

    Items are float32 ``(2, H, W)``: an :func:`augment_magnitude` draw of a pool slice (see
    :func:`training_slice_pool`) times ``exp(i * phase)``. Item ``index`` of epoch ``e`` draws everything
    from a generator seeded by ``(seed, index, e)``, so it is the same
    in any order, worker or run. Only for training: validation and test sets are
    :class:`BrainSlices` (axial, no augmentation), whose slabs this set never touches. Each item
    first draws its orientation (probabilities ``orientations``), then a slice of that
    orientation uniformly.

    Args:
        size: output ``(H, W)`` or one int.
        length: items per epoch.
        seed: seed of every draw.
        orientations: probability of each orientation, e.g. ``{"axial": 0.5, "coronal": 0.25,
            "sagittal": 0.25}`` (normalised; the default). The coronal and sagittal pieces look
            less like the axial test slices, so axial items get the larger share.
        phase: add the random smooth phase (``False``: zero imaginary channel).
        phase_order, max_phase: as in :class:`BrainSlices`.
        min_foreground: tissue fraction a pool slice needs.
        natural: probability that an item is a training photograph instead of a brain slice
            (0 keeps the draws of every brain item exactly as without it).
        natural_scale_range: ``[low, high]`` output pixels per photograph pixel, log-uniform
            (0.25: a 64-pixel item shows 256 photograph pixels).
        dead_leaves: probability that an item is a synthetic dead-leaves image
            (:func:`~learn2invert.data.dead_leaves.dead_leaves`: flat regions with sharp edges at
            every scale) instead of a brain slice; ``natural + dead_leaves <= 1``.
        **augment: keyword arguments of :func:`augment_magnitude` (``scale``, ``scale_range``,
            ``rotation``, ``shift``, ``elastic``, ``flip``, ``gamma_range``, ``bias``).
    """

    def __init__(self, size: int | Sequence[int] = 64, length: int = 1024, seed: int = 0,
                 orientations: dict[str, float] | None = None, phase: bool = True, phase_order: int = 3,
                 max_phase: float = math.pi, min_foreground: float = 0.05, natural: float = 0.0,
                 natural_scale_range: Sequence[float] = (0.25, 1.0), dead_leaves: float = 0.0, **augment) -> None:
        self.size = (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size)
        if len(self.size) != 2 or min(self.size) < 1:
            raise ValueError(f"size must be a positive int or (H, W), got {size!r}")
        if length < 1:
            raise ValueError(f"length must be >= 1, got {length}")
        unknown = set(augment) - {"scale", "scale_range", "rotation", "shift", "elastic", "flip", "gamma_range", "bias"}
        if unknown:
            raise TypeError(f"BrainSliceMix got unknown augmentation option(s) {sorted(unknown)}")
        weights = dict(orientations or {"axial": 0.5, "coronal": 0.25, "sagittal": 0.25})
        if not weights or any(o not in ORIENTATIONS or w < 0 for o, w in weights.items()) or sum(weights.values()) <= 0:
            raise ValueError(f"orientations must map some of {ORIENTATIONS} to non-negative weights, got {orientations!r}")
        self.pools = {o: training_slice_pool(o, min_foreground) for o, w in weights.items() if w > 0}
        total = sum(weights[o] for o in self.pools)
        self.cumulative = np.cumsum([weights[o] / total for o in self.pools])
        self.length, self.seed, self.phase = int(length), int(seed), bool(phase)
        self.phase_order, self.max_phase, self.augment = phase_order, max_phase, augment
        if not 0.0 <= float(natural) <= 1.0:
            raise ValueError(f"natural must be a probability in [0, 1], got {natural}")
        low, high = (float(v) for v in natural_scale_range)
        if not 0 < low <= high:
            raise ValueError(f"natural_scale_range must be [low, high] with 0 < low <= high, got {natural_scale_range}")
        self.natural, self.natural_scale_range = float(natural), (low, high)
        if isinstance(dead_leaves, bool) or not 0.0 <= float(dead_leaves) <= 1.0 - self.natural:
            raise ValueError(f"dead_leaves must be a probability in [0, 1 - natural] = [0, {1 - self.natural:g}], "
                             f"got {dead_leaves!r}")
        self.dead_leaves = float(dead_leaves)
        # The Hubble deep field is a black sky with specks: nothing like tissue, and its crops are too dark.
        self.photos = tuple(n for n in TRAIN_IMAGES if n in available_images() and n != "hubble_deep_field")
        if self.natural > 0 and not self.photos:
            raise ValueError("natural > 0 needs the training photographs bundled with scikit-image; none was found")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose draws :meth:`__getitem__` returns."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} items")
        index %= self.length
        gen = _item_generator(self.seed, "train", index, self.epoch + 1)
        u = torch.rand(2, generator=gen, dtype=torch.float64).tolist()
        # The content draw comes after the brain draws and only when photographs or dead leaves are
        # enabled, so natural=0 reproduces the items of runs made before the option existed (and
        # dead_leaves=0 those made before that one).
        content = torch.rand(1, generator=gen, dtype=torch.float64).item() if self.natural + self.dead_leaves > 0 else 1.0
        if content < self.natural:
            magnitude = self._photograph(u[1], gen)
        elif content < self.natural + self.dead_leaves:
            magnitude = self._dead_leaves(gen)
        else:
            pool = list(self.pools.values())[min(int(np.searchsorted(self.cumulative, u[0], side="right")),
                                                 len(self.pools) - 1)]
            image = torch.from_numpy(pool[int(u[1] * len(pool))])
            magnitude = augment_magnitude(image, self.size, gen, **self.augment)
        phase = None
        if self.phase:
            phase = smooth_phase(self.size, gen, order=self.phase_order, max_amplitude=self.max_phase)
        return _apply_phase(magnitude, phase)

    def _dead_leaves(self, gen: torch.Generator) -> torch.Tensor:
        """A ``(1, H, W)`` dead-leaves magnitude (radii 2 pixels to 4 item sides, a random blur of
        0-1 pixel as in :class:`~.natural.NaturalPatches`), scaled to peak 1 and augmented like a slice."""
        side = math.ceil(1.5 * max(self.size))  # room for the rotation and shift, as for photographs
        rng = np.random.default_rng(int(torch.randint(0, 2**62, (1,), generator=gen)))
        leaves = torch.from_numpy(dead_leaves(side, rng, r_min=2.0, r_max=4.0 * side, blur=float(rng.uniform(0.0, 1.0))))[0]
        leaves = leaves / leaves.max().clamp_min(1e-3)
        return augment_magnitude(leaves, self.size, gen, **{**self.augment, "scale": 1.0, "scale_range": (1.0, 1.0)})

    def _photograph(self, choice: float, gen: torch.Generator) -> torch.Tensor:
        """A ``(1, H, W)`` magnitude: a random crop of a training photograph, augmented like a slice."""
        photo = load_image(self.photos[min(int(choice * len(self.photos)), len(self.photos) - 1)], grey=True)[0]
        low, high = self.natural_scale_range
        for _ in range(_PHOTO_TRIES):
            u = torch.rand(3, generator=gen, dtype=torch.float64).tolist()
            s = math.exp(math.log(low) + u[0] * (math.log(high) - math.log(low)))
            # Crop 1.5x the region the item shows, so rotation and shift stay inside the photograph.
            side = [min(n, math.ceil(1.5 * out / s)) for n, out in zip(photo.shape, self.size)]
            top, left = (int(v * (n - c + 1)) for v, n, c in zip(u[1:], photo.shape, side))
            crop = photo[top:top + side[0], left:left + side[1]]
            # Mostly black crops (a night sky) make a per-image NMSE loss explode; draw again.
            if float((crop > 0.1).float().mean()) >= 0.5:
                break
        # Scaled to peak 1 like a template slice, so the noise level relative to the image matches.
        crop = crop / crop.max().clamp_min(1e-3)
        return augment_magnitude(crop, self.size, gen, **{**self.augment, "scale": s, "scale_range": (1.0, 1.0)})
