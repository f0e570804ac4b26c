"""Dead-leaves images: synthetic training images with the edge and scale statistics of photographs.

The dead-leaves model (Matheron; Lee, Mumford & Huang, "Occlusion models for natural images",
2001) stacks opaque disks of random grey value whose radii follow a power law ``p(r) ~ r^-3``
between ``r_min`` and ``r_max``: the result is scale invariant and made of flat regions with sharp
occluding edges, like the piecewise-smooth parts of photographs. Denoisers trained on such images
alone come within about a dB of ones trained on photographs (Achddou, Gousseau & Ladjal,
"Synthetic images as a regularity prior for image restoration neural networks", 2021); here they
are mixed into the few embedded photographs to widen what the training set shows
(:class:`~learn2invert.data.NaturalPatches` with ``dead_leaves``).

Disks are drawn front to back: each new disk fills only the pixels no earlier disk covered, which
is the same image as painting back to front and stops as soon as every pixel is covered.
"""
from __future__ import annotations

import numpy as np

__all__ = ["dead_leaves"]

# Disks drawn at most; whatever they leave uncovered (rare: tiny r_max) takes one last grey value.
_MAX_DISKS = 20_000


def _power_law_radius(rng: np.random.Generator, r_min: float, r_max: float) -> float:
    """One radius with density ``~ r^-3`` on ``[r_min, r_max]`` (inverse-CDF sampling)."""
    u = rng.random()
    return float((r_min**-2 - u * (r_min**-2 - r_max**-2)) ** -0.5)


def dead_leaves(size: int, rng: np.random.Generator, r_min: float = 1.0, r_max: float | None = None,
                blur: float = 0.0) -> np.ndarray:
    """One grey dead-leaves image, float32 ``(1, size, size)`` in ``[0, 1]``.

    Args:
        size: side of the square image, pixels.
        rng: the numpy generator every random draw comes from (same state, same image).
        r_min, r_max: radius range of the disks, pixels; ``r_max`` defaults to ``size``.
        blur: standard deviation (pixels) of a Gaussian blur applied last, to soften the
            edges as a lens would; 0 keeps them sharp.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    r_max = float(size) if r_max is None else float(r_max)
    if not 0 < r_min <= r_max:
        raise ValueError(f"need 0 < r_min <= r_max, got r_min={r_min}, r_max={r_max}")
    image = np.zeros((size, size), dtype=np.float32)
    uncovered = np.ones((size, size), dtype=bool)
    rows, cols = np.ogrid[:size, :size]
    for _ in range(_MAX_DISKS):
        radius = _power_law_radius(rng, r_min, r_max)
        # Centres range beyond the image by one radius, so edges of large disks cross it too.
        cy, cx = rng.uniform(-radius, size + radius, 2)
        value = rng.random()
        top, bottom = max(int(cy - radius), 0), min(int(cy + radius) + 1, size)
        left, right = max(int(cx - radius), 0), min(int(cx + radius) + 1, size)
        if top >= bottom or left >= right:
            continue
        inside = ((rows[top:bottom] - cy) ** 2 + (cols[:, left:right] - cx) ** 2) <= radius**2
        fill = inside & uncovered[top:bottom, left:right]
        image[top:bottom, left:right][fill] = value
        uncovered[top:bottom, left:right] &= ~fill
        if not uncovered.any():
            break
    else:
        image[uncovered] = rng.random()
    if blur > 0:
        from scipy.ndimage import gaussian_filter

        image = gaussian_filter(image, blur, mode="reflect").astype(np.float32)
    return image[None]
