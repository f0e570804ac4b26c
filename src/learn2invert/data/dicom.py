"""Real scans from DICOM files: single images, and series read as volumes.

pydicom (an optional extra: ``pip install 'learn2invert[dicom]'``) ships a few real, anonymised
scans among its test files: a 64 x 64 MR slice (``MR_small.dcm``) and a 128 x 128 CT slice
(``CT_small.dcm``). Nobody here made them and no model here trains on them, so they tell how a
model trained on the embedded template generalises. A ``root`` of ``pydicom:NAME`` names such a
file; any other ``root`` is a DICOM file or a folder of them (``*.dcm``).

Values are always in the file's stored units after ``RescaleSlope`` and ``RescaleIntercept``
(Hounsfield units for CT). A **series** (a folder of single-frame slices, or one multi-frame
file) is read by :func:`load_dicom_series` as a volume ``(slices, H, W)`` sorted along the slice
normal, with its voxel spacing and a NIfTI-style affine. Every failure (not DICOM, no pixel data,
``Rows`` / ``Columns`` that do not match the pixel data, compressed pixel data without a decoder,
mixed series in one folder) is a ``ValueError`` naming the file.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .brain import center_crop_or_pad

__all__ = ["DicomImages", "DicomSeries", "load_dicom_series", "read_dicom", "read_dicom_series",
           "resolve_dicom_paths", "resolve_dicom_series", "to_unit_range"]

PYDICOM_PREFIX = "pydicom:"
PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
CODEC_HINT = "install a decoder: pip install 'pylibjpeg[all]' (JPEG, JPEG-LS, JPEG 2000, RLE) or python-gdcm"
POSITION_TOLERANCE_MM = 1e-3  # two slices closer than this along the normal are at the same position
ORIENTATION_TOLERANCE = 1e-3  # direction cosines that differ by more belong to another stack


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


def resolve_dicom_series(root: str | Path) -> list[Path]:
    """The series named by ``root``, each one file or one folder for :func:`load_dicom_series`.

    ``pydicom:NAME`` or a file: that file (a multi-frame volume, or one slice). A folder holding
    ``*.dcm`` files: that folder, one series. A folder without any: each of its subfolders that
    holds ``*.dcm`` files (sorted by name), one series each.
    """
    if str(root).startswith(PYDICOM_PREFIX) or Path(root).is_file():
        return resolve_dicom_paths(root)
    path = Path(root)
    if not path.is_dir():
        raise ValueError(f"DICOM file or folder {path} does not exist")
    if any(path.glob("*.dcm")):
        return [path]
    folders = sorted(p for p in path.iterdir() if p.is_dir() and any(p.glob("*.dcm")))
    if not folders:
        raise ValueError(f"no *.dcm files in {path} or in its subfolders")
    return folders


# ------------------------------------------------------------------------------ one file's frames

@dataclass(frozen=True)
class _Frame:
    """One 2D frame of a DICOM file with the geometry that places it in the patient (LPS, mm)."""

    pixels: np.ndarray  # float64 (H, W), stored values x RescaleSlope + RescaleIntercept
    path: Path
    index: int  # the frame's index in its file (0 for single-frame files)
    spacing: tuple[float, float]  # (row, column) mm, NaN where unknown
    position: np.ndarray | None  # ImagePositionPatient (3,): centre of the first pixel
    orientation: np.ndarray | None  # ImageOrientationPatient (6,): row then column direction cosines
    instance: int | None  # InstanceNumber
    thickness: float | None  # SliceThickness, mm
    between: float | None  # SpacingBetweenSlices, mm


def _present(value) -> bool:
    return value is not None and not (isinstance(value, str) and value.strip() == "") and not (
        hasattr(value, "__len__") and not isinstance(value, str) and len(value) == 0)


def _lookup(dataset, frame: int, group: str, keyword: str):
    """``keyword`` for ``frame``: from the per-frame functional group ``group`` (enhanced
    multi-frame files), else the shared one, else the top-level attribute; ``None`` if absent."""
    for sequence, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        groups = dataset.get(sequence)
        if groups is not None and len(groups) > index:
            items = groups[index].get(group)
            if items is not None and len(items) > 0 and _present(items[0].get(keyword)):
                return items[0].get(keyword)
    value = dataset.get(keyword)
    return value if _present(value) else None


def _per_frame(dataset, frame: int, group: str) -> bool:
    """Whether an enhanced multi-frame dataset gives ``group`` for ``frame`` itself."""
    groups = dataset.get("PerFrameFunctionalGroupsSequence")
    return groups is not None and len(groups) > frame and len(groups[frame].get(group) or []) > 0


def _numbers(value, count: int, path: Path, keyword: str) -> np.ndarray | None:
    if value is None:
        return None
    try:
        numbers = np.array([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: {keyword} {value!r} is not {count} numbers ({err})") from None
    if numbers.shape != (count,) or not np.isfinite(numbers).all():
        raise ValueError(f"{path}: {keyword} must be {count} finite numbers, got {value!r}")
    return numbers


def _number(value, path: Path, keyword: str) -> float | None:
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: {keyword} {value!r} is not a number") from None


def _read_dataset(path: Path):
    """``pydicom.dcmread`` with any failure turned into a ValueError naming the file."""
    pydicom = _pydicom()
    try:
        return pydicom.dcmread(str(path))
    except Exception as err:  # noqa: BLE001 - pydicom raises many types; the user needs the file name
        raise ValueError(f"cannot read the DICOM image {path}: {err}") from err


def _decode(dataset, path: Path) -> np.ndarray:
    """The stored pixel values ``(frames, Rows, Columns)`` of a greyscale DICOM dataset.

    Checked before decoding: pixel data is present, one sample per pixel, ``Rows`` and
    ``Columns`` are positive, and for uncompressed transfer syntaxes the pixel data holds exactly
    ``Rows x Columns x NumberOfFrames`` values of ``BitsAllocated`` bits (plus one padding byte
    at most): pydicom would otherwise drop the excess, or read extra frames, with only a warning.
    """
    if not any(keyword in dataset for keyword in PIXEL_KEYWORDS):
        raise ValueError(f"{path}: no pixel data (the PixelData element is missing: a truncated file, or a DICOM "
                         "object that is not an image)")
    samples = int(dataset.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise ValueError(f"{path}: {samples} samples per pixel ({dataset.get('PhotometricInterpretation', '?')}); "
                         "only greyscale images are read")
    rows, columns = dataset.get("Rows"), dataset.get("Columns")
    for keyword, value in (("Rows", rows), ("Columns", columns)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{path}: {keyword} must be a positive number of pixels, got {value!r}")
    frames = int(dataset.get("NumberOfFrames", 1) or 1)
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    compressed = bool(syntax is not None and syntax.is_compressed)
    bits = dataset.get("BitsAllocated")
    if "PixelData" in dataset and syntax is not None and not compressed and isinstance(bits, int) and bits > 0:
        expected = math.ceil(rows * columns * frames * bits / 8)
        held = len(dataset.PixelData)
        if held not in (expected, expected + 1):
            raise ValueError(f"{path}: Rows x Columns = {rows} x {columns} ({frames} frame(s) of {bits}-bit pixels) "
                             f"needs {expected} bytes of pixel data, but the file holds {held}: its header does not "
                             "match its pixel data (or the file is truncated)")
    try:
        pixels = np.asarray(dataset.pixel_array)
    except Exception as err:  # noqa: BLE001 - as above: one message naming the file
        reason = " ".join(str(err).split())
        if compressed:
            raise ValueError(f"cannot decode the compressed DICOM image {path} ({syntax.name}, transfer syntax "
                             f"{syntax}): {reason}; {CODEC_HINT}") from err
        raise ValueError(f"cannot read the DICOM image {path}: {reason}") from err
    pixels = pixels.reshape(1, *pixels.shape) if pixels.ndim == 2 else pixels
    if pixels.shape != (frames, rows, columns):
        raise ValueError(f"{path}: decoded pixel data of shape {pixels.shape}, but Rows x Columns x NumberOfFrames "
                         f"says {(frames, rows, columns)}")
    return pixels


def _frames(dataset, path: Path) -> list[_Frame]:
    """Every frame of a greyscale DICOM dataset, rescaled to its stored units, with its geometry."""
    stored = _decode(dataset, path)
    frames = []
    for index, raw in enumerate(stored):
        slope = _number(_lookup(dataset, index, "PixelValueTransformationSequence", "RescaleSlope"), path,
                        "RescaleSlope")
        intercept = _number(_lookup(dataset, index, "PixelValueTransformationSequence", "RescaleIntercept"), path,
                            "RescaleIntercept")
        pixels = raw.astype(np.float64) * (slope or 1.0) + (intercept or 0.0)  # a slope of 0 means none given
        bad = ~np.isfinite(pixels)
        if bad.any():
            raise ValueError(f"{path}: frame {index} has {int(bad.sum())} NaN or infinite pixel values")
        spacing = _numbers(_lookup(dataset, index, "PixelMeasuresSequence", "PixelSpacing"), 2, path, "PixelSpacing")
        instance = dataset.get("InstanceNumber")
        # A classic multi-frame file has one ImagePositionPatient for all its frames: no per-frame
        # positions, so its frames keep their stored order.
        positioned = len(stored) == 1 or _per_frame(dataset, index, "PlanePositionSequence")
        frames.append(_Frame(
            pixels=pixels, path=path, index=index,
            spacing=(float(spacing[0]), float(spacing[1])) if spacing is not None else (math.nan, math.nan),
            position=_numbers(_lookup(dataset, index, "PlanePositionSequence", "ImagePositionPatient"), 3, path,
                              "ImagePositionPatient") if positioned else None,
            orientation=_numbers(_lookup(dataset, index, "PlaneOrientationSequence", "ImageOrientationPatient"), 6,
                                 path, "ImageOrientationPatient"),
            instance=int(instance) if _present(instance) else None,
            thickness=_number(_lookup(dataset, index, "PixelMeasuresSequence", "SliceThickness"), path,
                              "SliceThickness"),
            between=_number(_lookup(dataset, index, "PixelMeasuresSequence", "SpacingBetweenSlices"), path,
                            "SpacingBetweenSlices")))
    return frames


def read_dicom(path: str | Path) -> tuple[np.ndarray, tuple[float, float]]:
    """One DICOM image in its stored units: returns ``(image, pixel_spacing_mm)``.

    ``image`` is float64 ``(H, W)``: the stored values times ``RescaleSlope`` plus
    ``RescaleIntercept`` (Hounsfield units for CT). ``pixel_spacing_mm`` is (row, column) spacing,
    ``(nan, nan)`` where the file gives none.

    Raises:
        ValueError: naming the file if it is not DICOM, holds no pixel data, has ``Rows`` /
            ``Columns`` that do not match its pixel data, is compressed with a codec that is not
            installed, or is not a single 2D greyscale image (a multi-frame file is a volume:
            :func:`read_dicom_series`).
    """
    path = Path(path)
    frames = _frames(_read_dataset(path), path)
    if len(frames) != 1:
        raise ValueError(f"{path}: expected one 2D greyscale image, got {len(frames)} frames of "
                         f"{frames[0].pixels.shape}; read a multi-frame file as a volume with read_dicom_series")
    return frames[0].pixels, frames[0].spacing


# ------------------------------------------------------------------------------------- series

@dataclass(frozen=True)
class DicomSeries:
    """One DICOM series read as a volume by :func:`load_dicom_series`.

    Attributes:
        volume: float64 ``(slices, H, W)`` in stored units (each slice's rescale slope and
            intercept applied), slices in increasing position along the slice normal.
        spacing: ``(slice, row, column)`` voxel spacing in mm; NaN where the files give none.
        affine: ``(4, 4)`` voxel ``(column, row, slice)`` -> RAS+ world (mm) matrix, as NIfTI
            stores it (see :meth:`save_nifti`); from ``ImagePositionPatient`` and
            ``ImageOrientationPatient`` where the files give them, else diagonal spacings (1 mm
            where unknown).
        slices: ``(file, frame)`` of each slice of ``volume``, in order.
        order: how the slices were sorted: ``"position"`` (along the normal), ``"InstanceNumber"``,
            ``"file name"`` or ``"frame order"`` (one multi-frame file without positions).
    """

    volume: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    slices: tuple[tuple[Path, int], ...]
    order: str

    def save_nifti(self, path: str | Path, volume: np.ndarray | torch.Tensor | None = None) -> None:
        """Write ``volume`` (default: :attr:`volume`), real ``(slices, H, W)`` on this series'
        grid, as NIfTI-1 float32 in (column, row, slice) voxel order with :attr:`affine` (units mm),
        so that its zooms are the (column, row, slice) spacing and it overlays on the scan."""
        import nibabel as nib

        data = self.volume if volume is None else volume
        data = data.detach().cpu().numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        if data.shape != self.volume.shape:
            raise ValueError(f"expected a volume of the series' shape {self.volume.shape}, got {data.shape}")
        image = nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0), dtype=np.float32), self.affine)
        image.set_sform(self.affine, code=1)  # scanner coordinates
        image.set_qform(self.affine, code=1)
        image.header.set_xyzt_units(xyz="mm")
        nib.save(image, str(path))


def _check_same_series(where: str, first: tuple[Path, object], path: Path, dataset) -> None:
    """Refuse a file of another series, or of another image size, than the folder's first file."""
    first_path, first_set = first
    uid, first_uid = dataset.get("SeriesInstanceUID"), first_set.get("SeriesInstanceUID")
    if _present(uid) and _present(first_uid) and str(uid) != str(first_uid):
        raise ValueError(f"{where}: mixed series: {path.name} has SeriesInstanceUID {uid} but {first_path.name} has "
                         f"{first_uid}; put each series in its own folder")
    size, first_size = (dataset.get("Rows"), dataset.get("Columns")), (first_set.get("Rows"), first_set.get("Columns"))
    if size != first_size:
        raise ValueError(f"{where}: {path.name} is {size[0]} x {size[1]} pixels (Rows x Columns) but {first_path.name} "
                         f"is {first_size[0]} x {first_size[1]}: one series has one image size")


def _describe(frame: _Frame, multi: bool) -> str:
    return f"{frame.path.name} frame {frame.index}" if multi else frame.path.name


def _sort(where: str, frames: list[_Frame], files: int) -> tuple[list[_Frame], str, np.ndarray | None]:
    """Frames sorted along the slice normal when every one has a position and orientation (then
    also their positions along it), else by InstanceNumber, else by file name and frame."""
    multi = len(frames) > files
    if all(f.position is not None and f.orientation is not None for f in frames):
        reference = frames[0]
        for f in frames[1:]:
            if not np.allclose(f.orientation, reference.orientation, atol=ORIENTATION_TOLERANCE):
                raise ValueError(f"{where}: {_describe(f, multi)} has ImageOrientationPatient "
                                 f"{f.orientation.tolist()} but {_describe(reference, multi)} has "
                                 f"{reference.orientation.tolist()}: not one stack of parallel slices")
        normal = np.cross(reference.orientation[:3], reference.orientation[3:])
        ranked = sorted(zip((float(f.position @ normal) for f in frames), range(len(frames))))
        for (a, i), (b, j) in zip(ranked, ranked[1:]):
            if b - a < POSITION_TOLERANCE_MM:
                raise ValueError(f"{where}: {_describe(frames[i], multi)} and {_describe(frames[j], multi)} lie at the "
                                 f"same position along the slice normal ({a:.3f} mm): several images per position "
                                 "(echoes, time points) are not one volume; put each in its own folder")
        return [frames[i] for _, i in ranked], "position", np.array([p for p, _ in ranked])
    if files > 1 and all(f.instance is not None for f in frames):
        return sorted(frames, key=lambda f: (f.instance, f.path.name, f.index)), "InstanceNumber", None
    return (sorted(frames, key=lambda f: (f.path.name, f.index)), "file name" if files > 1 else "frame order", None)


def load_dicom_series(root: str | Path) -> DicomSeries:
    """Read one DICOM series as a volume: a folder of single-frame ``*.dcm`` slices, or one file
    (multi-frame: a volume; single-frame: a volume of one slice), or ``pydicom:NAME``.

    Slices are sorted by their position along the slice normal (``ImagePositionPatient``
    projected on the cross product of the two ``ImageOrientationPatient`` directions), falling
    back to ``InstanceNumber``, then to the file name. The slice spacing is the median distance
    between neighbouring positions (a warning names the folder when they differ by more than
    1 %), else ``SpacingBetweenSlices``, else ``SliceThickness``. Enhanced multi-frame files give
    the same attributes per frame in their functional groups, which are read too; a classic
    multi-frame file (one position for all frames) keeps its stored frame order.

    Raises:
        ValueError: naming the folder and the file for a file of another series
            (``SeriesInstanceUID``), image size (``Rows`` / ``Columns``), pixel spacing or
            orientation than the first file, two slices at one position, and naming the file for
            any file :func:`read_dicom` refuses.
    """
    paths = resolve_dicom_paths(root)
    where = str(root)
    frames: list[_Frame] = []
    first = None
    for path in paths:
        dataset = _read_dataset(path)
        if first is None:
            first = (path, dataset)
        else:
            _check_same_series(where, first, path, dataset)
        frames.extend(_frames(dataset, path))
    multi = len(frames) > len(paths)
    for f in frames[1:]:
        if not np.allclose(f.spacing, frames[0].spacing, equal_nan=True):
            raise ValueError(f"{where}: {_describe(f, multi)} has PixelSpacing {list(f.spacing)} but "
                             f"{_describe(frames[0], multi)} has {list(frames[0].spacing)}: one series has one "
                             "pixel size")
    frames, order, positions = _sort(where, frames, len(paths))
    if positions is not None and len(positions) > 1:
        gaps = np.diff(positions)
        slice_spacing = float(np.median(gaps))
        if gaps.max() - gaps.min() > 0.01 * slice_spacing:
            warnings.warn(f"{where}: uneven slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm between "
                          f"neighbouring slices; a missing slice?): using the median, {slice_spacing:.3f} mm",
                          stacklevel=2)
    else:
        given = frames[0].between if frames[0].between is not None else frames[0].thickness
        slice_spacing = float(given) if given is not None and given > 0 else math.nan
    row, column = frames[0].spacing
    return DicomSeries(volume=np.stack([f.pixels for f in frames]), spacing=(slice_spacing, row, column),
                       affine=_affine(frames, (slice_spacing, row, column)),
                       slices=tuple((f.path, f.index) for f in frames), order=order)


def _affine(frames: list[_Frame], spacing: tuple[float, float, float]) -> np.ndarray:
    """Voxel ``(column, row, slice)`` -> RAS+ mm for frames sorted along their normal.

    DICOM positions are LPS: the first orientation triplet is the direction of increasing column
    index, the second of increasing row index; ``ImagePositionPatient`` is the centre of the
    first pixel. The slice column steps from the first to the last position (which keeps a
    gantry tilt), or along the normal by the slice spacing for one slice.
    """
    steps = [s if math.isfinite(s) and s > 0 else 1.0 for s in spacing]  # (slice, row, column)
    first = frames[0]
    if first.position is None or first.orientation is None:
        return np.diag([steps[2], steps[1], steps[0], 1.0])
    along_row, along_column = first.orientation[:3], first.orientation[3:]
    if len(frames) > 1 and frames[-1].position is not None:
        step = (frames[-1].position - first.position) / (len(frames) - 1)
    else:
        step = np.cross(along_row, along_column) * steps[0]
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = along_row * steps[2], along_column * steps[1], step, first.position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # LPS -> RAS


def read_dicom_series(root: str | Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    """A DICOM series as ``(volume, spacing_mm)``: float64 ``(slices, H, W)`` in stored units and
    the ``(slice, row, column)`` spacing (NaN where unknown). See :func:`load_dicom_series`."""
    series = load_dicom_series(root)
    return series.volume, series.spacing


def to_unit_range(values: np.ndarray, path: str | Path,
                  what: str = "image") -> tuple[torch.Tensor, tuple[float, float]]:
    """Stored values (any shape) mapped to [0, 1] by their minimum and maximum: float32 tensor
    and ``(minimum, maximum)``, the values mapped to 0 and 1. A constant ``what`` (image, series)
    is a ValueError naming ``path``."""
    low, high = float(values.min()), float(values.max())
    if high <= low:
        raise ValueError(f"{path}: the {what} is constant ({low}); nothing to reconstruct")
    return torch.from_numpy((values - low) / (high - low)).float(), (low, high)


# ------------------------------------------------------------------------------------ dataset

class DicomImages(Dataset):
    """DICOM images (or series, as volumes) as ground truths in [0, 1], each repeated ``repeats`` times.

    Items are float32 ``(2, H, W)`` (real, imaginary = 0; MRI magnitude images) with
    ``complex=True``, else ``(1, H, W)``; with ``series=True`` volumes ``(2, D, H, W)`` or
    ``(1, D, H, W)``. Each image (volume) is scaled to [0, 1] by its own minimum and maximum,
    after the rescale slope and intercept. Repeats let one scan be measured with several masks or
    noise draws: item ``k`` is image ``k // repeats``.

    Args:
        root: ``pydicom:NAME``, a DICOM file or a folder of ``*.dcm`` files; with ``series``
            also a folder of series folders (:func:`resolve_dicom_series`).
        complex: two channels (MRI) or one (CT, photographs).
        size: centre-crop or zero-pad to ``(H, W)`` (one int for a square); ``None`` keeps the file's size.
        repeats: items per image.
        series: each series (a folder of slices, or a multi-frame file) is one volume sorted along
            the slice normal (:func:`load_dicom_series`), instead of each file one image.

    Attributes:
        paths: the files (the series folders or files with ``series``), in item order.
        pixel_spacing: (row, column) spacing in mm of each file; with ``series`` the
            (slice, row, column) spacing of each volume.
        value_range: (minimum, maximum) of each image or volume in stored units, the values that
            were mapped to 0 and 1.
    """

    def __init__(self, root: str | Path, complex: bool = True, size: int | tuple[int, int] | None = None,
                 repeats: int = 1, series: bool = False) -> None:
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        if not isinstance(series, bool):
            raise ValueError(f"series must be true or false, got {series!r}")
        self.paths = resolve_dicom_series(root) if series else resolve_dicom_paths(root)
        self.complex, self.repeats, self.series = bool(complex), int(repeats), series
        self.size = (int(size), int(size)) if isinstance(size, int) else (tuple(size) if size is not None else None)
        self.images, self.pixel_spacing, self.value_range = [], [], []
        for path in self.paths:
            image, spacing = read_dicom_series(path) if series else read_dicom(path)
            tensor, value_range = to_unit_range(image, path)
            tensor = tensor[None]
            self.images.append(center_crop_or_pad(tensor, self.size) if self.size is not None else tensor)
            self.pixel_spacing.append(spacing)
            self.value_range.append(value_range)

    def __len__(self) -> int:
        return len(self.images) * self.repeats

    def __getitem__(self, index: int) -> torch.Tensor:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        image = self.images[(index % len(self)) // self.repeats]
        return torch.cat([image, torch.zeros_like(image)]) if self.complex else image.clone()
