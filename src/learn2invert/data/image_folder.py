"""A folder of the user's own images (BSD300, CelebA, DIV2K, ...) as a torch Dataset.

The helpers here (array -> ``(C, H, W)`` float32 conversion, centre crop, per-index random crop)
are shared with the embedded photographs in :mod:`learn2invert.data.natural`.

Images are returned as float32 tensors of shape ``(C, H, W)`` with intensities in ``[0, 1]``
(dimensionless; 8-bit and 16-bit files are scaled by their type's maximum), ``C = 1`` for
grey and ``C = 3`` for RGB.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = ("png", "jpg", "jpeg", "tif", "tiff", "bmp")

__all__ = [
    "IMAGE_EXTENSIONS",
    "ImageFolder",
    "as_chw_float32",
    "center_crop",
    "index_rng",
    "random_crop",
    "read_image",
]


def as_chw_float32(image: np.ndarray, grey: bool = True) -> np.ndarray:
    """Convert an image array to float32 ``(C, H, W)`` with values in ``[0, 1]``.

    Args:
        image: ``(H, W)`` grey, ``(H, W, 3)`` RGB or ``(H, W, 4)`` RGBA array of any integer or
            float dtype (integers are scaled by their dtype's maximum, floats are assumed to be
            in ``[0, 1]`` already).
        grey: ``True`` gives one channel (ITU-R 709 luminance via ``skimage.color.rgb2gray``);
            ``False`` gives three channels, a grey image being repeated so that every image
            of an RGB dataset has the same channel count.

    Returns:
        Contiguous float32 array, ``(1, H, W)`` if ``grey`` else ``(3, H, W)``.

    Raises:
        ValueError: if the array is not a 2-D grey or 3-/4-channel colour image.
    """
    from skimage.color import rgb2gray
    from skimage.util import img_as_float32

    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 4:
        # Alpha is a compositing mask, not intensity: keep the stored colour values.
        image = image[..., :3]
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
        raise ValueError(
            f"expected a (H, W), (H, W, 3) or (H, W, 4) image, got shape {image.shape}"
        )
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    image = img_as_float32(image)
    if image.ndim == 2:
        chw = image[None]
        if not grey:
            chw = np.repeat(chw, 3, axis=0)
    elif grey:
        chw = rgb2gray(image).astype(np.float32)[None]
    else:
        chw = np.moveaxis(image, -1, 0)
    # Rounding in rgb2gray / float input can step a hair outside [0, 1].
    return np.ascontiguousarray(np.clip(chw, 0.0, 1.0), dtype=np.float32)


def _pair(size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def center_crop(image: np.ndarray | torch.Tensor, size: int | Sequence[int]):
    """The central ``size`` window of a ``(..., H, W)`` array or tensor.

    Args:
        image: array or tensor whose last two axes are height and width (pixels).
        size: crop size in pixels, an int for a square or ``(height, width)``.

    Returns:
        A view of shape ``(..., h, w)`` (same type as ``image``). When ``H - h`` is odd the extra
        row goes below the crop (the offset is rounded down), as in most crop utilities.

    Raises:
        ValueError: if the image is smaller than ``size`` in either axis.
    """
    h, w = _pair(size)
    height, width = image.shape[-2], image.shape[-1]
    if h > height or w > width:
        raise ValueError(f"cannot centre-crop an image of {height}x{width} pixels to {h}x{w}")
    top, left = (height - h) // 2, (width - w) // 2
    return image[..., top : top + h, left : left + w]


def random_crop(image: np.ndarray | torch.Tensor, size: int | Sequence[int],
                rng: np.random.Generator):
    """A uniformly placed ``size`` window of a ``(..., H, W)`` array or tensor.

    Args:
        image: array or tensor whose last two axes are height and width (pixels).
        size: crop size in pixels, an int for a square or ``(height, width)``.
        rng: numpy generator that draws the top-left corner (every valid position equally
            likely).

    Returns:
        A view of shape ``(..., h, w)``.

    Raises:
        ValueError: if the image is smaller than ``size`` in either axis.
    """
    h, w = _pair(size)
    height, width = image.shape[-2], image.shape[-1]
    if h > height or w > width:
        raise ValueError(f"cannot crop {h}x{w} pixels out of an image of {height}x{width}")
    top = int(rng.integers(0, height - h + 1))
    left = int(rng.integers(0, width - w + 1))
    return image[..., top : top + h, left : left + w]


def index_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one dataset item: a pure function of ``(seed, epoch, index)``.

    Seeding per item (rather than drawing from one stream) makes an item independent of the
    order in which a DataLoader's workers ask for items, so a fixed seed gives a reproducible
    set however it is loaded; changing ``epoch`` gives fresh crops for training.
    """
    return np.random.default_rng([int(seed), int(epoch), int(index)])


def read_image(path: str | Path, grey: bool = True, warn_colour: bool = False) -> np.ndarray:
    """Read one image file to a float32 ``(C, H, W)`` array in ``[0, 1]``.

    Args:
        path: image file readable by ``skimage.io.imread`` (imageio under the hood).
        grey: one luminance channel if ``True``, else three RGB channels.
        warn_colour: with ``grey``, warn (``UserWarning`` naming ``path``) when a colour image is
            reduced to grey; a grey picture stored as RGB (equal channels) loses nothing and
            does not warn. Off for datasets, where converting colour photographs is the point.

    Returns:
        ``(1, H, W)`` or ``(3, H, W)`` float32 array.

    Raises:
        ValueError: naming ``path`` if the file cannot be decoded, is not a 2-D image, or holds
            NaN or infinite values (float TIFFs can; both are counted).
    """
    from skimage.io import imread

    path = Path(path)
    if path.is_file() and path.stat().st_size == 0:
        raise ValueError(f"image file {path} is empty (0 bytes)")
    try:
        image = imread(str(path))
    except Exception as err:  # imageio / Pillow raise many types for a bad file, some over many lines
        first = next((line.strip() for line in str(err).splitlines() if line.strip()), type(err).__name__)
        raise ValueError(f"could not read image file {path}: {first}") from err
    if np.issubdtype(image.dtype, np.inexact) and not np.all(np.isfinite(image)):
        # Checked before the conversion, whose clipping would turn +-Inf into 1 and 0 silently.
        nan, inf = int(np.isnan(image).sum()), int(np.isinf(image).sum())
        raise ValueError(f"image file {path} contains {nan} NaN and {inf} infinite value(s) out of {image.size}; "
                         "images need finite pixel values (replace them, e.g. with numpy.nan_to_num, and save again)")
    try:
        chw = as_chw_float32(image, grey=grey)
    except ValueError as err:
        raise ValueError(f"unsupported image in {path}: {err}") from err
    if grey and warn_colour and image.ndim == 3 and image.shape[-1] in (3, 4):
        colour = image[..., :3]
        if not (np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 0], colour[..., 2])):
            warnings.warn(f"{path} is a colour image; it was converted to grey (ITU-R 709 luminance) because grey "
                          "images were asked for", UserWarning, stacklevel=2)
    return chw


class ImageFolder(Dataset):
    """Every image file under a folder, as ``(C, H, W)`` float32 tensors in ``[0, 1]``.

    Files are found recursively (so BSD300's ``images/train`` layout works when given
    ``images``) by extension, case-insensitively, and sorted by their path relative to ``root``
    so that indices are stable across machines. Files are decoded on every access (nothing is
    cached), which keeps memory flat for large collections.

    Args:
        root: folder to search.
        grey: one luminance channel if ``True``, else three RGB channels (grey files repeated).
        patch_size: if given, each item is a ``patch_size`` crop (int or ``(h, w)``, pixels);
            if ``None`` items are whole images, whose sizes may differ (batch with
            ``batch_size=1`` or pass ``patch_size``).
        extensions: accepted file extensions, without dots.
        crop: ``"random"`` (crop position drawn from ``(seed, epoch, index)``, see
            :meth:`set_epoch`) or ``"center"``.
        seed: seed of the random crops.

    Raises:
        ValueError: naming ``root`` if it is not a folder or holds no matching files.
        ValueError: when an item is read, naming the file if it is corrupt or smaller than
            ``patch_size``.
    """

    def __init__(self, root: str | Path, grey: bool = True,
                 patch_size: int | Sequence[int] | None = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS, crop: str = "random",
                 seed: int = 0):
        self.root = Path(root)
        if not self.root.is_dir():
            raise ValueError(f"image folder {self.root} does not exist or is not a folder")
        if crop not in ("random", "center"):
            raise ValueError(f"crop must be 'random' or 'center', got {crop!r}")
        wanted = {ext.lower().lstrip(".") for ext in extensions}
        self.files = sorted(
            (p for p in self.root.rglob("*")
             if p.is_file() and p.suffix.lower().lstrip(".") in wanted),
            key=lambda p: p.relative_to(self.root).as_posix(),
        )
        if not self.files:
            raise ValueError(
                f"no image files with extensions {sorted(wanted)} found in folder {self.root}"
            )
        self.grey = grey
        self.patch_size = None if patch_size is None else _pair(patch_size)
        self.crop = crop
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Draw new random crops: items become a function of ``(seed, epoch, index)``."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        """Image ``index`` (in sorted-path order): float32 ``(C, H, W)`` or ``(C, h, w)``."""
        index = range(len(self.files))[index]  # negative indices -> the same seed as positive
        path = self.files[index]
        image = read_image(path, grey=self.grey)
        if self.patch_size is not None:
            try:
                if self.crop == "center":
                    image = center_crop(image, self.patch_size)
                else:
                    image = random_crop(image, self.patch_size,
                                        index_rng(self.seed, self.epoch, index))
            except ValueError as err:
                raise ValueError(f"{path}: {err}") from err
        return torch.from_numpy(np.ascontiguousarray(image))
