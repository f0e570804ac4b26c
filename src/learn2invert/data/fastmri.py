"""fastMRI HDF5 files as slice datasets: measured k-space items and ground-truth images.

A fastMRI single-coil file (knee, ``singlecoil_{train,val,test}``) holds:

- ``kspace``: complex64 ``(slices, H, W)`` (e.g. ``(35, 640, 368)``), H the readout direction;
- ``reconstruction_esc``: float32 ``(slices, 320, 320)``, the magnitude of the centred inverse FFT
  of the fully sampled (emulated single-coil) k-space, centre-cropped to the reconstruction
  matrix; absent from the test split;
- ``mask``: the test split's sampling pattern over the W columns (its k-space is already
  undersampled); test files also carry the attributes ``acceleration`` and
  ``num_low_frequency``;
- ``ismrmrd_header``: ISMRMRD XML; ``encoding/encodedSpace/matrixSize`` and
  ``encoding/reconSpace/matrixSize`` give the acquired and reconstructed grids (x, y, z);
- attributes ``max`` and ``norm`` (of the target volume), ``acquisition`` (``CORPD_FBK`` or
  ``CORPDFS_FBK``), ``patient_id``.

A multi-coil file (knee or brain, ``multicoil_{train,val,test}``) has complex64 ``kspace`` of shape
``(slices, coils, H, W)`` and the float32 target ``reconstruction_rss`` ``(slices, 320, 320)``, the
root-sum-of-squares of the coil images, cropped; everything else as above.

:class:`FastMRISingleCoil` gives the stored k-space slice by slice (what ``l2i reconstruct``
reads); :class:`FastMRIImages` gives fully sampled files as ground-truth complex images for
training with simulated (retrospective) masks (``data.name: fastmri`` in a training config),
with ``own_coils`` together with each multi-coil slice's own coil k-space, which training
undersamples instead of simulating measurements (``data.params.own_coils``).

Images are cropped like fastMRI's data transforms: to the target's size when there is one, else
to the header's recon ``(x, y)`` as ``(rows, cols)``, and never wider than the image (some brain
FLAIR files are only 203 columns wide). Complex data are 2-channel real tensors throughout.
"""
from __future__ import annotations

import math
import os
import warnings
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ..operators.multicoil import ACS_FRACTION
from ..registry import ConfigError
from .items import measured_item

__all__ = [
    "parse_ismrmrd_header",
    "fastmri_crop_size",
    "center_crop",
    "crop_coil_kspace",
    "kspace_to_magnitude",
    "FastMRISingleCoil",
    "FastMRIImages",
]

TARGET_KEY = "reconstruction_esc"  # single-coil target
TARGET_KEYS = {False: "reconstruction_esc", True: "reconstruction_rss"}  # multi-coil? -> target dataset


def _child(element: ElementTree.Element, name: str) -> ElementTree.Element | None:
    """First child with local tag ``name``, whatever XML namespace the file declares."""
    for child in element:
        if child.tag == name or child.tag.endswith("}" + name):
            return child
    return None


def _find_int(root: ElementTree.Element, path: Sequence[str]) -> int | None:
    """Integer text at the nested local-name ``path`` below ``root``; ``None`` if absent."""
    node = root
    for name in path:
        node = _child(node, name)
        if node is None:
            return None
    try:
        return int((node.text or "").strip())
    except ValueError as exc:
        raise ValueError(f"ISMRMRD header: {'/'.join(path)} is not an integer ({node.text!r})") from exc


def parse_ismrmrd_header(xml: bytes | str) -> dict[str, Any]:
    """Read the grid sizes from an ISMRMRD XML header.

    Args:
        xml: the header text (fastMRI stores it as bytes in the ``ismrmrd_header`` dataset).

    Returns:
        ``{"encoding_size": (x, y, z), "recon_size": (x, y, z), "padding_left": int | None,
        "padding_right": int | None}``. The paddings bound the acquired columns of k-space:
        ``encoding_size[1] // 2 - encodingLimits/kspace_encoding_step_1/center`` and that plus
        ``maximum + 1``, as fastMRI computes them; ``None`` when the header has no limits.

    Raises:
        ValueError: if the XML is malformed or a matrix size is missing.
    """
    try:
        root = ElementTree.fromstring(xml)
    except ElementTree.ParseError as exc:
        raise ValueError(f"malformed ISMRMRD header XML ({exc})") from exc
    encoding = _child(root, "encoding")
    if encoding is None:
        raise ValueError("ISMRMRD header has no <encoding> element")
    sizes = {}
    for key, space in (("encoding_size", "encodedSpace"), ("recon_size", "reconSpace")):
        values = tuple(_find_int(encoding, [space, "matrixSize", c]) for c in "xyz")
        if values[0] is None or values[1] is None:
            raise ValueError(f"ISMRMRD header lacks encoding/{space}/matrixSize x and y")
        sizes[key] = (values[0], values[1], values[2] if values[2] is not None else 1)
    center = _find_int(encoding, ["encodingLimits", "kspace_encoding_step_1", "center"])
    maximum = _find_int(encoding, ["encodingLimits", "kspace_encoding_step_1", "maximum"])
    if center is not None and maximum is not None:
        left = sizes["encoding_size"][1] // 2 - center
        sizes["padding_left"], sizes["padding_right"] = left, left + maximum + 1
    else:
        sizes["padding_left"] = sizes["padding_right"] = None
    return sizes


def fastmri_crop_size(
    image_shape: Sequence[int],
    recon_size: Sequence[int] | None = None,
    target_shape: Sequence[int] | None = None,
) -> tuple[int, int]:
    """The ``(rows, cols)`` an image is cropped to before comparing with fastMRI targets.

    Args:
        image_shape: ``(..., H, W)`` of the k-space / full image.
        recon_size: header recon matrix ``(x, y[, z])``; used when there is no target.
        target_shape: ``(..., h, w)`` of the stored target; takes precedence.

    Returns:
        ``(h, w)``; squares down to ``(W, W)`` when the image is narrower than the crop.
    """
    if target_shape is not None:
        crop = (int(target_shape[-2]), int(target_shape[-1]))
    elif recon_size is not None:
        crop = (int(recon_size[0]), int(recon_size[1]))
    else:
        raise ValueError("need a recon_size or a target_shape to choose the crop")
    width = int(image_shape[-1])
    if width < crop[1]:
        crop = (width, width)
    return crop


def center_crop(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Centre-crop the last two dims of ``x`` to ``size = (h, w)``, keeping rows
    ``[(H - h) // 2, (H - h) // 2 + h)`` and likewise for columns (fastMRI's convention)."""
    h, w = int(size[0]), int(size[1])
    H, W = x.shape[-2:]
    if not (0 < h <= H and 0 < w <= W):
        raise ValueError(f"cannot crop {(H, W)} to {(h, w)}")
    top, left = (H - h) // 2, (W - w) // 2
    return x[..., top : top + h, left : left + w]


def _centred_fft2(z: torch.Tensor, inverse: bool = False) -> torch.Tensor:
    """Centred orthonormal (inverse) 2D FFT over the last two dims of a complex tensor."""
    dims = (-2, -1)
    transform = torch.fft.ifftn if inverse else torch.fft.fftn
    return torch.fft.fftshift(transform(torch.fft.ifftshift(z, dim=dims), dim=dims, norm="ortho"), dim=dims)


def _ifft2c(kspace: torch.Tensor) -> torch.Tensor:
    """Centred orthonormal inverse 2D FFT over the last two dims of a complex tensor."""
    return _centred_fft2(kspace, inverse=True)


def crop_coil_kspace(kspace: torch.Tensor, crop: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Fully sampled coil k-space -> ``(coil images, k-space)`` of the centre ``crop`` of the images.

    Args:
        kspace: complex ``(..., H, W)``, e.g. one slice's coils ``(C, H, W)`` as stored (centred).
        crop: ``(h, w)``, at most ``(H, W)`` (:func:`center_crop`'s convention).

    Returns:
        the centre-cropped coil images (centred orthonormal inverse FFT, then :func:`center_crop`)
        and their centred orthonormal FFT, both complex ``(..., h, w)``: the k-space a scanner
        would have measured of the crop's field of view, on the crop's ``h x w`` grid. This is
        what ``FastMRIImages(own_coils=True)`` trains on and what ``l2i reconstruct`` measures of
        a fully sampled file for such a run; it is only valid for fully sampled k-space (cropping
        the image of undersampled k-space mixes measured and unmeasured columns).
    """
    coils = center_crop(_ifft2c(kspace), crop)
    return coils, _centred_fft2(coils)


def kspace_to_magnitude(kspace: torch.Tensor, crop_size: Sequence[int]) -> torch.Tensor:
    """k-space -> centre-cropped magnitude image, the way fastMRI targets are made.

    Args:
        kspace: ``(..., 2, H, W)`` real/imaginary, DC at the centre (``H // 2, W // 2``).
        crop_size: ``(h, w)``, e.g. from :func:`fastmri_crop_size`.

    Returns:
        ``(..., 1, h, w)`` magnitude of ``ifft2c(kspace)`` after the centre crop, in the
        k-space's units (orthonormal FFT: image and k-space have equal energy).
    """
    if kspace.ndim < 3 or kspace.shape[-3] != 2:
        raise ValueError(f"kspace must be (..., 2, H, W); got shape {tuple(kspace.shape)}")
    z = torch.complex(kspace.select(-3, 0), kspace.select(-3, 1))
    image = center_crop(_ifft2c(z), crop_size)
    return image.abs().unsqueeze(-3)


def _python_attr(value: Any) -> Any:
    """HDF5 attribute -> plain Python value (numbers, str), so batches collate cleanly."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.generic):
        return value.item()
    return value


class FastMRISingleCoil(Dataset):
    """One item per slice of fastMRI single-coil HDF5 files (multi-coil ones too with ``coils``).

    Each item is a dict:

    - ``"kspace"``: float32 ``(2, H, W)``, real/imaginary of the stored k-space (multi-coil:
      ``(2, C, H, W)``);
    - ``"target"``: float32 ``(1, h, w)`` ``reconstruction_esc`` slice (multi-coil:
      ``reconstruction_rss``), when the file has one;
    - ``"mask"``: float32 ``(1, 1, W)`` in {0, 1}, broadcastable over the k-space, when the file
      has a ``mask`` (test split) and ``split_has_mask`` is not ``False``;
    - ``"crop_size"``: ``(h, w)`` from :func:`fastmri_crop_size`;
    - ``"recon_size"`` / ``"encoding_size"``: header ``(x, y, z)`` (only when there is a header);
    - ``"attrs"``: file attributes as Python values (``max``, ``norm``, ``acquisition``,
      ``patient_id``, and on the test split ``acceleration``, ``num_low_frequency``);
    - ``"fname"``: the file name, ``"slice"``: the slice number.

    Args:
        root_or_files: a directory (all ``*.h5`` in it, sorted), one file, or a list of files.
        split_has_mask: ``None`` returns a mask wherever a file has one; ``True`` demands one in
            every file (test split); ``False`` never returns one.
        transform: optional callable applied to each item dict.
        skip_bad_files: leave out files that fail the checks below (warning with the path) instead
            of raising; they are listed in ``skipped`` as ``(path, message)``.
        coils: ``"single"`` (default) accepts single-coil files only, ``"multi"`` multi-coil
            files only, ``"any"`` both.

    Raises:
        ValueError: naming the file, when it is not HDF5, lacks ``kspace``, has k-space that is
            not complex ``(slices, H, W)`` (or ``(slices, coils, H, W)`` as ``coils`` allows), a target or mask of the wrong shape, a malformed
            header, or neither a header nor a target to size the crop.
    """

    def __init__(
        self,
        root_or_files: str | os.PathLike | Sequence[str | os.PathLike],
        split_has_mask: bool | None = None,
        transform: Callable[[dict[str, Any]], Any] | None = None,
        skip_bad_files: bool = False,
        coils: str = "single",
    ) -> None:
        if coils not in ("any", "single", "multi"):
            raise ValueError(f"coils must be 'any', 'single' or 'multi', got {coils!r}")
        files = _h5_files(root_or_files)
        self.split_has_mask = split_has_mask
        self.transform = transform
        self.files, self.metadata, self.skipped = _inspect_files(
            files, lambda path: _inspect_file(path, split_has_mask, coils), skip_bad_files)
        self.examples = [(i, s) for i, meta in enumerate(self.metadata) for s in range(meta["num_slices"])]
        if not self.files:
            raise ValueError(f"none of the {len(files)} HDF5 files could be read; first problem: {self.skipped[0][1]}")

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> Any:
        f_idx, s = self.examples[index]
        path, meta = self.files[f_idx], self.metadata[f_idx]
        try:
            with h5py.File(path, "r") as hf:
                kspace = hf["kspace"][s]
                target = hf[meta["target_key"]][s] if meta["has_target"] else None
                mask = np.asarray(hf["mask"]) if meta["has_mask"] else None
        except (OSError, KeyError) as exc:
            raise ValueError(f"{path}: could not read slice {s} ({exc})") from exc
        item: dict[str, Any] = {
            "kspace": torch.from_numpy(np.stack([kspace.real, kspace.imag]).astype(np.float32)),  # (2, [C,] H, W)
            "crop_size": meta["crop_size"],
            "attrs": dict(meta["attrs"]),
            "fname": path.name,
            "slice": s,
        }
        if target is not None:
            item["target"] = torch.from_numpy(np.asarray(target, dtype=np.float32))[None]
        if mask is not None:
            item["mask"] = torch.from_numpy((mask.reshape(1, 1, -1) != 0).astype(np.float32))
        if meta["header"] is not None:
            item["recon_size"] = meta["header"]["recon_size"]
            item["encoding_size"] = meta["header"]["encoding_size"]
        return self.transform(item) if self.transform is not None else item


class FastMRIImages(Dataset):
    """Ground-truth complex images from fully sampled fastMRI files, for training with simulated masks.

    Item ``i`` is a float32 complex image ``(2, h, w)`` (real, imaginary): the centred
    orthonormal inverse FFT of a slice's fully sampled k-space, centre-cropped to the fastMRI crop
    (the target's size, e.g. 320 x 320, see :func:`fastmri_crop_size`) or to ``crop``, and divided
    by its volume's peak (the file's ``max`` attribute, else the max of its target, else the
    max of the cropped magnitudes), so every volume peaks at about 1. The training loop then
    simulates ``y = M F x + n`` with a retrospective mask, as for the embedded data.

    Single-coil files: ``|item|`` equals ``reconstruction_esc / max`` (the emulated single-coil
    target). Multi-coil files: the coil images are combined with sensitivities estimated from the
    central ``acs_fraction`` of the k-space columns (:func:`~learn2invert.operators.multicoil.
    estimate_sensitivities`, a SENSE / matched-filter combination), so the item is a complex image
    whose magnitude is close to ``reconstruction_rss / max`` (equal where the maps are exact) and
    whose phase is the object's minus its low-resolution phase; training on it simulates
    single-coil k-space of the coil-combined image.

    With ``own_coils`` (multi-coil files only) an item carries the slice's own coil data, to be
    undersampled instead of simulated: the dict ``{"image": (2, h, w), "kspace": (2, C, h, w)}``
    (:func:`~learn2invert.data.items.measured_item`, made by :meth:`coil_item`). ``kspace`` is the
    centred orthonormal FFT of the cropped coil images divided by the peak: the fully sampled
    k-space of the crop, with the scanner's coil sensitivities and noise. ``image`` combines the
    cropped coil images with maps estimated from the centred ``acs_fraction`` of the *crop's*
    columns (rounded down to an odd count), the block from which the training measurement
    (:class:`~learn2invert.operators.generator.Measurement`) estimates the solver's maps out of
    the masked k-space; so ``A^T`` of the fully sampled ``kspace`` is ``image`` to float32
    rounding, and the target is one the solver's operator can reach (maps estimated from other
    columns give a phase and magnitude of their own: on synthetic files, NMSE 1e-3 to 5e-3
    between the two combinations). This image is therefore close to, not equal to, the item
    without ``own_coils``. Files with fewer coils than the dataset's most are padded with all-zero
    coils, so that items batch: a zero coil measures nothing, its estimated map is 0, and it adds
    nothing to the SENSE model.

    Attributes:
        files: the readable files, in order; ``metadata``: what :func:`_inspect_file` found.
        volume_ids: for each item, the index of its file (volume) in ``files``.
        skipped: ``(path, message)`` of files left out with ``skip_bad_files``.

    Args:
        root_or_files: a directory (all ``*.h5`` in it, sorted), one file or a list of files.
        crop: ``(h, w)`` to crop every image to instead of each file's fastMRI crop; all items
            of a dataset must share one shape to be batched.
        coils: ``"any"``, ``"single"`` or ``"multi"``: which k-space layouts to accept.
        acs_fraction: multi-coil files: the fraction of central columns the coil sensitivities
            are estimated from (of the file's columns; with ``own_coils``, of the crop's).
        max_items: keep this many slices, evenly spaced over all volumes (validation subsets);
            ``None`` keeps all.
        skip_bad_files: leave out files that fail the checks (warning with the path) instead of
            raising.
        own_coils: items carry the slice's own coil k-space (see above); needs multi-coil files.

    Attributes (``own_coils``):
        coils: the number of coils ``C`` of every item (the most of any file).

    Raises:
        ConfigError: ``own_coils`` with ``coils="single"`` or with a single-coil file (naming it).
        ValueError: naming the file and key, for anything :class:`FastMRISingleCoil` refuses, a
            file with a ``mask`` (test split: its k-space is undersampled, it holds no ground
            truth), and (naming both) crops of different shapes without ``crop``; when an item
            is read, a slice whose k-space misses acquired columns or holds NaN / Inf.
    """

    def __init__(
        self,
        root_or_files: str | os.PathLike | Sequence[str | os.PathLike],
        crop: Sequence[int] | None = None,
        coils: str = "any",
        acs_fraction: float = ACS_FRACTION,
        max_items: int | None = None,
        skip_bad_files: bool = False,
        own_coils: bool = False,
    ) -> None:
        if coils not in ("any", "single", "multi"):
            raise ValueError(f"coils must be 'any', 'single' or 'multi', got {coils!r}")
        if not isinstance(own_coils, bool):
            raise ConfigError(f"config key 'data.params.own_coils' must be true or false, got {own_coils!r}")
        if own_coils and coils == "single":
            raise ConfigError("config keys 'data.params.own_coils' and 'data.params.coils': own_coils trains on the "
                              "files' own coil k-space, which single-coil files do not have; leave coils out (or multi)")
        self.own_coils = own_coils
        if not 0 < float(acs_fraction) <= 1:
            raise ValueError(f"acs_fraction must be in (0, 1], got {acs_fraction!r}")
        if crop is not None:
            if len(crop) != 2 or not all(isinstance(c, (int, np.integer)) and not isinstance(c, bool) and c > 0 for c in crop):
                raise ValueError(f"crop must be two positive ints (h, w), got {crop!r}")
            crop = (int(crop[0]), int(crop[1]))
        self.crop, self.acs_fraction = crop, float(acs_fraction)
        files = _h5_files(root_or_files)

        def inspect(path: Path) -> dict[str, Any]:
            meta = _inspect_file(path, None, coils)
            if meta["has_mask"]:
                raise ValueError(f"{path}: has a 'mask' dataset: its k-space is undersampled (a test-split file) "
                                 "and holds no ground truth to train or score on; reconstruct it with its own "
                                 "mask (l2i reconstruct RUN FILE OUT.h5)")
            meta["crop"] = self._crop_for(path, meta)
            return meta

        self.files, self.metadata, self.skipped = _inspect_files(files, inspect, skip_bad_files)
        if not self.files:
            raise ValueError(f"none of the {len(files)} HDF5 files could be read; first problem: {self.skipped[0][1]}")
        if own_coils:
            # A wrong kind of file is a config mistake, not a damaged file: never skipped.
            single = [path for path, meta in zip(self.files, self.metadata) if not meta["multicoil"]]
            if single:
                raise ConfigError(f"config key 'data.params.own_coils': trains on the files' own coil k-space, but "
                                  f"{single[0]} is single-coil (kspace (slices, H, W)){f' (and {len(single) - 1} more)' if len(single) > 1 else ''}; "
                                  "use multi-coil files (multicoil_train / multicoil_val) or leave own_coils out")
        self.coils = max(meta["coils"] for meta in self.metadata)
        shapes = {m["crop"] for m in self.metadata}
        if len(shapes) > 1:
            first = {shape: self.files[[m["crop"] for m in self.metadata].index(shape)] for shape in shapes}
            raise ValueError("the files crop to different image sizes, which cannot be batched: "
                             + "; ".join(f"{shape} ({path})" for shape, path in sorted(first.items()))
                             + "; set crop (data.params.crop: [h, w]) to one size")
        examples = [(f, s) for f, meta in enumerate(self.metadata) for s in range(meta["num_slices"])]
        if max_items is not None and max_items < len(examples):
            if max_items < 1:
                raise ValueError(f"max_items must be >= 1, got {max_items}")
            keep = np.unique(np.linspace(0, len(examples) - 1, int(max_items)).round().astype(int))
            examples = [examples[i] for i in keep]
        self.examples = examples
        self.volume_ids = [f for f, _ in examples]
        self._peaks: dict[int, float] = {}

    def _crop_for(self, path: Path, meta: dict[str, Any]) -> tuple[int, int]:
        crop = self.crop or meta["crop_size"]
        height, width = meta["shape"]
        if crop[0] > height or crop[1] > width:
            raise ValueError(f"{path}: cannot crop its {(height, width)} images to {crop}")
        return crop

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(2, h, w)`` of every item's image."""
        return (2, *self.metadata[0]["crop"])

    def __len__(self) -> int:
        return len(self.examples)

    def _read_kspace(self, f_idx: int, s: int) -> torch.Tensor:
        """Complex64 k-space ``([C,] H, W)`` of slice ``s`` of file ``f_idx``, checked finite and fully sampled."""
        path, meta = self.files[f_idx], self.metadata[f_idx]
        try:
            with h5py.File(path, "r") as hf:
                kspace = np.asarray(hf["kspace"][s])
        except (OSError, KeyError) as exc:
            raise ValueError(f"{path}: could not read slice {s} of 'kspace' ({exc})") from exc
        k = torch.from_numpy(kspace.astype(np.complex64))
        if not bool(torch.isfinite(torch.view_as_real(k)).all()):
            raise ValueError(f"{path}: 'kspace' slice {s} holds NaN or infinite values")
        # Ground truth needs every acquired column (the header's encodingLimits, else all of them).
        header = meta["header"]
        left, right = (0, meta["shape"][1])
        if header is not None and header["padding_left"] is not None:
            left, right = header["padding_left"], header["padding_right"]
        sampled = (k != 0).reshape(-1, meta["shape"][0], meta["shape"][1]).any(dim=0).any(dim=0)[left:right]
        if not bool(sampled.all()):
            raise ValueError(f"{path}: 'kspace' slice {s} is not fully sampled ({int(sampled.sum())} of the {right - left} "
                             "acquired columns hold data), so it holds no ground truth; undersampled files belong to the "
                             "test split (l2i reconstruct)")
        return k

    def _read(self, f_idx: int, s: int) -> torch.Tensor:
        """Unscaled cropped complex image ``(2, h, w)`` float32 of slice ``s`` of file ``f_idx``."""
        meta = self.metadata[f_idx]
        k = self._read_kspace(f_idx, s)
        if meta["multicoil"]:
            from ..operators.multicoil import estimate_sensitivities, sense_combine

            kspace_ri = torch.stack([k.real, k.imag])[None]  # (1, 2, C, H, W)
            acs = max(2, int(round(self.acs_fraction * meta["shape"][1])))
            maps = estimate_sensitivities(kspace_ri, acs=min(acs, meta["shape"][1]))
            coil_images = _ifft2c(k)
            image = sense_combine(torch.stack([coil_images.real, coil_images.imag])[None], maps)[0]
        else:
            image = _ifft2c(k)
            image = torch.stack([image.real, image.imag])
        return center_crop(image, meta["crop"]).to(torch.float32).contiguous()

    def coil_item(self, index: int) -> dict[str, torch.Tensor]:
        """Item ``index`` with its own coil data (multi-coil files; ``own_coils`` not required).

        The slice's coil images are centre-cropped, and everything is made from the crop, so that
        the truth is exactly what the SENSE operator of training gives back at full sampling:

        - ``"kspace"`` ``(2, C, h, w)``: centred orthonormal FFT of the cropped coil images, zero
          coils appended up to :attr:`coils`;
        - ``"maps"`` ``(2, C, h, w)``: sensitivities estimated from the centred
          :func:`~learn2invert.operators.multicoil.centred_acs_columns` ``(w, acs_fraction)``
          columns of ``kspace`` (unitless, ``sum_c |S_c|^2 = 1`` on the object, 0 off it), the
          same block and estimate :class:`~learn2invert.operators.generator.Measurement` gives
          the solver from the measured k-space;
        - ``"image"`` ``(2, h, w)``: the coil images combined with ``maps`` (SENSE /
          matched filter); its magnitude is close to the RSS target over ``max``.

        ``image`` and ``kspace`` are float32 and divided by the volume's peak (:meth:`peak`).
        """
        from ..operators.multicoil import centred_acs_columns, estimate_sensitivities, sense_combine

        f_idx, s = self.examples[index]
        meta, path = self.metadata[f_idx], self.files[f_idx]
        if not meta["multicoil"]:
            raise ValueError(f"{path}: single-coil file, it has no coil data (coil_item needs multi-coil files)")
        crop = meta["crop"]
        coils, kspace = crop_coil_kspace(self._read_kspace(f_idx, s), crop)  # (C, h, w) complex64 each
        kspace = torch.stack([kspace.real, kspace.imag]).to(torch.float32)
        maps = estimate_sensitivities(kspace[None], acs=centred_acs_columns(crop[1], self.acs_fraction))
        image = sense_combine(torch.stack([coils.real, coils.imag])[None], maps)[0].to(torch.float32)
        maps = maps[0].to(torch.float32)
        missing = self.coils - kspace.shape[1]
        if missing:
            kspace = torch.cat([kspace, kspace.new_zeros((2, missing, *crop))], dim=1)
            maps = torch.cat([maps, maps.new_zeros((2, missing, *crop))], dim=1)
        peak = self.peak(f_idx)
        return {"image": (image / peak).contiguous(), "kspace": (kspace / peak).contiguous(), "maps": maps.contiguous()}

    def peak(self, f_idx: int) -> float:
        """The scale of volume ``f_idx``: the ``max`` attribute, the target's max, or the max of
        the cropped magnitudes of all its slices (computed once)."""
        if f_idx not in self._peaks:
            meta, path = self.metadata[f_idx], self.files[f_idx]
            value = meta["attrs"].get("max")
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                value = None
                if meta["has_target"]:
                    with h5py.File(path, "r") as hf:
                        value = float(np.max(hf[meta["target_key"]][()]))
                if value is None or not (math.isfinite(value) and value > 0):
                    value = max(float(self._read(f_idx, s).norm(dim=0).max()) for s in range(meta["num_slices"]))
            if not value > 0:
                raise ValueError(f"{path}: the volume is all zeros")
            self._peaks[f_idx] = float(value)
        return self._peaks[f_idx]

    def __getitem__(self, index: int) -> torch.Tensor | dict[str, torch.Tensor]:
        if self.own_coils:
            item = self.coil_item(index)
            return measured_item(item["image"], item["kspace"])
        f_idx, s = self.examples[index]
        return self._read(f_idx, s) / self.peak(f_idx)


def _inspect_file(path: Path, split_has_mask: bool | None, coils: str = "single") -> dict[str, Any]:
    """Validate one file's layout and gather what every slice shares (sizes, attributes).

    ``coils``: ``"single"`` accepts only single-coil k-space ``(slices, H, W)``, ``"multi"`` only
    multi-coil ``(slices, coils, H, W)``, ``"any"`` either. Raises ValueError naming the file and
    the offending key.
    """
    try:
        hf = h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path}: not a readable HDF5 file ({exc})") from exc
    try:
        with hf:
            return _inspect_open_file(path, hf, split_has_mask, coils)
    except (OSError, KeyError, RuntimeError) as exc:  # damaged objects inside a valid HDF5 file
        raise ValueError(f"{path}: could not read the file's contents ({exc})") from exc


def _dataset(path: Path, hf: h5py.File, key: str) -> h5py.Dataset:
    """``hf[key]`` when it is a dataset (not a group); ValueError naming file and key otherwise."""
    obj = hf[key]
    if not isinstance(obj, h5py.Dataset):
        raise ValueError(f"{path}: '{key}' must be a dataset, got an HDF5 {type(obj).__name__}")
    return obj


def _inspect_open_file(path: Path, hf: h5py.File, split_has_mask: bool | None, coils: str = "single") -> dict[str, Any]:
    """The checks of :func:`_inspect_file` on an open file; ``path`` is only for messages."""
    if "kspace" not in hf:
        raise ValueError(f"{path}: no 'kspace' dataset (found {sorted(hf.keys())})")
    kspace = _dataset(path, hf, "kspace")
    allowed = {"single": (3,), "multi": (4,), "any": (3, 4)}[coils]
    if kspace.ndim not in allowed:
        shape = kspace.shape
        if coils == "single":
            raise ValueError(
                f"{path}: 'kspace' must be single-coil (slices, H, W); got shape {shape}"
                + (" (multi-coil files are (slices, coils, H, W))" if len(shape) == 4 else ""))
        expected = "(slices, coils, H, W)" if coils == "multi" else "(slices, H, W) or (slices, coils, H, W)"
        raise ValueError(f"{path}: 'kspace' must be {expected}; got shape {shape}")
    if kspace.dtype.kind != "c":
        raise ValueError(f"{path}: 'kspace' must be complex (complex64 in fastMRI files), got dtype {kspace.dtype}")
    multicoil = kspace.ndim == 4
    num_slices, height, width = kspace.shape[0], kspace.shape[-2], kspace.shape[-1]
    if num_slices == 0 or height == 0 or width == 0:
        raise ValueError(f"{path}: 'kspace' is empty (shape {kspace.shape})")
    target_key = TARGET_KEYS[multicoil]
    other_key = TARGET_KEYS[not multicoil]
    if other_key in hf and target_key not in hf:
        kind = "multi-coil" if multicoil else "single-coil"
        raise ValueError(f"{path}: {kind} 'kspace' of shape {kspace.shape} comes with '{other_key}', the target of "
                         f"{'single' if multicoil else 'multi'}-coil files; expected '{target_key}'")
    has_target = target_key in hf
    target_shape = None
    if has_target:
        target = _dataset(path, hf, target_key)
        target_shape = target.shape
        if len(target_shape) != 3 or target_shape[0] != num_slices:
            raise ValueError(
                f"{path}: '{target_key}' must be ({num_slices}, h, w) like the k-space slices; got {target_shape}"
            )
        if target.dtype.kind != "f":
            raise ValueError(f"{path}: '{target_key}' must be a float magnitude image (float32), got dtype {target.dtype}")
    has_mask = "mask" in hf and split_has_mask is not False
    if split_has_mask and "mask" not in hf:
        raise ValueError(f"{path}: split_has_mask=True but the file has no 'mask' dataset")
    if has_mask:
        mask = _dataset(path, hf, "mask")
        if mask.size != width:
            raise ValueError(f"{path}: 'mask' must have one entry per k-space column ({width}); got {mask.shape}")
        if mask.dtype.kind not in "biuf":
            raise ValueError(f"{path}: 'mask' must be boolean or numeric (0/1 per column), got dtype {mask.dtype}")
    header = None
    if "ismrmrd_header" in hf:
        raw = _dataset(path, hf, "ismrmrd_header")[()]
        raw = raw.item() if isinstance(raw, np.ndarray) else raw
        if not isinstance(raw, (bytes, str)):
            raise ValueError(f"{path}: 'ismrmrd_header' must hold the XML text (bytes), got {type(raw).__name__}")
        try:
            header = parse_ismrmrd_header(raw)
        except ValueError as exc:
            raise ValueError(f"{path}: 'ismrmrd_header': {exc}") from exc
        encoded = header["encoding_size"][:2]
        if encoded != (height, width):
            raise ValueError(f"{path}: 'ismrmrd_header' encoding/encodedSpace/matrixSize (x, y) = {encoded} does not "
                             f"match the k-space's (H, W) = {(height, width)}")
        if min(header["recon_size"][:2]) < 1:
            raise ValueError(f"{path}: 'ismrmrd_header' reconSpace/matrixSize {header['recon_size']} must be positive")
        if header["padding_left"] is not None and not 0 <= header["padding_left"] < header["padding_right"] <= width:
            raise ValueError(f"{path}: 'ismrmrd_header' encodingLimits/kspace_encoding_step_1 put the acquired columns "
                             f"at [{header['padding_left']}, {header['padding_right']}), outside the {width} k-space columns")
    if header is None and target_shape is None:
        raise ValueError(f"{path}: no 'ismrmrd_header' and no '{target_key}' to size the image crop")
    attrs = {k: _python_attr(v) for k, v in hf.attrs.items()}
    crop = fastmri_crop_size((height, width), header["recon_size"] if header else None, target_shape)
    if crop[0] > height:
        raise ValueError(f"{path}: the crop {crop} (from {'the target' if target_shape else 'the header recon size'}) "
                         f"is taller than the k-space's {height} rows")
    return {
        "num_slices": num_slices,
        "shape": (height, width),
        "coils": kspace.shape[1] if multicoil else 0,
        "multicoil": multicoil,
        "target_key": target_key,
        "has_target": has_target,
        "has_mask": has_mask,
        "header": header,
        "crop_size": crop,
        "attrs": attrs,
    }


def _h5_files(root_or_files: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    """Expand a directory, a file or a list of files into a sorted list of paths."""
    if isinstance(root_or_files, (str, os.PathLike)):
        root = Path(root_or_files)
        files = sorted(p for p in root.iterdir() if p.suffix == ".h5") if root.is_dir() else [root]
    else:
        files = [Path(p) for p in root_or_files]
    if not files:
        raise ValueError(f"no .h5 files found in {root_or_files}")
    for f in files:
        if not f.is_file():
            raise ValueError(f"{f}: no such file")
    return files


def _inspect_files(files: list[Path], inspect: Callable[[Path], dict[str, Any]],
                   skip_bad_files: bool) -> tuple[list[Path], list[dict[str, Any]], list[tuple[Path, str]]]:
    """``inspect`` every file: (readable files, their metadata, skipped ``(path, reason)``).

    A file whose ``inspect`` raises ValueError stops everything, or with ``skip_bad_files`` is
    skipped with a warning naming the problem.
    """
    kept, metadata, skipped = [], [], []
    for path in files:
        try:
            meta = inspect(path)
        except ValueError as err:
            if not skip_bad_files:
                raise
            skipped.append((path, str(err)))
            warnings.warn(f"skipping unreadable file (skip_bad_files): {err}", RuntimeWarning, stacklevel=3)
            continue
        kept.append(path)
        metadata.append(meta)
    return kept, metadata, skipped
