"""The photographs bundled with scikit-image, as an embedded natural-image set.

scikit-image ships a few dozen small images inside its wheel (the rest of ``skimage.data`` is
downloaded on demand by pooch). The natural-looking ones among the bundled files are used here
so that denoising / deblurring / super-resolution examples and tests run with no network and
no dataset download. Files are read straight from the folder inside the installed package;
``skimage.data.<name>()`` is deliberately not called because, should a bundled file ever fail
its hash check, it falls back to a download.

Images (name: size, colour):

======================  ===============  =====  =====
name                    H x W (pixels)   RGB    split
======================  ===============  =====  =====
astronaut               512 x 512        yes    train
coffee                  400 x 600        yes    train
brick                   512 x 512        no     train
grass                   512 x 512        no     train
moon                    512 x 512        no     train
rocket                  427 x 640        yes    train
hubble_deep_field       872 x 1000       yes    train
retina                  1411 x 1411      yes    train
cell                    660 x 550        no     train
camera                  512 x 512        no     test
chelsea                 300 x 451        yes    test
coins                   303 x 384        no     test
gravel                  512 x 512        no     test
immunohistochemistry    512 x 512        yes    test
======================  ===============  =====  =====

The split is fixed and by image: the five test images are never cropped for training. They
cover the kinds of content in the training set (a classic grey photograph, a colour photograph,
objects on a background, a texture, a colour microscopy slide) without repeating any image.

Bundled images left out on purpose: ``clock`` (motion-blurred, a bad ground truth for
deblurring), ``cat`` (the same file as ``chelsea``), ``microaneurysms`` (a 102x102 crop of a
retina photograph), ``page`` / ``text`` (scanned documents), ``horse`` / ``logo`` /
``checkerboard`` / ``colorwheel`` (synthetic) and ``shepp_logan_phantom`` (see
:mod:`learn2invert.data.phantoms`).

Every image is float32 with values in ``[0, 1]`` (8-bit intensity / 255). Grey versions use
``skimage.color.rgb2gray`` (ITU-R 709 luminance); RGB versions of grey images repeat the grey
channel three times so that an RGB dataset has one channel count.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from .image_folder import as_chw_float32, center_crop, index_rng, random_crop
from .dead_leaves import dead_leaves

__all__ = [
    "IMAGE_NAMES",
    "NaturalPatches",
    "TEST_IMAGES",
    "TRAIN_IMAGES",
    "TestImages",
    "available_images",
    "load_image",
    "split_names",
]

# Public name (as in skimage.data) -> file name in skimage's bundled data folder.
_BUNDLED_FILES = {
    "astronaut": "astronaut.png",
    "coffee": "coffee.png",
    "brick": "brick.png",
    "grass": "grass.png",
    "moon": "moon.png",
    "rocket": "rocket.jpg",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "retina": "retina.jpg",
    "cell": "cell.png",
    "camera": "camera.png",
    "chelsea": "chelsea.png",
    "coins": "coins.png",
    "gravel": "gravel.png",
    "immunohistochemistry": "ihc.png",
}

IMAGE_NAMES: tuple[str, ...] = tuple(_BUNDLED_FILES)
"""Every image of the set, training images first."""

TEST_IMAGES: tuple[str, ...] = ("camera", "chelsea", "coins", "gravel", "immunohistochemistry")
"""Held-out evaluation images; never cropped for training."""

TRAIN_IMAGES: tuple[str, ...] = tuple(n for n in IMAGE_NAMES if n not in TEST_IMAGES)
"""Images that training patches are cropped from."""


def _bundled_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).resolve().parent


def _bundled_path(name: str) -> Path:
    if name not in _BUNDLED_FILES:
        raise KeyError(f"unknown natural image {name!r}; available: {', '.join(IMAGE_NAMES)}")
    return _bundled_dir() / _BUNDLED_FILES[name]


def available_images() -> tuple[str, ...]:
    """Names whose file is present in the installed scikit-image (all of them for 0.21-0.26)."""
    return tuple(n for n in IMAGE_NAMES if _bundled_path(n).is_file())


def split_names(split: str) -> tuple[str, ...]:
    """Image names of a split: ``"train"``, ``"test"`` or ``"all"``."""
    splits = {"train": TRAIN_IMAGES, "test": TEST_IMAGES, "all": IMAGE_NAMES}
    if split not in splits:
        raise ValueError(f"split must be one of {sorted(splits)}, got {split!r}")
    return splits[split]


@lru_cache(maxsize=None)
def _cached_array(name: str, grey: bool) -> np.ndarray:
    # Decoding (and rgb2gray for the large retina) dominates patch sampling, so each image is
    # decoded once per process; the array is frozen because callers share it.
    from skimage.io import imread

    path = _bundled_path(name)
    if not path.is_file():
        raise FileNotFoundError(
            f"natural image {name!r} is not bundled with this scikit-image ({path} missing); "
            f"available offline: {', '.join(available_images())}"
        )
    array = as_chw_float32(imread(str(path)), grey=grey)
    array.setflags(write=False)
    return array


def load_image(name: str, grey: bool = True) -> torch.Tensor:
    """One embedded photograph.

    Args:
        name: one of :data:`IMAGE_NAMES`.
        grey: ``True`` for one luminance channel, ``False`` for three RGB channels.

    Returns:
        float32 tensor ``(1, H, W)`` or ``(3, H, W)``, values in ``[0, 1]``; a fresh copy the
        caller may modify.
    """
    return torch.from_numpy(_cached_array(name, bool(grey)).copy())


class NaturalPatches(Dataset):
    """Random square crops of the embedded photographs of one split.

    Item ``i`` is a pure function of ``(seed, epoch, i)``: an image is drawn uniformly among the
    split's images (not in proportion to area, so the 1411x1411 retina does not dominate),
    then a crop position uniformly among the valid ones, then (if ``augment``) one of the 8
    flips / right-angle rotations. A test set is therefore reproducible whatever the loading
    order, and a training loop calls :meth:`set_epoch` for fresh crops each epoch.

    Args:
        split: ``"train"``, ``"test"`` or ``"all"`` (see the module table).
        patch_size: side of the square crop, pixels.
        grey: one luminance channel if ``True``, else RGB.
        length: number of items (patches per epoch).
        seed: base seed.
        augment: apply a random dihedral transform (flip / 90-degree rotation).
        dead_leaves: fraction of the items replaced by synthetic dead-leaves images
            (:func:`~learn2invert.data.dead_leaves.dead_leaves`: opaque disks with power-law
            radii from 2 pixels to 4 patch sides, softened by a Gaussian blur of 0-1 pixels), grey or the same image in every
            colour channel; 0 (default) draws exactly the crops it drew before the option existed.

    Items are float32 tensors ``(C, patch_size, patch_size)`` in ``[0, 1]``.

    Raises:
        ValueError: if no image of the split is at least ``patch_size`` in both axes.
    """

    def __init__(self, split: str = "train", patch_size: int = 32, grey: bool = True,
                 length: int = 1000, seed: int = 0, augment: bool = False, dead_leaves: float = 0.0):
        if patch_size < 1 or length < 0:
            raise ValueError(f"need patch_size >= 1 and length >= 0, got {patch_size}, {length}")
        if isinstance(dead_leaves, bool) or not 0.0 <= float(dead_leaves) <= 1.0:
            raise ValueError(f"dead_leaves is the fraction of synthetic items and must be in [0, 1], got {dead_leaves!r}")
        self.dead_leaves = float(dead_leaves)
        self.split = split
        self.patch_size = int(patch_size)
        self.grey = bool(grey)
        self.length = int(length)
        self.seed = int(seed)
        self.augment = bool(augment)
        self.epoch = 0
        images = {n: _cached_array(n, self.grey) for n in split_names(split)}
        # Images smaller than the patch cannot give a crop; dropping them beats failing late.
        self.names = tuple(n for n, a in images.items() if min(a.shape[-2:]) >= self.patch_size)
        if not self.names:
            raise ValueError(
                f"no {split!r} image is at least {patch_size}x{patch_size} pixels; sizes: "
                + ", ".join(f"{n} {a.shape[1]}x{a.shape[2]}" for n, a in images.items())
            )
        self._images = [images[n] for n in self.names]

    def set_epoch(self, epoch: int) -> None:
        """Select a new, equally reproducible set of crops."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        """Patch ``index``: float32 ``(C, patch_size, patch_size)`` in ``[0, 1]``."""
        index = range(self.length)[index]
        rng = index_rng(self.seed, self.epoch, index)
        if self.dead_leaves > 0 and rng.random() < self.dead_leaves:  # no draw at all when 0: old crops unchanged
            # Radii 2 pixels to 4 patch sides: fewer specks than from 1 pixel, and some items mostly
            # one flat region with a few edges, as in 32-pixel crops of photographs.
            leaves = dead_leaves(self.patch_size, rng, r_min=2.0, r_max=4.0 * self.patch_size,
                                 blur=float(rng.uniform(0.0, 1.0)))
            channels = 1 if self.grey else 3
            return torch.from_numpy(np.repeat(leaves, channels, axis=0))
        image = self._images[int(rng.integers(len(self._images)))]
        patch = random_crop(image, self.patch_size, rng)
        if self.augment:
            # 4 right-angle rotations x optional mirror = the 8 symmetries of the square.
            patch = np.rot90(patch, k=int(rng.integers(4)), axes=(-2, -1))
            if rng.integers(2):
                patch = patch[..., ::-1]
        return torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))


class TestImages(Dataset):
    """The whole photographs of a split, for evaluation.

    Args:
        split: ``"test"`` (default), ``"train"`` or ``"all"``.
        grey: one luminance channel if ``True``, else RGB.
        size: if given, every image is centre-cropped to ``size`` pixels (int for a square or
            ``(h, w)``) so that they can be batched; ``None`` keeps full sizes (which differ).

    Items are float32 tensors ``(C, H, W)`` in ``[0, 1]``; ``names[i]`` names item ``i``.

    Raises:
        ValueError: naming the image if one is smaller than ``size``.
    """

    # Not a test case, despite the name: keeps pytest from trying to collect it.
    __test__ = False

    def __init__(self, split: str = "test", grey: bool = True,
                 size: int | Sequence[int] | None = None):
        self.names = split_names(split)
        self.grey = bool(grey)
        self.size = size
        self._images = []
        for name in self.names:
            image = _cached_array(name, self.grey)
            if size is not None:
                try:
                    image = center_crop(image, size)
                except ValueError as err:
                    raise ValueError(f"test image {name!r}: {err}") from err
            self._images.append(image)

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> torch.Tensor:
        """Image ``index`` (named ``names[index]``): float32 ``(C, H, W)`` in ``[0, 1]``."""
        return torch.from_numpy(np.array(self._images[index], dtype=np.float32))
