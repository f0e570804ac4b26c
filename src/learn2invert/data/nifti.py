"""NIfTI volumes: load, save, and a dataset of 2D slices.

Volumes travel as channel-first float32 tensors ``(C, X, Y, Z)``: ``C = 1`` for a real (magnitude)
volume and ``C = 2`` (real, imaginary) for a complex one, the same convention the rest of the
library uses for complex images. Voxel sizes are in millimetres.

:func:`slice_stack` turns a RAS+ volume into display-oriented slices ``(N, H, W)`` in neurological
convention: for axial slices anterior at the top and the subject's left on the image's left.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.data import Dataset

__all__ = ["load_nifti", "save_nifti", "slice_stack", "foreground_fraction", "NiftiSlices"]

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


def _open_nifti(path: Path):
    """Open ``path`` lazily (header only) as a 3D NIfTI image; ValueError naming it otherwise.

    A volume stored with trailing singleton dimensions (a one-frame series) is sliced to 3D.
    """
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types (ImageFileError, OSError, EOFError, ...)
        raise ValueError(f"{path}: not a readable NIfTI file ({exc})") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path}: not a NIfTI image (nibabel read it as {type(img).__name__})")
    shape = tuple(int(s) for s in img.shape)
    if len(shape) < 3 or any(s != 1 for s in shape[3:]):
        raise ValueError(f"{path}: expected a 3D volume, got a NIfTI image of shape {shape}")
    if len(shape) > 3:
        img = img.slicer[(slice(None),) * 3 + (0,) * (len(shape) - 3)]
    return img


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
) -> None:
    """Write a volume as NIfTI-1 with a diagonal RAS+ affine of the given voxel sizes (mm).

    Args:
        path: output file; ``.nii.gz`` is gzip-compressed by nibabel.
        volume: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` real, ``(2, X, Y, Z)`` (real, imaginary) saved as
            complex64, or a complex ``(X, Y, Z)`` array/tensor.
        voxel_size: three positive edge lengths in mm.
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
