"""What a training dataset yields: a ground-truth image, or a ground-truth image with its own measured data.

Most datasets yield the image alone, a tensor ``(C, H, W)`` (``(C, D, H, W)`` for volumes), and the
measurement is simulated from it. A dataset that holds real measurements to undersample
(:class:`~learn2invert.data.FastMRIImages` with ``own_coils``) yields a *measured item*, the dict
``{"image": (2, h, w), "kspace": (2, C, h, w)}``: the truth and the fully sampled multi-coil
k-space it came from. PyTorch's default collation turns a list of such dicts into one dict of
batched tensors, so the same helpers read single items and batches.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch.utils.data import default_collate

__all__ = ["measured_item", "split_item", "item_shape", "stack_items"]

IMAGE, KSPACE = "image", "kspace"


def measured_item(image: torch.Tensor, kspace: torch.Tensor) -> dict[str, torch.Tensor]:
    """The item of a ground-truth ``image`` ``(2, h, w)`` and its fully sampled coil ``kspace`` ``(2, C, h, w)``."""
    return {IMAGE: image, KSPACE: kspace}


def split_item(item: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(image, kspace)`` of an item or a collated batch; ``kspace`` is None for a plain image."""
    if isinstance(item, Mapping):
        return item[IMAGE], item[KSPACE]
    return item, None


def item_shape(item: Any) -> tuple[int, ...]:
    """The shape of an item's ground-truth image, e.g. ``(2, h, w)`` (what the solver is built for)."""
    return tuple(split_item(item)[0].shape)


def stack_items(items: list) -> Any:
    """A batch of items as a DataLoader makes it: stacked tensors, or a dict of stacked tensors."""
    return default_collate(items)
