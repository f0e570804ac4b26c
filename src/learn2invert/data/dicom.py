"""Real scans from DICOM files, as held-out truths for out-of-distribution scoring.

pydicom (an optional extra: ``pip install 'learn2invert[dicom]'``) ships a few real, anonymised
scans among its test files: a 64 x 64 MR slice (``MR_small.dcm``) and a 128 x 128 CT slice
(``CT_small.dcm``). Nobody here made them and no model here trains on them, so they tell how a
model trained on the embedded template generalises. A ``root`` of ``pydicom:NAME`` names such a
file; any other ``root`` is a DICOM file or a folder of them (``*.dcm``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .brain import center_crop_or_pad

__all__ = ["DicomImages", "read_dicom", "resolve_dicom_paths"]

PYDICOM_PREFIX = "pydicom:"


def _pydicom():
    try:
        import pydicom
    except ImportError as err:
        raise ImportError("reading DICOM files needs pydicom: pip install 'learn2invert[dicom]'") from err
    return pydicom


def resolve_dicom_paths(root: str | Path) -> list[Path]:
    """The DICOM files named by ``root``: ``pydicom:NAME``, a file, or a folder (its ``*.dcm``, sorted)."""
    root = str(root)
    if root.startswith(PYDICOM_PREFIX):
        _pydicom()
        from pydicom.data import get_testdata_file

        name = root[len(PYDICOM_PREFIX):]
        path = get_testdata_file(name)
        if path is None:
            raise ValueError(f"pydicom has no test file named {name!r} (e.g. MR_small.dcm, CT_small.dcm)")
        return [Path(path)]
    path = Path(root)
    if path.is_dir():
        files = sorted(path.glob("*.dcm"))
        if not files:
            raise ValueError(f"no *.dcm files in {path}")
        return files
    if not path.is_file():
        raise ValueError(f"DICOM file or folder {path} does not exist")
    return [path]


def read_dicom(path: str | Path) -> tuple[np.ndarray, tuple[float, float]]:
    """One DICOM image in its stored units: returns ``(image, pixel_spacing_mm)``.

    ``image`` is float64 ``(H, W)``: the stored values times ``RescaleSlope`` plus
    ``RescaleIntercept`` (Hounsfield units for CT). ``pixel_spacing_mm`` is (row, column) spacing,
    ``(nan, nan)`` where the file gives none.

    Raises:
        ValueError: naming the file if it is not DICOM, holds no pixel data, is compressed with a
            codec that is not installed, or is not a single 2D greyscale image.
    """
    pydicom = _pydicom()
    path = Path(path)
    try:
        dataset = pydicom.dcmread(str(path))
        pixels = dataset.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom raises many types; the user needs the file name
        raise ValueError(f"cannot read the DICOM image {path}: {err}") from err
    if pixels.ndim != 2:
        raise ValueError(f"{path}: expected one 2D greyscale image, got pixel data of shape {pixels.shape}")
    slope = float(getattr(dataset, "RescaleSlope", 1.0) or 1.0)
    intercept = float(getattr(dataset, "RescaleIntercept", 0.0) or 0.0)
    spacing = getattr(dataset, "PixelSpacing", None)
    spacing = (float(spacing[0]), float(spacing[1])) if spacing is not None else (float("nan"), float("nan"))
    return pixels.astype(np.float64) * slope + intercept, spacing


class DicomImages(Dataset):
    """DICOM images as ground truths in [0, 1], each repeated ``repeats`` times.

    Items are float32 ``(2, H, W)`` (real, imaginary = 0; MRI magnitude images) with
    ``complex=True``, else ``(1, H, W)``. Each image is scaled to [0, 1] by its own minimum and
    maximum. Repeats let one scan be measured with several masks or noise draws: item ``k`` is
    image ``k // repeats``.

    Args:
        root: ``pydicom:NAME``, a DICOM file or a folder of ``*.dcm`` files.
        complex: two channels (MRI) or one (CT, photographs).
        size: centre-crop or zero-pad to ``(H, W)`` (one int for a square); ``None`` keeps the file's size.
        repeats: items per image.

    Attributes:
        paths: the files, in item order.
        pixel_spacing: (row, column) spacing in mm of each file.
    """

    def __init__(self, root: str | Path, complex: bool = True, size: int | tuple[int, int] | None = None,
                 repeats: int = 1) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        self.paths = resolve_dicom_paths(root)
        self.complex, self.repeats = bool(complex), int(repeats)
        self.size = (int(size), int(size)) if isinstance(size, int) else (tuple(size) if size is not None else None)
        self.images, self.pixel_spacing = [], []
        for path in self.paths:
            image, spacing = read_dicom(path)
            low, high = float(image.min()), float(image.max())
            if high <= low:
                raise ValueError(f"{path}: the image is constant ({low}); nothing to reconstruct")
            tensor = torch.from_numpy((image - low) / (high - low)).float()[None]
            self.images.append(center_crop_or_pad(tensor, self.size) if self.size is not None else tensor)
            self.pixel_spacing.append(spacing)

    def __len__(self) -> int:
        return len(self.images) * self.repeats

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        image = self.images[(index % len(self)) // self.repeats]
        return torch.cat([image, torch.zeros_like(image)]) if self.complex else image.clone()
