"""Synthetic CT phantoms: the random-ellipses benchmark and the Shepp-Logan head phantom.

The ellipses distribution is that of dival's ``EllipsesDataset`` (Leuschner et al., "The LoDoPaB-CT
dataset" / the dival library, ``dival/datasets/ellipses_dataset.py``, current version), which
draws each image with ``odl.phantom.ellipsoid_phantom`` as:

* number of ellipses ``n = min(Poisson(40), 70)``;
* for each ellipse: value ``v ~ U(-0.4, 1.0)``, half-axes ``a1, a2 ~ 0.2 * Exp(1)`` (i.i.d.),
  centre ``x0, y0 ~ U(-0.9, 0.9)``, rotation ``theta ~ U(0, 2 pi)``;
* the ellipse indicators times their values are *summed* (overlaps add, so sums can be
  negative or exceed 1);
* normalisation of the foreground: every non-zero pixel is shifted by ``-min(image)`` (the
  minimum over all pixels, background zeros included), then the image is divided by its
  maximum. The background stays exactly 0 and the result lies in ``[0, 1]``. (This is a shift,
  not a clip at 0: negative-valued regions stay visible as darker structures.)

Geometry follows ODL's 2-D ``ellipsoid_phantom``: coordinates are normalised so that the first
and last pixel centres along each axis sit at -1 and +1; array axis 0 is ``x`` and axis 1 is
``y``; a pixel ``(x, y)`` is inside ellipse ``(a1, a2, x0, y0, theta)`` when
``u^2 / a1^2 + w^2 / a2^2 <= 1`` with ``u = cos(theta) dx + sin(theta) dy`` and
``w = -sin(theta) dx + cos(theta) dy`` (``dx = x - x0``, ``dy = y - y0``). Samples are drawn
with numpy's ``Generator`` rather than dival's ``RandomState``, so individual images differ from
dival's while the distribution is the same.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = [
    "EllipsesDataset",
    "random_ellipse_parameters",
    "random_ellipses",
    "rasterise_ellipses",
    "shepp_logan",
]

# dival's constants (see the module docstring).
_MEAN_ELLIPSES = 40
_MAX_ELLIPSES = 70
_VALUE_RANGE = (-0.4, 1.0)
_AXIS_SCALE = 0.2
_CENTRE_RANGE = (-0.9, 0.9)

# Elements of one (ellipses, H, W) block; bounds the rasteriser's scratch memory (~32 MiB).
_BLOCK_ELEMENTS = 1 << 22

# dival's default split lengths, used when EllipsesDataset gets no length.
_DIVAL_LENGTHS = {"train": 32000, "validation": 3200, "test": 3200}
_SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}


def _as_generator(rng: np.random.Generator | int | None) -> np.random.Generator:
    if isinstance(rng, np.random.Generator):
        return rng
    return np.random.default_rng(rng)


def random_ellipse_parameters(rng: np.random.Generator | int | None = None) -> np.ndarray:
    """Draw the ellipses of one phantom from dival's distribution (module docstring).

    Args:
        rng: numpy generator, an int seed, or ``None`` for fresh OS entropy.

    Returns:
        float64 array ``(n, 6)``, columns ``(value, a1, a2, x0, y0, theta)``: value in image
        units before normalisation, half-axes and centre in normalised coordinates (the image
        spans ``[-1, 1]``), ``theta`` in radians. ``n`` may be 0.
    """
    rng = _as_generator(rng)
    n = min(int(rng.poisson(_MEAN_ELLIPSES)), _MAX_ELLIPSES)
    value = rng.uniform(*_VALUE_RANGE, n)
    axes = _AXIS_SCALE * rng.exponential(1.0, (n, 2))
    centre = rng.uniform(*_CENTRE_RANGE, (n, 2))
    theta = rng.uniform(0.0, 2.0 * np.pi, n)
    return np.column_stack([value, axes, centre, theta])


def rasterise_ellipses(ellipses: np.ndarray, size: int) -> np.ndarray:
    """Sum of filled ellipses on a ``size x size`` pixel grid (no normalisation).

    Args:
        ellipses: ``(n, 6)`` array of ``(value, a1, a2, x0, y0, theta)`` in ODL's convention
            (module docstring).
        size: pixels per side.

    Returns:
        float64 array ``(size, size)``; pixel ``[i, j]`` is the sum of the values of the
        ellipses containing the point ``(x_i, y_j)``, ``x_i = y_i = -1 + 2 i / (size - 1)``.
    """
    ellipses = np.asarray(ellipses, dtype=np.float64).reshape(-1, 6)
    coords = np.linspace(-1.0, 1.0, size) if size > 1 else np.zeros(1)
    image = np.zeros((size, size))
    block = max(1, _BLOCK_ELEMENTS // (size * size))
    for start in range(0, len(ellipses), block):
        value, a1, a2, x0, y0, theta = ellipses[start : start + block].T[:, :, None, None]
        dx = coords[None, :, None] - x0  # (k, size, 1): varies along axis 0
        dy = coords[None, None, :] - y0  # (k, 1, size): varies along axis 1
        cos, sin = np.cos(theta), np.sin(theta)
        # A zero half-axis is a measure-zero draw; the floor keeps it an empty ellipse, not NaN.
        a1 = np.maximum(a1, 1e-12)
        a2 = np.maximum(a2, 1e-12)
        radius = ((cos * dx + sin * dy) / a1) ** 2 + ((cos * dy - sin * dx) / a2) ** 2
        image += np.einsum("kij,k->ij", (radius <= 1.0).astype(np.float64), value[:, 0, 0])
    return image


def _normalise_foreground(image: np.ndarray) -> np.ndarray:
    # dival's normalisation (module docstring). An image with no ellipse on the grid has
    # max 0 after the shift; dival would divide by zero, here it stays all-zero.
    image = image.copy()
    image[image != 0.0] -= image.min()
    peak = image.max()
    if peak > 0.0:
        image /= peak
    return image


def random_ellipses(size: int = 128,
                    rng: np.random.Generator | int | None = None) -> torch.Tensor:
    """One random-ellipses phantom (dival's ``EllipsesDataset`` distribution).

    Args:
        size: pixels per side (dival's default is 128).
        rng: numpy generator, an int seed (same seed, same image), or ``None``.

    Returns:
        float32 tensor ``(1, size, size)``, background 0, values in ``[0, 1]`` with maximum 1
        (unless no ellipse touches the grid, then all zeros).
    """
    image = rasterise_ellipses(random_ellipse_parameters(rng), size)
    return torch.from_numpy(_normalise_foreground(image).astype(np.float32)[None])


class EllipsesDataset(Dataset):
    """Random-ellipses phantoms with random access: item ``i`` depends only on its seed.

    Item ``i`` of split ``s`` is drawn from the generator seeded with
    ``(seed, code(s), epoch, i)``, so the three splits never share a stream, a validation or
    test set is the same however it is loaded, and :meth:`set_epoch` gives a training loop fresh
    phantoms each epoch.

    Args:
        size: pixels per side.
        length: number of items; ``None`` takes dival's default for the split
            (32000 train, 3200 validation, 3200 test).
        seed: base seed.
        split: ``"train"``, ``"validation"`` or ``"test"``.

    Items are float32 tensors ``(1, size, size)`` in ``[0, 1]``.
    """

    def __init__(self, size: int = 128, length: int | None = None, seed: int = 0,
                 split: str = "train"):
        if split not in _SPLIT_CODES:
            raise ValueError(f"split must be one of {sorted(_SPLIT_CODES)}, got {split!r}")
        self.size = int(size)
        self.length = _DIVAL_LENGTHS[split] if length is None else int(length)
        self.seed = int(seed)
        self.split = split
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select a new, equally reproducible set of phantoms."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        """Phantom ``index``: float32 ``(1, size, size)`` in ``[0, 1]``."""
        index = range(self.length)[index]
        rng = np.random.default_rng([self.seed, _SPLIT_CODES[self.split], self.epoch, index])
        return random_ellipses(self.size, rng)


@lru_cache(maxsize=8)
def _shepp_logan_array(size: int) -> np.ndarray:
    import skimage.data
    from skimage.transform import resize

    # 400x400 float64 in [0, 1], bundled with scikit-image (no download).
    phantom = skimage.data.shepp_logan_phantom()
    # Gaussian pre-filtering when shrinking avoids aliasing the thin skull and small ellipses.
    resized = resize(phantom, (size, size), order=1, anti_aliasing=True, mode="reflect")
    array = np.clip(resized, 0.0, 1.0).astype(np.float32)[None]
    array.setflags(write=False)
    return array


def shepp_logan(size: int = 128) -> torch.Tensor:
    """The (modified) Shepp-Logan head phantom of scikit-image, resized.

    Args:
        size: pixels per side; the 400x400 original is resampled bilinearly, with anti-aliasing
            when shrinking.

    Returns:
        float32 tensor ``(1, size, size)`` in ``[0, 1]`` (background 0; the skull's maximum of 1
        is slightly lowered by the anti-aliasing filter at small sizes).
    """
    return torch.from_numpy(_shepp_logan_array(int(size)).copy())
