"""NIfTI volumes: load, save, and a dataset of 2D slices.

Volumes travel as channel-first float32 tensors ``(C, X, Y, Z)``: ``C = 1`` for a real (magnitude)
volume and ``C = 2`` (real, imaginary) for a complex one, the same convention the rest of the
library uses for complex images. Voxel sizes are in millimetres.

:func:`slice_stack` turns a RAS+ volume into display-oriented slices ``(N, H, W)`` in neurological
convention: for axial slices anterior at the top and the subject's left on the image's left.

:func:`read_nifti` reads one file to reconstruct (a 2D slice, a 3D volume or one frame of a 4D
series) together with its geometry, so that ``save_nifti(..., like=...)`` writes a result on the
file's own voxel grid (same axis order and affine): it overlays on the input in a viewer.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["load_nifti", "read_nifti", "NiftiVolume", "save_nifti", "slice_stack", "foreground_fraction",
           "NiftiSlices"]

_AXIS_NAMES = {"sagittal": 0, "coronal": 1, "axial": 2}


def _axis_index(axis: int | str) -> int:
    """Map ``"sagittal" | "coronal" | "axial"`` or ``0 | 1 | 2`` (RAS voxel axes) to an int."""
    if isinstance(axis, str):
        if axis not in _AXIS_NAMES:
            raise ValueError(f"axis must be one of {sorted(_AXIS_NAMES)} or 0, 1, 2; got {axis!r}")
        return _AXIS_NAMES[axis]
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 (or a plane name); got {axis!r}")
    return int(axis)


def load_nifti(path: str | os.PathLike, canonical: bool = True) -> tuple[torch.Tensor, tuple[float, float, float]]:
    """Read a 3D NIfTI file (``.nii`` or ``.nii.gz``).

    Args:
        path: the file.
        canonical: reorient the voxel array to the closest RAS+ orientation (axis 0 left->right,
            axis 1 posterior->anterior, axis 2 inferior->superior) so that ``axis=2`` means axial
            whatever the scanner wrote. Only axis flips and permutations, never interpolation.

    Returns:
        ``(volume, voxel_size)``: ``volume`` float32 of shape ``(1, X, Y, Z)`` for real data or
        ``(2, X, Y, Z)`` (real, imaginary) for complex data; ``voxel_size`` the three voxel
        edge lengths in mm, in the order of the returned axes.

    Raises:
        ValueError: naming ``path`` if the file is not a readable NIfTI image or is not 3D
            (trailing singleton dimensions, e.g. ``(X, Y, Z, 1)``, are accepted).
    """
    path = Path(path)
    img = _open_nifti(path)
    try:
        if canonical:
            img = nib.as_closest_canonical(img)
        # dataobj keeps the stored dtype (get_fdata would drop the imaginary part) and applies
        # the scl_slope / scl_inter scaling for real data.
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated gzip streams or short files fail only when read
        raise ValueError(f"{path}: could not read the voxel data ({exc})") from exc
    if data.dtype.names is not None:
        raise ValueError(f"{path}: structured (e.g. RGB) voxel type {data.dtype} is not supported")
    if np.iscomplexobj(data):
        volume = np.stack([data.real, data.imag]).astype(np.float32)
    else:
        volume = data.astype(np.float32)[None]
    # Voxel edge lengths from the affine's column norms stay correct after reorientation.
    voxel_size = tuple(float(v) for v in np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0)))
    return torch.from_numpy(np.ascontiguousarray(volume)), voxel_size


def _load_header(path: Path):
    """Open ``path`` lazily (header only) as a NIfTI image of any shape; ValueError naming it otherwise."""
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types (ImageFileError, OSError, EOFError, ...)
        raise ValueError(f"{path}: not a readable NIfTI file ({exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path}: not a NIfTI image (nibabel read it as {type(img).__name__})")
    return img


def _open_nifti(path: Path):
    """Open ``path`` lazily (header only) as a 3D NIfTI image; ValueError naming it otherwise.

    A volume stored with trailing singleton dimensions (a one-frame series) is sliced to 3D.
    """
    img = _load_header(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3 or any(s != 1 for s in shape[3:]):
        raise ValueError(f"{path}: expected a 3D volume, got a NIfTI image of shape {shape}")
    if len(shape) > 3:
        img = img.slicer[(slice(None),) * 3 + (0,) * (len(shape) - 3)]
    return img


_RAS = np.array([[0.0, 1.0], [1.0, 1.0], [2.0, 1.0]])  # nibabel orientation of a RAS+ voxel array


@dataclass(frozen=True)
class NiftiVolume:
    """One NIfTI file read by :func:`read_nifti`: a RAS+ volume and the file's own geometry.

    Attributes:
        volume: float32 ``(C, X, Y, Z)`` in RAS+ voxel order (as :func:`load_nifti` returns it),
            ``C = 1`` real or ``C = 2`` (real, imaginary). A 2D file is one slice, size 1 along
            :attr:`slice_axis`.
        voxel_size: the three voxel edge lengths in mm, in the order of ``volume``'s axes.
        affine: ``(4, 4)`` voxel -> world (mm) matrix of the file's own axes.
        file_shape: the file's spatial shape, ``(X, Y)`` for a 2D slice, ``(X, Y, Z)`` otherwise
            (a 4D series without its frame axis).
        orientation: ``(3, 2)`` nibabel orientation taking the file's axes to RAS+
            (``nibabel.io_orientation(affine)``): only axis flips and permutations.
        header: a copy of the file's header (units, description, qform / sform codes).
        frame: the frame read from a 4D series, ``None`` for 2D and 3D files.
    """

    volume: torch.Tensor
    voxel_size: tuple[float, float, float]
    affine: np.ndarray
    file_shape: tuple[int, ...]
    orientation: np.ndarray
    header: nib.Nifti1Header
    frame: int | None = None

    @property
    def slice_axis(self) -> int | None:
        """For a single slice, the RAS+ axis (0, 1, 2) along which ``volume`` has size 1: the
        normal of a 2D file, or the only size-1 axis of a 3D one; ``None`` for other volumes."""
        if len(self.file_shape) == 2:
            return int(self.orientation[2, 0])
        single = [axis for axis, size in enumerate(self.volume.shape[1:]) if size == 1]
        return single[0] if len(single) == 1 else None

    def to_file_order(self, ras: np.ndarray | torch.Tensor) -> np.ndarray:
        """A RAS+ ``(X, Y, Z)`` array on this volume's grid -> the file's voxel order and shape."""
        if isinstance(ras, torch.Tensor):
            ras = ras.detach().cpu().numpy()
        ras = np.asarray(ras)
        if ras.shape != tuple(self.volume.shape[1:]):
            raise ValueError(f"expected a RAS+ array of shape {tuple(self.volume.shape[1:])}, got {ras.shape}")
        back = nib.orientations.ornt_transform(_RAS, self.orientation)
        data = nib.orientations.apply_orientation(ras, back)
        return np.ascontiguousarray(data.reshape(self.file_shape))


def _orientation(affine: np.ndarray) -> np.ndarray:
    """``nibabel.io_orientation`` of the affine, with an axis the affine leaves undefined (a zero
    column, e.g. the normal of some 2D files) kept in place, unflipped, instead of NaN."""
    orientation = nib.io_orientation(affine)
    free = [axis for axis in range(3) if axis not in orientation[:, 0]]
    for row in orientation:
        if np.isnan(row[0]):
            row[:] = (free.pop(0), 1.0)
    return orientation


def read_nifti(path: str | os.PathLike, frame: int | None = None) -> NiftiVolume:
    """Read a NIfTI file to reconstruct: a 2D slice, a 3D volume or one frame of a 4D series.

    The voxels are reoriented to RAS+ as by :func:`load_nifti` (axis flips and permutations only);
    the returned :class:`NiftiVolume` keeps the file's affine, axis order and header so that
    :func:`save_nifti` with ``like=`` writes a result back on the file's own grid.

    Args:
        path: ``.nii`` or ``.nii.gz`` file.
        frame: which volume of a 4D series ``(X, Y, Z, T)`` with ``T > 1`` to read (0-based);
            required for such series, optional (0) for 2D and 3D files.

    Raises:
        ValueError: naming ``path`` for an unreadable file, a shape other than 2D / 3D / 4D
            (trailing singleton dimensions are accepted), a 4D series without ``frame`` or a
            ``frame`` out of range.
    """
    path = Path(path)
    img = _load_header(path)
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 2 or any(s != 1 for s in shape[4:]):
        raise ValueError(f"{path}: expected a 2D slice, a 3D volume or a 4D series, got a NIfTI image of shape {shape}")
    frames = shape[3] if len(shape) > 3 else 1
    if frame is None and frames > 1:
        raise ValueError(f"{path} is a 4D series of {frames} frames (shape {shape}); choose one with "
                         f"frame=0..{frames - 1}")
    chosen = 0 if frame is None else frame
    if isinstance(chosen, bool) or not isinstance(chosen, (int, np.integer)) or not 0 <= chosen < frames:
        raise ValueError(f"{path}: frame must be an int in 0..{frames - 1} (the file has {frames} frame(s)), "
                         f"got {frame!r}")
    file_shape = shape[:3]
    index = (slice(None),) * len(file_shape) + (int(chosen),) * (len(shape) - len(file_shape))
    try:
        # dataobj keeps the stored dtype (get_fdata would drop the imaginary part), applies the
        # scl_slope / scl_inter scaling for real data and reads only the chosen frame.
        data = np.asanyarray(img.dataobj[index])
    except Exception as exc:  # truncated gzip streams or short files fail only when read
        raise ValueError(f"{path}: could not read the voxel data ({exc})") from exc
    if data.dtype.names is not None:
        raise ValueError(f"{path}: structured (e.g. RGB) voxel type {data.dtype} is not supported")
    if data.ndim == 2:  # a single slice: the affine's third column is its normal
        data = data[..., None]
    orientation = _orientation(img.affine)
    data = nib.orientations.apply_orientation(data, orientation)
    volume = np.stack([data.real, data.imag]) if np.iscomplexobj(data) else data[None]
    edges = np.sqrt((img.affine[:3, :3] ** 2).sum(axis=0))  # per file axis, in mm
    voxel_size = [0.0, 0.0, 0.0]
    for axis_in, (axis_out, _) in enumerate(orientation):
        voxel_size[int(axis_out)] = float(edges[axis_in])
    return NiftiVolume(torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)), tuple(voxel_size),
                       np.array(img.affine, dtype=np.float64), file_shape, orientation, img.header.copy(),
                       None if frames == 1 and frame is None else int(chosen))


def _canonical_shape(img) -> tuple[int, int, int]:
    """Voxel grid shape after RAS+ reorientation, from the header alone (no voxel data read)."""
    ornt = nib.io_orientation(img.affine)
    shape = [0, 0, 0]
    for axis_in, (axis_out, _) in enumerate(ornt):
        shape[int(axis_out)] = int(img.shape[axis_in])
    return tuple(shape)


def save_nifti(
    path: str | os.PathLike,
    volume: torch.Tensor | np.ndarray,
    voxel_size: Sequence[float] = (1.0, 1.0, 1.0),
    like: NiftiVolume | None = None,
) -> None:
    """Write a volume as NIfTI-1 with a diagonal RAS+ affine of the given voxel sizes (mm), or on
    the grid of the file ``like`` was read from.

    Args:
        path: output file; ``.nii.gz`` is gzip-compressed by nibabel.
        volume: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` real, ``(2, X, Y, Z)`` (real, imaginary) saved as
            complex64, or a complex ``(X, Y, Z)`` array/tensor.
        voxel_size: three positive edge lengths in mm (ignored with ``like``).
        like: a :class:`NiftiVolume` from :func:`read_nifti`: ``volume`` is on its RAS+ grid and is
            written in that file's own axis order and shape (2D for a 2D file) with its affine and
            header, so that it overlays on the file in a viewer.
    """
    if isinstance(volume, torch.Tensor):
        volume = volume.detach().cpu()
        volume = torch.view_as_real(volume).movedim(-1, 0) if volume.is_complex() else volume
        volume = volume.numpy()
    volume = np.asarray(volume)
    if np.iscomplexobj(volume):
        if volume.ndim != 3:
            raise ValueError(f"a complex volume must be (X, Y, Z); got shape {volume.shape}")
        data = volume.astype(np.complex64)
    elif volume.ndim == 3:
        data = volume.astype(np.float32)
    elif volume.ndim == 4 and volume.shape[0] == 1:
        data = volume[0].astype(np.float32)
    elif volume.ndim == 4 and volume.shape[0] == 2:
        data = (volume[0] + 1j * volume[1]).astype(np.complex64)
    else:
        raise ValueError(f"volume must be (X, Y, Z), (1, X, Y, Z) or (2, X, Y, Z); got shape {volume.shape}")
    if like is not None:
        data = like.to_file_order(data)
        header = like.header.copy()
        header.set_data_dtype(data.dtype)
        # The input's display window and intensity scaling describe its own values, not ours.
        header["cal_min"], header["cal_max"] = 0.0, 0.0
        header.set_slope_inter(None, None)
        image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        nib.save(image_class(data, like.affine, header), str(path))
        return
    voxel_size = tuple(float(v) for v in voxel_size)
    if len(voxel_size) != 3 or min(voxel_size) <= 0:
        raise ValueError(f"voxel_size must be three positive lengths in mm; got {voxel_size}")
    affine = np.diag(voxel_size + (1.0,))
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units(xyz="mm")
    nib.save(img, str(path))


def slice_stack(volume: np.ndarray | torch.Tensor, axis: int | str) -> np.ndarray | torch.Tensor:
    """View a RAS+ volume as a stack of display-oriented 2D slices.

    Args:
        volume: ``(..., X, Y, Z)`` array or tensor in RAS+ voxel order (leading channel dims kept).
        axis: ``"sagittal"`` / 0, ``"coronal"`` / 1 or ``"axial"`` / 2.

    Returns:
        ``(..., N, H, W)``: ``N`` slices along ``axis`` in increasing voxel index (left->right,
        posterior->anterior, inferior->superior). Each slice is rotated a quarter turn so the
        superior (coronal, sagittal) or anterior (axial) side is at the top. A view, not a copy.
    """
    ax = _axis_index(axis) + volume.ndim - 3
    if isinstance(volume, torch.Tensor):
        return torch.rot90(volume.movedim(ax, -3), 1, dims=(-2, -1))
    return np.rot90(np.moveaxis(volume, ax, -3), 1, axes=(-2, -1))


def foreground_fraction(stack: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Fraction of each slice's pixels brighter than ``threshold * stack.max()``.

    Args:
        stack: ``(N, H, W)`` non-negative magnitudes.
        threshold: relative intensity that counts as tissue (background in MRI is near zero).

    Returns:
        ``(N,)`` float array in [0, 1].
    """
    peak = float(stack.max())
    if peak <= 0:
        return np.zeros(stack.shape[0])
    return (stack > threshold * peak).mean(axis=(1, 2))


class NiftiSlices(Dataset):
    """2D slices of one or more 3D NIfTI volumes, one item per slice.

    Items are float32 tensors ``(1, H, W)`` for real volumes or ``(2, H, W)`` (real, imaginary)
    for complex ones, oriented as in :func:`slice_stack`. With ``normalise=True`` each volume is
    divided by its largest magnitude so that ``|x| <= 1`` (one scale per volume, like fastMRI's
    per-volume ``max``, so the relative brightness of slices is kept).

    Args:
        paths: one path, a directory (all ``*.nii`` / ``*.nii.gz`` in it, sorted) or a sequence
            of files.
        axis: slicing plane, ``"axial"`` (default), ``"coronal"``, ``"sagittal"`` or 0/1/2 after
            reorientation to RAS+.
        normalise: scale each volume to a peak magnitude of 1.
        min_foreground: skip slices whose fraction of pixels above 10% of the volume's peak
            magnitude is below this (0 keeps every slice).
        cache_volumes: number of decoded volumes kept in memory (consecutive slices of one file
            are then read once).
        skip_bad_files: leave out files that cannot be read on construction (warning with the
            path) instead of raising; they are listed in ``skipped`` as ``(path, message)``.
            Voxel data that turns out truncated later still raises when read (wrap the dataset
            in :class:`~learn2invert.data.skipping.SkipBadFiles` for that).

    Raises:
        ValueError: naming the file, for unreadable or non-3D files (headers are checked on
            construction; voxel data that is truncated fails when its slices are read).
    """

    def __init__(
        self,
        paths: str | os.PathLike | Sequence[str | os.PathLike],
        axis: int | str = "axial",
        normalise: bool = True,
        min_foreground: float = 0.0,
        cache_volumes: int = 1,
        skip_bad_files: bool = False,
    ) -> None:
        self.files = _nifti_files(paths)
        self.axis = _axis_index(axis)
        self.normalise = normalise
        self.cache_volumes = max(int(cache_volumes), 0)
        self._cache: dict[int, torch.Tensor] = {}
        self.examples: list[tuple[int, int]] = []
        self.skipped: list[tuple[Path, str]] = []
        for f_idx, path in enumerate(self.files):
            try:
                if min_foreground > 0:
                    # Choosing slices needs the voxels; otherwise the header suffices, so building
                    # the index over many files stays cheap.
                    magnitude = self._stack(f_idx).norm(dim=0).numpy()
                    keep = np.nonzero(foreground_fraction(magnitude) >= min_foreground)[0]
                else:
                    keep = range(_canonical_shape(_open_nifti(path))[self.axis])
            except ValueError as err:
                if not skip_bad_files:
                    raise
                _skip_file(self.skipped, path, err)
                continue
            self.examples += [(f_idx, int(k)) for k in keep]
        if not self.examples and self.skipped:
            raise ValueError(f"none of the {len(self.files)} NIfTI files could be read; first problem: {self.skipped[0][1]}")

    def _stack(self, f_idx: int) -> torch.Tensor:
        """Decoded, normalised ``(C, N, H, W)`` slice stack of file ``f_idx`` (cached)."""
        if f_idx in self._cache:
            return self._cache[f_idx]
        volume, _ = load_nifti(self.files[f_idx])
        if self.normalise:
            peak = volume.norm(dim=0).max()
            if peak > 0:
                volume = volume / peak
        stack = slice_stack(volume, self.axis).contiguous()
        if self.cache_volumes:
            while len(self._cache) >= self.cache_volumes:
                self._cache.pop(next(iter(self._cache)))
            self._cache[f_idx] = stack
        return stack

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> torch.Tensor:
        f_idx, k = self.examples[index]
        return self._stack(f_idx)[:, k].clone()


def _skip_file(skipped: list, path: Path, err: Exception) -> None:
    """Record and report a file left out by ``skip_bad_files``."""
    import warnings

    skipped.append((path, str(err)))
    warnings.warn(f"skipping unreadable file (skip_bad_files): {err}", RuntimeWarning, stacklevel=3)


def _nifti_files(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Expand a file, directory or list of files into a sorted list of NIfTI paths."""
    if isinstance(paths, (str, os.PathLike)):
        root = Path(paths)
        if root.is_dir():
            files = sorted(p for p in root.iterdir() if p.name.endswith((".nii", ".nii.gz")))
        else:
            files = [root]
    else:
        files = [Path(p) for p in paths]
    if not files:
        raise ValueError(f"no NIfTI files found in {paths}")
    for f in files:
        if not f.is_file():
            raise ValueError(f"{f}: no such file")
    return files
