"""``data.skip_bad_files``: train on past unreadable files instead of stopping, and count them.

The datasets raise ``ValueError`` naming the file when an item cannot be read (a corrupt PNG,
a truncated NIfTI volume, a damaged HDF5 file). :class:`SkipBadFiles` catches that, remembers
the item as bad, warns once per item with the dataset's message (so the path is reported) and
returns the next readable item instead, so batches keep their size. The choice of replacement
depends only on the index, so runs stay reproducible.
"""
from __future__ import annotations

import warnings

from torch.utils.data import Dataset

__all__ = ["SkipBadFiles"]


class SkipBadFiles(Dataset):
    """Wrap ``dataset`` so that items whose reading raises ``ValueError`` are skipped.

    Item ``i`` is the first readable item among ``i, i + 1, ...`` (wrapping around). Every bad
    item is read once: after its first failure it is skipped without another attempt.

    Attributes:
        bad: ``{index: message}`` of the items skipped so far (the message names the file).

    Raises:
        ValueError: from ``__getitem__`` if no item at all can be read.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.bad: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(epoch)

    @property
    def skipped(self) -> list[str]:
        """Messages of the skipped items, in index order (each names its file)."""
        return [self.bad[i] for i in sorted(self.bad)]

    def __getitem__(self, index: int):
        n = len(self.dataset)
        index = range(n)[index]
        for offset in range(n):
            i = (index + offset) % n
            if i in self.bad:
                continue
            try:
                return self.dataset[i]
            except ValueError as err:
                self.bad[i] = str(err)
                warnings.warn(f"skipping unreadable item {i} (data.skip_bad_files): {err}", RuntimeWarning, stacklevel=2)
        raise ValueError(f"data.skip_bad_files: none of the {n} items could be read; first problem: "
                         f"{self.skipped[0] if self.bad else 'none recorded'}")
