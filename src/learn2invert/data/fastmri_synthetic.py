"""Synthetic fastMRI files in the exact on-disk format, to try the fastMRI pipeline without the data.

The real fastMRI knee and brain sets need a data-use agreement and hundreds of gigabytes; these
files have the same layout, so every code path that reads fastMRI files (``data.name: fastmri``,
``l2i reconstruct RUN file.h5 out.h5``, the ``fastmri`` package's own ``SliceDataset``) runs on
them unchanged:

- ``kspace``: complex64 ``(slices, H, W)`` single-coil or ``(slices, coils, H, W)`` multi-coil,
  centred (DC at ``(H // 2, W // 2)``), with the readout (H) oversampled twice like the real
  640-row scans (the object fills the middle rows), zero columns outside the acquired range the
  header's ``encodingLimits`` give (real files are zero-padded there too), and on the test split
  undersampled by the file's ``mask``;
- ``reconstruction_esc`` (single-coil) / ``reconstruction_rss`` (multi-coil): float32
  ``(slices, h, w)``, the magnitude / root-sum-of-squares of the centred orthonormal inverse FFT
  of the fully sampled k-space, centre-cropped to the recon matrix (absent on the test split);
- ``ismrmrd_header``: ISMRMRD XML (namespace ``http://www.ismrm.org/ISMRMRD``) with
  ``encoding/encodedSpace/matrixSize`` = (H, W, 1), ``reconSpace/matrixSize`` = (h, w, 1),
  ``encodingLimits/kspace_encoding_step_1`` (minimum, maximum, center) and the field of view;
- ``mask`` (test split): bool ``(W,)``, with the attributes ``acceleration`` and
  ``num_low_frequency``;
- attributes ``acquisition`` (``CORPD_FBK``), ``patient_id`` (a hex string) and, where there is a
  target, ``max`` and ``norm`` of the target volume.

Images are random-ellipse phantoms (:func:`~learn2invert.data.phantoms.random_ellipses`) with a
smooth random phase, in k-space units of about 1e-4 like the real knee scans (so code that
forgets to normalise shows it). Multi-coil files use the analytic coil maps of
:func:`~learn2invert.operators.multicoil.simulated_coil_maps`.

From the shell: ``python -m learn2invert.data.fastmri_synthetic data/fastmri_synthetic`` writes
``knee_singlecoil_{train,val,test}`` folders there (see ``configs/fastmri/README.md``).
"""
from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import h5py
import numpy as np
import torch

from ..operators.masks import random_mask
from ..operators.multicoil import simulated_coil_maps
from .fastmri import center_crop, fastmri_crop_size
from .phantoms import random_ellipses

__all__ = ["write_synthetic_fastmri", "write_synthetic_fastmri_dataset", "ismrmrd_header_xml"]

SCALE = 1e-4  # k-space magnitude units of the real knee scans' images


def ismrmrd_header_xml(encoding_size: tuple[int, int], recon_size: tuple[int, int], padding: int = 0,
                       coils: int = 1) -> bytes:
    """An ISMRMRD XML header like fastMRI's, for k-space ``(H, W) = encoding_size``.

    Args:
        encoding_size: ``(H, W)`` of the stored k-space (``encodedSpace/matrixSize`` x, y).
        recon_size: ``(h, w)`` of the reconstruction (``reconSpace/matrixSize`` x, y).
        padding: zero columns on each side: ``kspace_encoding_step_1`` runs from column
            ``padding`` to ``W - padding - 1``, with its centre at ``W // 2 - padding``.
        coils: receiver channels (``acquisitionSystemInformation/receiverChannels``).

    Returns:
        UTF-8 bytes, as the ``ismrmrd_header`` dataset stores them.
    """
    (H, W), (h, w) = encoding_size, recon_size
    acquired = W - 2 * padding
    return f"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:schemaLocation="http://www.ismrm.org/ISMRMRD ismrmrd.xsd">
  <studyInformation><studyTime>00:00:00</studyTime></studyInformation>
  <acquisitionSystemInformation>
    <systemVendor>SYNTHETIC</systemVendor><systemModel>learn2invert</systemModel>
    <systemFieldStrength_T>2.89362</systemFieldStrength_T>
    <receiverChannels>{coils}</receiverChannels>
  </acquisitionSystemInformation>
  <experimentalConditions><H1resonanceFrequency_Hz>123251815</H1resonanceFrequency_Hz></experimentalConditions>
  <encoding>
    <encodedSpace>
      <matrixSize><x>{H}</x><y>{W}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{0.5 * H:.1f}</x><y>{0.25 * W:.1f}</y><z>3</z></fieldOfView_mm>
    </encodedSpace>
    <reconSpace>
      <matrixSize><x>{h}</x><y>{w}</y><z>1</z></matrixSize>
      <fieldOfView_mm><x>{0.25 * H:.1f}</x><y>{0.25 * W:.1f}</y><z>3</z></fieldOfView_mm>
    </reconSpace>
    <trajectory>cartesian</trajectory>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>{acquired - 1}</maximum><center>{W // 2 - padding}</center></kspace_encoding_step_1>
      <kspace_encoding_step_2><minimum>0</minimum><maximum>0</maximum><center>0</center></kspace_encoding_step_2>
      <slice><minimum>0</minimum><maximum>0</maximum><center>0</center></slice>
    </encodingLimits>
  </encoding>
</ismrmrdHeader>
""".encode()


def _fft2c(image: np.ndarray) -> np.ndarray:
    """Centred orthonormal 2D FFT over the last two axes (complex128)."""
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(image, axes=axes), norm="ortho"), axes=axes)


def _ifft2c(kspace: np.ndarray) -> np.ndarray:
    """Centred orthonormal inverse 2D FFT over the last two axes (complex128)."""
    axes = (-2, -1)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=axes), norm="ortho"), axes=axes)


def _phantom_slice(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """One complex image ``(H, W)``: an ellipse phantom in the middle H/2 rows (the rest 0, like
    the oversampled readout of the real scans) with a smooth random phase."""
    H, W = shape
    rows = H // 2
    side = max(rows, W)
    magnitude = random_ellipses(side, rng)[0].numpy().astype(np.float64)
    if not magnitude.any():  # no ellipse on the grid (rare): a plain disc
        yy, xx = np.mgrid[-1 : 1 : side * 1j, -1 : 1 : side * 1j]
        magnitude = (xx**2 + yy**2 < 0.5).astype(np.float64)
    top, left = (side - rows) // 2, (side - W) // 2
    image = np.zeros((H, W))
    image[(H - rows) // 2 : (H - rows) // 2 + rows] = magnitude[top : top + rows, left : left + W]
    yy, xx = np.meshgrid(np.linspace(-1, 1, H), np.linspace(-1, 1, W), indexing="ij")
    a, b, c = rng.uniform(-1.0, 1.0, 3)
    return image * np.exp(1j * (a * xx + b * yy + c * (xx**2 + yy**2)))


def write_synthetic_fastmri(
    path: str | os.PathLike,
    *,
    split: str = "train",
    coils: int = 0,
    slices: int = 3,
    kspace_shape: tuple[int, int] = (64, 36),
    recon_size: tuple[int, int] = (32, 32),
    padding: int = 2,
    acceleration: int = 4,
    center_fraction: float = 0.08,
    noise: float = 0.01,
    seed: int = 0,
) -> Path:
    """Write one synthetic fastMRI file (the module docstring lists its contents).

    Args:
        path: the ``.h5`` file to write (its folder is created).
        split: ``"train"`` / ``"val"`` (fully sampled, with target, ``max``, ``norm``) or
            ``"test"`` (k-space undersampled by a stored ``mask``, no target).
        coils: 0 for a single-coil file (``reconstruction_esc``), else the number of coils of
            a multi-coil file (``reconstruction_rss``).
        slices: number of slices.
        kspace_shape: ``(H, W)`` of the k-space (real knee files: (640, 368)); H should be at
            least twice the recon height (readout oversampling).
        recon_size: ``(h, w)`` of the target (real files: (320, 320)).
        padding: zero k-space columns on each side (outside the acquired range).
        acceleration, center_fraction: the test split's random column mask.
        noise: complex Gaussian k-space noise, relative to the image peak.
        seed: seed of every random draw (same seed, same file).

    Returns:
        the path written.
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be train, val or test, got {split!r}")
    H, W = (int(v) for v in kspace_shape)
    h, w = (int(v) for v in recon_size)
    if not (0 < h <= H and 0 < w and 0 <= padding and 2 * padding < W):
        raise ValueError(f"recon_size {recon_size} and padding {padding} do not fit k-space of shape {kspace_shape}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    images = np.stack([_phantom_slice((H, W), rng) for _ in range(slices)]) * SCALE  # (S, H, W)
    if coils:
        maps = simulated_coil_maps(int(coils), (H, W), rotation=float(rng.uniform(0, 2 * np.pi)), dtype=torch.float64)
        maps = maps[0].numpy() + 1j * maps[1].numpy()  # (C, H, W)
        images = images[:, None] * maps[None]  # (S, C, H, W) coil images
    kspace = _fft2c(images)
    kspace += noise * SCALE * (rng.standard_normal(kspace.shape) + 1j * rng.standard_normal(kspace.shape)) / np.sqrt(2)
    if padding:
        kspace[..., :padding] = 0
        kspace[..., W - padding:] = 0
    crop = fastmri_crop_size((H, W), (h, w))
    target = None
    if split != "test":
        full = _ifft2c(kspace)
        magnitude = np.sqrt((np.abs(full) ** 2).sum(axis=1)) if coils else np.abs(full)  # rss or |.|
        target = center_crop(torch.from_numpy(magnitude), crop).numpy().astype(np.float32)
    mask = None
    if split == "test":
        mask_t = random_mask((W,), acceleration, center_fraction, seed=seed)
        mask = mask_t.reshape(-1).numpy().astype(bool)
        kspace = kspace * mask  # columns not sampled are 0, as in the challenge files
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=kspace.astype(np.complex64))
        hf.create_dataset("ismrmrd_header", data=ismrmrd_header_xml((H, W), (h, w), padding, max(1, int(coils))))
        if target is not None:
            hf.create_dataset("reconstruction_rss" if coils else "reconstruction_esc", data=target)
            hf.attrs["max"] = float(target.max())
            hf.attrs["norm"] = float(np.linalg.norm(target))
        if mask is not None:
            hf.create_dataset("mask", data=mask)
            hf.attrs["acceleration"] = int(acceleration)
            hf.attrs["num_low_frequency"] = int(round(W * center_fraction))
        hf.attrs["acquisition"] = "CORPD_FBK"
        hf.attrs["patient_id"] = hashlib.sha256(f"{seed}-{path.name}".encode()).hexdigest()
    return path


def write_synthetic_fastmri_dataset(
    root: str | os.PathLike,
    *,
    coils: int = 0,
    files: dict[str, int] | None = None,
    prefix: str | None = None,
    seed: int = 0,
    **kwargs,
) -> dict[str, Path]:
    """Write ``root/<prefix>_{train,val,test}/file*.h5`` like the extracted fastMRI archives.

    Args:
        root: the folder that gets one sub-folder per split.
        coils: 0 for single-coil files, else the number of coils.
        files: files per split (default ``{"train": 3, "val": 2, "test": 1}``); a split with 0
            files is not written.
        prefix: folder prefix (default ``knee_singlecoil`` / ``knee_multicoil``).
        seed: base seed; file ``i`` of a split gets its own seed.
        **kwargs: passed to :func:`write_synthetic_fastmri` (``slices``, ``kspace_shape``, ...).

    Returns:
        ``{split: folder}`` of the folders written.
    """
    files = {"train": 3, "val": 2, "test": 1} if files is None else files
    prefix = prefix or ("knee_multicoil" if coils else "knee_singlecoil")
    folders = {}
    for s_index, (split, count) in enumerate(files.items()):
        if not count:
            continue
        folder = Path(root) / f"{prefix}_{split}"
        for i in range(count):
            file_seed = seed * 1000 + 100 * s_index + i
            write_synthetic_fastmri(folder / f"file{1000000 + 100 * s_index + i}.h5", split=split, coils=coils,
                                    seed=file_seed, **kwargs)
        folders[split] = folder
    return folders


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m learn2invert.data.fastmri_synthetic",
                                     description="write synthetic fastMRI train/val/test folders in the real file format")
    parser.add_argument("root", help="folder for <prefix>_{train,val,test}")
    parser.add_argument("--coils", type=int, default=0, help="0: single-coil files (default); N: N-coil files")
    parser.add_argument("--train", type=int, default=8, help="training files (default 8)")
    parser.add_argument("--val", type=int, default=2, help="validation files (default 2)")
    parser.add_argument("--test", type=int, default=2, help="test files (default 2)")
    parser.add_argument("--slices", type=int, default=8, help="slices per file (default 8)")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 72), metavar=("H", "W"),
                        help="k-space size (default 128 72; real knee files: 640 368)")
    parser.add_argument("--recon", type=int, nargs=2, default=(64, 64), metavar=("h", "w"),
                        help="recon / target size (default 64 64; real files: 320 320)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    folders = write_synthetic_fastmri_dataset(args.root, coils=args.coils, seed=args.seed, slices=args.slices,
                                              files={"train": args.train, "val": args.val, "test": args.test},
                                              kspace_shape=tuple(args.size), recon_size=tuple(args.recon))
    for split, folder in folders.items():
        print(f"{split}: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
