"""``l2i reconstruct``: run a trained solver on a user's own file.

Three kinds of input:

- **a measured image** (PNG / JPEG / TIFF) for runs whose measurements are images (denoising,
  Gaussian blur, super-resolution, where ``y`` is the low-resolution image): the file is ``y``;
- **a clean image or a NIfTI file with** ``simulate=True``: the run's measurement is simulated
  (seeded), reconstructed and scored against the file, slice by slice for volumes (a 2D slice,
  a 3D volume or one ``frame`` of a 4D series); a NIfTI estimate is written on the input's own
  voxel grid (axis order and affine), so it overlays on the input in a viewer;
- **a DICOM series with** ``simulate=True``: a folder of ``.dcm`` slices (or a multi-frame
  ``.dcm``) is read as one volume sorted along the slice normal
  (:func:`~learn2invert.data.dicom.load_dicom_series`) and reconstructed slice by slice; a NIfTI
  estimate carries the scan's voxel spacing and position in its affine. DICOM values are taken
  after the rescale slope and intercept, and the pixel spacing of a ``.png`` / ``.npy`` output,
  which cannot hold it, is printed;
- **a fastMRI single-coil HDF5 file** for MRI runs: each slice's (undersampled) k-space is
  reconstructed and the result is written like a fastMRI submission. A file with a ``mask``
  (test split) is reconstructed with that mask; a fully sampled file (train / val split) is first
  undersampled retrospectively with the run's mask settings (seeded, one mask for the volume,
  announced in one printed line), so the scores against its target measure the model. A
  multi-coil file is reconstructed with the SENSE operator (:class:`~learn2invert.operators.
  MultiCoilMRI`) and coil sensitivities estimated from its calibration region; a run trained on
  the files' own coil k-space (``data.params.own_coils``) measures a fully sampled multi-coil
  file the way its training did (the k-space of the cropped coil images, maps from the centred
  block of columns; see :func:`reconstruct_fastmri`).

Every mode writes the estimate to ``output`` and a side-by-side figure to
``<output stem>_side_by_side.png``. Input files with NaN or infinite values are refused, naming
the file and counting both; a colour photo given to a grey run is converted with a warning.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .. import metrics
from ..data.dicom import DicomSeries, load_dicom_series, resolve_dicom_paths, to_unit_range
from ..data.fastmri import FastMRISingleCoil, center_crop, crop_coil_kspace, kspace_to_magnitude
from ..data.image_folder import read_image
from ..data.nifti import read_nifti, save_nifti
from ..operators import MultiCoilMRI, SingleCoilMRI
from ..operators.multicoil import centred_acs_columns, estimate_sensitivities
from ..operators.base import check_finite
from ..operators.fft import complex_abs
from ..operators.likelihood import back_projection, is_linear
from ..outputs import check_output_file
from ..operators.generator import component_config, Measurement, uses_own_coils
from ..train.loop import resolve_device
from ..train.validate import magnitude
from .ensemble import ENSEMBLE_SIZES, self_ensemble
from .load import load_solver

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm")  # .dcm: a DICOM image (pydicom); multi-frame: a volume
NIFTI_SUFFIXES = (".nii", ".nii.gz")
FASTMRI_SUFFIXES = (".h5",)
SINOGRAM_SUFFIXES = (".npy",)
OUTPUT_SUFFIXES = {"image": (".png", ".npy"), "nifti": NIFTI_SUFFIXES + (".npy",), "fastmri": (".h5",),
                   "sinogram": (".png", ".npy"), "dicom_series": NIFTI_SUFFIXES + (".npy",)}
# Operators whose measurement y is itself an image a user can hold in a file.
IMAGE_MEASUREMENTS = ("denoising", "gaussian_blur", "super_resolution")
# Operators built for one image size: the input must have exactly the run's image shape.
SHAPE_BOUND = ("random_projection", "ct")


@dataclass
class Run:
    """A trained run ready to reconstruct: the solver and what it was trained on."""

    solver: torch.nn.Module
    config: dict
    image_shape: tuple[int, ...]  # (C, H, W) of one training image
    device: torch.device
    ensemble: int = 1  # reconstructions averaged over flipped/rotated copies (inference.ensemble)

    @property
    def operator(self) -> str:
        return self.config["operator"]["name"]


def reconstruct(run_dir: str | Path, input_path: str | Path, output: str | Path, simulate: bool = False,
                seed: int = 0, axis: int = 2, device: str = "cpu", frame: int | None = None,
                sigma: float | None = None, progress: bool = True, ensemble: int = 1) -> dict:
    """Reconstruct ``input_path`` with the run in ``run_dir`` and write ``output`` plus a figure.

    Args:
        run_dir: a folder written by ``l2i train``.
        input_path: an image (PNG / JPEG / TIFF, or a DICOM ``.dcm``), a NIfTI file (``.nii``,
            ``.nii.gz``: a 2D slice, a 3D volume or a 4D series, with ``simulate``), a folder of
            DICOM slices of one series or a multi-frame ``.dcm`` (a volume, with ``simulate``), or
            a fastMRI single- or multi-coil ``.h5`` file (MRI runs).
        output: ``.png`` or ``.npy`` for images, ``.nii`` / ``.nii.gz`` / ``.npy`` for volumes,
            ``.h5`` for fastMRI files. A NIfTI output has the input's shape, axis order and
            affine (one 3D volume for a 4D series); for DICOM input (also a single ``.dcm`` with
            ``simulate``) the scan's voxel spacing and position (:class:`DicomSeries` ``.affine``).
        simulate: treat the input as the clean truth and simulate the run's measurement of it.
        seed: seed of the simulated physics and noise.
        axis: NIfTI volumes are reconstructed slice by slice along this voxel axis (0, 1, 2 of
            the RAS+ volume; 2 = axial). A single slice (a 2D file, or a 3D one with one voxel
            along one axis) is reconstructed as that slice whatever ``axis``.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        frame: the volume (0-based) of a 4D NIfTI series to reconstruct; required for series
            of more than one frame, refused for other inputs.
        sigma: the noise standard deviation of the input, in measurement units (for denoising,
            blur and super-resolution: the image's [0, 1] intensities, e.g. 0.1 for 25.5 / 255),
            told to the solver instead of the run's ``operator.noise_sigma``; with ``simulate``
            it is also the noise that is simulated. Floored at 1e-3 like in training. Default:
            the run's config (the mean of a [low, high] range).
        progress: a progress bar per slice of a fastMRI volume, and its notices printed (stdout),
            as are DICOM inputs' spacing notices.
        ensemble: 2, 4 or 8: average the reconstructions of that many flipped and rotated copies
            of the problem (:func:`~learn2invert.inference.ensemble.self_ensemble`; 8 needs
            square images), at that many times the time; 1 (default): the solver once.

    A run trained on an operator mixture (``operator.mixture``) reconstructs with the first
    operator of its list (its config's entry 0).

    Returns:
        ``{"output": path, "side_by_side": path}`` plus, when there is a truth to compare with,
        ``"metrics": {"adjoint": {"psnr", "ssim"}, "estimate": {"psnr", "ssim"}}``. fastMRI
        files add ``"slices"``, ``"mask_source"`` (``"file"``, ``"retrospective"`` or
        ``"sampled columns"``) and, for a retrospectively undersampled file, ``"notice"`` (the
        printed line) and ``"acceleration"``; an own-coils run's fully sampled multi-coil file
        adds ``"field_of_view"``, the ``(h, w)`` crop that was measured. DICOM inputs add
        ``"notice"`` (the printed line), ``"pixel_spacing_mm"`` ((row, column) of the output
        image) or, for volumes, ``"spacing_mm"`` ((slice, row, column)), ``"slices"`` and
        ``"order"``, and ``"value_range"``: the stored values (after the rescale slope and
        intercept) mapped to [0, 1] for the solver.

    Raises:
        ValueError: naming the path for a missing run folder or input, an unsupported file
            extension, an input with NaN or infinite values (counted), or an input the run
            cannot reconstruct (wrong size, non-image measurement without ``simulate``, a 4D
            series without ``frame``, ``simulate`` with a run trained on own coil k-space,
            ``data.params.own_coils``); an ``output`` that is a folder or cannot be written, a
            negative ``sigma`` (both before the model is loaded); a run that is a flow prior; a
            DICOM series (folder or multi-frame file) without ``simulate`` or to a ``.png``, a
            folder without ``*.dcm`` files, and every bad DICOM file
            :func:`~learn2invert.data.dicom.load_dicom_series` refuses (named with its folder).

    Warns:
        UserWarning: naming the file, once, when a grey run is given a colour image (it is
            converted to grey luminance).
    """
    run_dir, input_path, output = Path(run_dir), Path(input_path), Path(output)
    if ensemble not in ENSEMBLE_SIZES:
        raise ValueError(f"--ensemble must be one of {ENSEMBLE_SIZES}, got {ensemble!r}")
    if sigma is not None and not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"--sigma is the noise standard deviation of the input and must be a number >= 0, got {sigma!r}")
    if not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} does not exist")
    if input_path.is_dir():  # a folder is read as one DICOM series
        try:
            resolve_dicom_paths(input_path)
        except ValueError:
            raise ValueError(f"input {input_path} is a folder: a folder is read as one DICOM series, and it holds "
                             "no *.dcm files") from None
        kind = "dicom_series"
    elif not input_path.is_file():
        raise ValueError(f"input file {input_path} does not exist")
    else:
        kind = _file_kind(input_path)
    dicom = kind == "dicom_series" or input_path.suffix.lower() == ".dcm"
    if frame is not None and kind != "nifti":
        raise ValueError(f"frame={frame!r} chooses a volume of a 4D NIfTI series; {input_path} is not a NIfTI file")
    # Before the model is loaded: a folder given as OUTPUT, or a read-only folder, fails now in one line.
    check_output_file(output, example=f"estimate{OUTPUT_SUFFIXES[kind][0]}")
    allowed = OUTPUT_SUFFIXES[kind] + (NIFTI_SUFFIXES if kind == "image" and dicom else ())
    if not output.name.lower().endswith(allowed):
        raise ValueError(f"unsupported output file {output} for a {'DICOM' if dicom else kind} input: expected one of "
                         f"{', '.join(allowed)}")
    nifti_output = output.name.lower().endswith(NIFTI_SUFFIXES)
    if dicom and not simulate and (kind == "dicom_series" or nifti_output):
        raise ValueError(f"{input_path}: a DICOM {'series' if kind == 'dicom_series' else 'image written as NIfTI'} "
                         "is taken as the clean truth; pass --simulate")
    solver, config, _, image_shape = load_solver(run_dir, resolve_device(device))
    if config["operator"].get("mixture"):  # a run trained on several operators reconstructs with its first one
        config = component_config(config, 0)
    if sigma is not None:  # the user's noise level replaces the training one, for the solver and any simulation
        config = {**config, "operator": {**config["operator"], "noise_sigma": float(sigma)}}
    run = Run(solver, config, image_shape, next(solver.parameters()).device, ensemble)
    if kind == "fastmri":
        if simulate:
            raise ValueError(f"{input_path} is a fastMRI file, already a measurement (a fully sampled one is "
                             "undersampled with the run's mask settings without --simulate): drop --simulate")
        return reconstruct_fastmri(run, input_path, output, seed=seed, progress=progress)
    if kind == "sinogram":
        if simulate or run.operator != "ct":
            raise ValueError(f"{input_path}: a .npy input is a measured CT sinogram (float32, angles x detectors) "
                             f"for a CT run without --simulate; this run's operator is {run.operator!r}"
                             + (" and --simulate needs a clean image file (.png, ...)" if simulate else ""))
        return reconstruct_sinogram(run, input_path, output)
    if kind == "nifti":
        if not simulate:
            raise ValueError(f"{input_path}: a NIfTI volume is taken as the clean truth; pass --simulate")
        return simulate_volume(run, input_path, output, seed, axis, frame)
    if dicom and simulate:
        series = load_dicom_series(input_path)  # a folder, a multi-frame file, or one slice
        if kind == "dicom_series" or nifti_output or len(series.slices) > 1:
            if not output.name.lower().endswith(OUTPUT_SUFFIXES["dicom_series"]):
                raise ValueError(f"{input_path} is a volume of {len(series.slices)} DICOM frames: write it as one of "
                                 f"{', '.join(OUTPUT_SUFFIXES['dicom_series'])}, not {output.name}")
            return simulate_dicom_series(run, input_path, output, seed, series=series, progress=progress)
    if simulate:
        return simulate_image(run, input_path, output, seed, progress=progress)
    return reconstruct_measured_image(run, input_path, output, progress=progress)


# ------------------------------------------------------------------------------------ the modes

def reconstruct_measured_image(run: Run, path: Path, output: Path, progress: bool = True) -> dict:
    """The image file is the measurement ``y`` of an image-to-image operator; no truth, no scores.
    A DICOM file adds its spacing notice (printed with ``progress``; see :func:`_dicom_image_notice`)."""
    if run.operator == "ct":
        raise ValueError(
            f"{path}: a CT run reconstructs a measured sinogram given as .npy (float32, its units kept; an image "
            f"file has lost them), or a clean image with --simulate")
    if run.operator not in IMAGE_MEASUREMENTS:
        raise ValueError(
            f"the run's operator {run.operator!r} does not measure images, so {path} cannot be its measurement; "
            f"pass --simulate to treat {path} as the clean image and simulate the measurement "
            f"(image measurements: {', '.join(IMAGE_MEASUREMENTS)})")
    y, dicom = _read_image(path, run)
    y = y[None]  # (1, C, h, w); for super-resolution the low-resolution image
    operator = Measurement(run.config, run.image_shape).fixed  # these operators work at any size
    estimate = _solve(run, y, operator, _config_sigma(run.config))
    _save_image(output, estimate[0])
    side = _side_by_side(output, [("input y", y[0]), ("estimate", estimate[0])], peak=1.0)
    result = {"output": str(output), "side_by_side": str(side)}
    if dicom:
        zoom = y.shape[-2] / estimate.shape[-2], y.shape[-1] / estimate.shape[-1]  # super-resolution: finer pixels
        result.update(_dicom_image_notice(path, output, dicom, zoom, progress))
    return result


def reconstruct_sinogram(run: Run, path: Path, output: Path) -> dict:
    """A measured sinogram ``(angles, detectors)`` or ``(C, angles, detectors)`` in a ``.npy`` file,
    of the run's CT geometry: reconstruct it; no truth, no scores (FBP is shown beside it)."""
    operator = Measurement(run.config, run.image_shape).fixed
    expected = (run.image_shape[0], operator.n_angles, operator.n_detectors)
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: not a readable .npy array ({err})") from None
    if array.ndim == 2:
        array = array[None]
    if tuple(array.shape) != expected or not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{path}: a sinogram of shape {tuple(array.shape)} ({array.dtype}); the run's CT geometry "
                         f"measures {expected[1]} angles x {expected[2]} detectors, shape {expected[1:]} or {expected}")
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"{path}: the sinogram has {int(bad.sum())} NaN or infinite values")
    y = torch.from_numpy(array.astype(np.float32))[None]
    estimate = _solve(run, y, operator, _config_sigma(run.config))
    _save_image(output, estimate[0])
    fbp = operator.fbp(y)[0]
    side = _side_by_side(output, [("FBP", fbp), ("estimate", estimate[0])], peak=float(estimate.max().clamp_min(1e-6)))
    return {"output": str(output), "side_by_side": str(side)}


def simulate_image(run: Run, path: Path, output: Path, seed: int, progress: bool = True) -> dict:
    """The image file is the truth ``x``: simulate ``y``, reconstruct, score adjoint and estimate.
    A DICOM file adds its spacing notice (printed with ``progress``; see :func:`_dicom_image_notice`)."""
    x, dicom = _read_image(path, run)
    x = _to_run_channels(x, run)[None]  # (1, C, H, W)
    generator = torch.Generator().manual_seed(seed)
    adjoint, estimate, title = _simulate_and_solve(run, _measurement(run, tuple(x.shape[1:])), x, generator)
    _save_image(output, estimate[0])
    side = _side_by_side(output, _comparison_panels(adjoint[0], estimate[0], x[0], title),
                         peak=float(magnitude(x).max()))
    data_range = run.config["data"]["data_range"]
    scores = {name: _scores(magnitude(img), magnitude(x), data_range)
              for name, img in (("adjoint", adjoint), ("estimate", estimate))}
    result = {"output": str(output), "side_by_side": str(side), "metrics": scores}
    if dicom:
        result.update(_dicom_image_notice(path, output, dicom, (1.0, 1.0), progress))
    return result


def simulate_volume(run: Run, path: Path, output: Path, seed: int, axis: int, frame: int | None = None) -> dict:
    """A NIfTI file is the truth: simulate and reconstruct each slice along ``axis``.

    The volume is divided by its peak magnitude (training images peak at about 1, and the noise
    level is in those units); the saved estimate is scaled back to the file's units. Complex
    estimates are saved as magnitudes. A NIfTI output is written on the input's voxel grid (its
    axis order, shape and affine); slicing happens in RAS+ order, whatever the file's. A single
    slice (2D file) is reconstructed as such, whatever ``axis``; ``frame`` picks a 4D volume.
    """
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis!r}")
    if run.image_shape[0] == 3:
        raise ValueError(f"the run reconstructs RGB images; {path} is a volume of grey (or complex) slices")
    nifti = read_nifti(path, frame)
    volume = nifti.volume  # (C, X, Y, Z), RAS+
    check_finite(volume, f"input file {path}")
    axis = nifti.slice_axis if nifti.slice_axis is not None else axis
    peak = float(volume.norm(dim=0).max())
    if peak <= 0:
        raise ValueError(f"{path}: the volume is all zeros")
    slices = _to_run_channels(volume / peak, run).movedim(axis + 1, 0)  # (N, C, h, w)
    adjoint, estimate, title = _simulate_slices(run, slices, seed)
    if output.suffix.lower() == ".npy":
        np.save(output, (estimate * peak).numpy())  # raw (N, C, h, w) slices in the file's units
    else:
        save_nifti(output, (magnitude(estimate)[:, 0] * peak).movedim(0, axis), like=nifti)
    return _volume_result(run, output, slices, adjoint, estimate, title)


def simulate_dicom_series(run: Run, path: Path, output: Path, seed: int, series: DicomSeries | None = None,
                          progress: bool = True) -> dict:
    """A DICOM series (a folder of slices, or a multi-frame file) is the truth: simulate and
    reconstruct each slice.

    The volume ``(N, H, W)`` in stored units (each slice's rescale slope and intercept applied) is
    mapped to [0, 1] by its minimum and maximum, as :class:`~learn2invert.data.DicomImages` does
    for training, slices sorted along the slice normal (:func:`load_dicom_series`). The estimate's
    magnitude ``(N, H, W)`` is mapped back to the stored units and written as ``.npy`` or as NIfTI
    with the series' affine (voxel spacing and position: :meth:`DicomSeries.save_nifti`). A
    notice (printed with ``progress``) gives the slice order, the spacing and the value range.
    """
    if run.image_shape[0] == 3:
        raise ValueError(f"the run reconstructs RGB images; {path} is a volume of grey slices")
    series = load_dicom_series(path) if series is None else series
    truth, (low, high) = to_unit_range(series.volume, path, "series")  # (N, H, W) in [0, 1]
    slices = _to_run_channels(truth[None], run).movedim(1, 0)  # (N, C, H, W)
    adjoint, estimate, title = _simulate_slices(run, slices, seed)
    values = magnitude(estimate)[:, 0].double().numpy() * (high - low) + low  # (N, H, W), stored units
    nifti_output = output.name.lower().endswith(NIFTI_SUFFIXES)
    if nifti_output:
        series.save_nifti(output, values)
    else:
        np.save(output, values.astype(np.float32))
    result = _volume_result(run, output, slices, adjoint, estimate, title)
    spacing = " x ".join(f"{s:g}" for s in series.spacing)
    notice = (f"{path.name}: {len(series.slices)} slice(s) sorted by {series.order}, voxel spacing {spacing} mm "
              f"(slice, row, column), values {low:g} to {high:g} (after RescaleSlope / RescaleIntercept) mapped to "
              f"[0, 1] for the solver and back for {output.name}; "
              + ("its affine keeps the spacing and position" if nifti_output
                 else f"{output.name} does not store the spacing (write .nii.gz to keep it)"))
    if progress:
        tqdm.write(notice)
    return {**result, "notice": notice, "spacing_mm": list(series.spacing), "slices": len(series.slices),
            "order": series.order, "value_range": [low, high]}


def reconstruct_fastmri(run: Run, path: Path, output: Path, seed: int = 0, progress: bool = True) -> dict:
    """Reconstruct every slice of a fastMRI single- or multi-coil file; write ``reconstruction``
    (slices, h, w).

    The measurement: the file's k-space under

    - the file's ``mask`` when it has one (test split): no truth, no scores;
    - a retrospective mask when the file is fully sampled (every column of the acquired range the
      header's ``encodingLimits`` give, or of all columns, holds data): drawn from the run's
      ``operator`` settings (mask type, acceleration, centre fraction) with ``seed``, one mask
      for the whole volume as fastMRI's validation masks, no extra noise (the data carry their
      own); a one-line notice says so (printed with ``progress``). Scored against the file's
      target (``reconstruction_esc``), else the fully sampled image;
    - otherwise (undersampled k-space without a ``mask`` dataset) the columns that hold data;
      scored against the target when the file has one.

    Multi-coil files are measured by :class:`MultiCoilMRI` with coil sensitivities estimated
    from the calibration region of the (undersampled) k-space; the solver sees the SENSE data term,
    its estimate is the coil-combined image, and the truth is the root-sum-of-squares target.

    A run trained with ``data.params.own_coils: true`` learned on the k-space of the cropped coil
    images, with maps from a fixed centred block of that k-space's columns. A fully sampled
    multi-coil file is measured the same way for it (:func:`fastmri_measurements`): each slice's
    coil images are centre-cropped to the run's crop (``data.params.crop``, else the file's
    fastMRI crop) and transformed back (:func:`~learn2invert.data.fastmri.crop_coil_kspace`),
    undersampled by the run's mask drawn over the *crop's* columns (seeded, one for the volume),
    and given :class:`MultiCoilMRI` with maps from the centred
    :func:`~learn2invert.operators.multicoil.centred_acs_columns` ``(w, data.params.acs_fraction)``
    columns (:meth:`~learn2invert.operators.generator.Measurement.measure_own_kspace`, the
    training measurement itself). The estimate then covers that crop only; it is cropped to the
    file's crop where that is smaller, and the target to the run's crop where that is smaller.
    A file whose k-space is already undersampled (a test file with its ``mask``, or one without
    it) cannot be measured that way: its mask is defined on the full width, and cropping the
    image of undersampled k-space in the phase-encode direction convolves measured with
    unmeasured columns, so the result is no masked k-space of the crop. Such a file, and a
    single-coil file, is reconstructed on the full field of view with maps from its calibration
    region, as for any run: a model that saw only 320-column crops and centred-block maps is
    then used off its training distribution.

    Images are reconstructed at the k-space's full size (the solvers are convolutional), then
    centre cropped to the recon size and reduced to magnitudes, as fastMRI's targets are. The
    k-space is scaled so the zero-filled volume peaks at 1 (the training images' range) and the
    estimate is scaled back, so ``reconstruction`` is in the file's units. Nothing is written
    when the file fails its checks.
    """
    if run.operator != "mri":
        raise ValueError(f"{path} is fastMRI k-space, but the run's operator is {run.operator!r}, not 'mri'")
    items = list(FastMRISingleCoil(path, coils="any"))
    check_finite(torch.cat([item["kspace"].reshape(-1) for item in items]), f"input file {path}")
    measured, info = fastmri_measurements(run, items, path, seed)
    if info.get("notice") and progress:
        tqdm.write(info["notice"])
    if "field_of_view" in info:  # own-coils run: the estimates cover the measured crop only
        items = [_within_field_of_view(item, info["field_of_view"]) for item in items]
    zero_filled, estimate = _reconstruct_kspace_volume(run, items, measured, path, progress)
    _save_fastmri(output, estimate)
    middle = len(items) // 2
    panels = [("zero-filled", zero_filled[middle][None]), ("estimate", estimate[middle][None])]
    peak = float(estimate[middle].max())
    result = {"output": str(output), "side_by_side": "", "slices": len(items), **info}
    truth = None
    if all("target" in item for item in items):
        truth = torch.cat([item["target"] for item in items])  # (slices, h, w)
    elif info["mask_source"] == "retrospective":  # the fully sampled k-space is the truth
        truth = torch.cat([_full_magnitude(item) for item in items])
    if truth is not None and info["mask_source"] != "file":
        # Scores only where the reconstruction had something to recover and a truth to meet.
        panels.append(("target", truth[middle][None]))
        peak = float(truth[middle].max())
        # fastMRI's volume metrics: the peak is the target volume's max.
        result["metrics"] = {name: _scores(img[None, None], truth[None, None], None)
                             for name, img in (("adjoint", zero_filled), ("estimate", estimate))}
    result["side_by_side"] = str(_side_by_side(output, panels, peak))
    return result


def _sampled_columns(items: list[dict]) -> torch.Tensor:
    """``(W,)`` bool: the k-space columns holding any nonzero value in any slice (and coil)."""
    width = items[0]["kspace"].shape[-1]
    return torch.stack([(item["kspace"] != 0).reshape(-1, width).any(dim=0) for item in items]).any(dim=0)


def _full_magnitude(item: dict) -> torch.Tensor:
    """``(1, h, w)`` cropped magnitude of a fully sampled item: ``|ifft2c|`` (single-coil) or the
    root-sum-of-squares of the coil images (multi-coil), as fastMRI's targets are made."""
    kspace = item["kspace"]
    if kspace.dim() == 3:
        return kspace_to_magnitude(kspace, item["crop_size"])
    coils = kspace_to_magnitude(kspace.movedim(0, 1), item["crop_size"])  # (C, 1, h, w) per coil
    return coils.pow(2).sum(dim=0).sqrt()


def _within_field_of_view(item: dict, field_of_view: tuple[int, int]) -> dict:
    """A fastMRI item whose ``crop_size`` (and ``target``) are narrowed to fit ``field_of_view``
    ``(h, w)``, the crop an own-coils run measured; the item itself when its crop already fits."""
    crop = tuple(min(int(c), int(f)) for c, f in zip(item["crop_size"], field_of_view))
    if crop == tuple(item["crop_size"]):
        return item
    narrowed = {**item, "crop_size": crop}
    if "target" in item:
        narrowed["target"] = center_crop(item["target"], crop)
    return narrowed


def _own_coil_measurements(run: Run, items: list[dict], path: Path, seed: int) -> tuple[list[tuple], dict]:
    """A fully sampled multi-coil file measured as an own-coils run's training measured its slices.

    Each slice's k-space ``(2, C, H, W)`` becomes the k-space of its coil images centre-cropped to
    the run's crop ``(h, w)`` (``data.params.crop``, else the file's fastMRI crop, as
    ``FastMRIImages`` chooses it), and is measured by the training measurement
    (:meth:`Measurement.measure_own_kspace`) with a generator seeded by ``seed`` for every slice:
    one mask ``(1, 1, h, w)`` for the volume, drawn over the crop's columns from the run's
    ``operator`` settings, no extra noise (the data carry their own), maps from the centred
    ``centred_acs_columns(w, data.params.acs_fraction)`` columns of ``y``.

    Returns:
        ``[(y (1, 2, C, h, w), MultiCoilMRI)]`` per slice, in the file's units, and
        ``{"mask_source": "retrospective", "notice", "acceleration", "field_of_view": (h, w)}``.
    """
    params = run.config["data"].get("params") or {}
    height, width = items[0]["kspace"].shape[-2:]
    crop = tuple(int(c) for c in (params.get("crop") or items[0]["crop_size"]))
    if crop[0] > height or crop[1] > width:
        raise ValueError(f"{path}: the run was trained on {crop[0]} x {crop[1]} crops (data.params.crop), but the "
                         f"file's images are {height} x {width}")
    # The solver is told the run's noise level (_reconstruct_kspace_volume); none is added here.
    config = {**run.config, "operator": {**run.config["operator"], "noise_sigma": 0.0}}
    measurement = Measurement(config, (2, *crop))
    measured = []
    for item in items:
        kspace = item["kspace"]  # (2, C, H, W) float32, real / imaginary
        _, cropped = crop_coil_kspace(torch.complex(kspace[0], kspace[1]), crop)  # (C, h, w) complex64
        cropped = torch.stack([cropped.real, cropped.imag])[None]  # (1, 2, C, h, w)
        # x only gives the measurement the image's shape; the same seed gives every slice the same mask.
        y, operator, _ = measurement.measure_own_kspace(cropped.new_zeros((1, 2, *crop)), cropped,
                                                        torch.Generator().manual_seed(seed))
        measured.append((y, operator))
    kept = float(measured[0][1].mask.to(torch.float32).mean())
    acceleration = 1.0 / kept if kept > 0 else math.inf
    op_cfg = run.config["operator"]
    notice = (f"{path.name} is fully sampled: measuring it as the run's own-coils training did, the k-space of its "
              f"coil images centre-cropped to {crop[0]} x {crop[1]}, undersampled with the run's {op_cfg['mask']} mask "
              f"(acceleration {acceleration:.1f}x of the crop's columns, centre fraction {op_cfg['center_fraction']}, "
              f"seed {seed}), maps from the centred {centred_acs_columns(crop[1], measurement.acs_fraction)} columns; scores compare "
              "with its fully sampled target")
    return measured, {"mask_source": "retrospective", "notice": notice, "acceleration": acceleration,
                      "field_of_view": crop}


def fastmri_measurements(run: Run, items: list[dict], path: Path, seed: int = 0) -> tuple[list[tuple], dict]:
    """The measurement of each slice of a fastMRI file: ``[(y (1, 2, H, W), operator)]`` and
    ``{"mask_source", "notice", "acceleration"}`` (see :func:`reconstruct_fastmri` for the rules).

    A fully sampled multi-coil file read by an own-coils run (``data.params.own_coils``) is
    measured on the run's crop instead (:func:`_own_coil_measurements`): ``y`` ``(1, 2, C, h, w)``
    and ``"field_of_view"`` ``(h, w)`` in the info. Files whose k-space is undersampled keep the
    full field of view whatever the run (their masks are defined on the full width)."""
    width = items[0]["kspace"].shape[-1]
    if all("mask" in item for item in items):
        return [_masked_kspace(item, item["mask"]) for item in items], {"mask_source": "file"}
    sampled = _sampled_columns(items)
    acquired = torch.ones(width, dtype=torch.bool)
    header = FastMRISingleCoil(path, coils="any").metadata[0]["header"]
    if header is not None and header["padding_left"] is not None:
        acquired = torch.zeros(width, dtype=torch.bool)
        acquired[header["padding_left"] : header["padding_right"]] = True
    if not bool(sampled[acquired].all()):
        mask = sampled.reshape(1, 1, width)
        return [_masked_kspace(item, mask) for item in items], {"mask_source": "sampled columns"}
    # Fully sampled: undersample with the run's mask settings, one mask for the volume.
    if uses_own_coils(run.config) and items[0]["kspace"].dim() == 4:  # (2, C, H, W): multi-coil
        return _own_coil_measurements(run, items, path, seed)
    height = items[0]["kspace"].shape[-2]
    operator = Measurement(run.config, (2, height, width))._batched_operator(1, torch.Generator().manual_seed(seed))
    mask = operator.mask[0, :, :1].to(torch.float32)  # (1, 1, W)
    kept = float(mask[..., acquired].mean())
    acceleration = 1.0 / kept if kept > 0 else math.inf
    op_cfg = run.config["operator"]
    notice = (f"{path.name} is fully sampled: undersampling it with the run's {op_cfg['mask']} mask "
              f"(acceleration {acceleration:.1f}x of the acquired columns, centre fraction {op_cfg['center_fraction']}, "
              f"seed {seed}), as in training; scores compare with its fully sampled target")
    return ([_masked_kspace(item, mask) for item in items],
            {"mask_source": "retrospective", "notice": notice, "acceleration": acceleration})


# ------------------------------------------------------------------------------------- helpers

def _file_kind(path: Path) -> str:
    """``"image"``, ``"nifti"`` or ``"fastmri"`` from the file name; ValueError naming it otherwise."""
    name = path.name.lower()
    if name.endswith(IMAGE_SUFFIXES):
        return "image"
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(FASTMRI_SUFFIXES):
        return "fastmri"
    if name.endswith(SINOGRAM_SUFFIXES):
        return "sinogram"
    raise ValueError(f"unsupported input file {path}: expected one of "
                     f"{', '.join(IMAGE_SUFFIXES + NIFTI_SUFFIXES + FASTMRI_SUFFIXES + SINOGRAM_SUFFIXES)}")


def _config_sigma(config: dict) -> float:
    """The config's noise level (the mean of a [low, high] range), floored like Measurement's.

    ``reconstruct(sigma=...)`` (``l2i reconstruct --sigma``) has already put the user's value here.
    """
    value = config["operator"]["noise_sigma"]
    sigma = sum(value) / 2 if isinstance(value, list) else float(value)
    return max(sigma, 1e-3)


def _read_image(path: Path, run: Run) -> tuple[torch.Tensor, dict]:
    """Image file -> ((C, H, W) in [0, 1], DICOM facts), grey or RGB as the run's images; a colour
    photo made grey for a grey run warns (naming the file), and NaN / Inf pixels are refused. A
    DICOM image (rescale slope and intercept applied) is scaled to [0, 1] by its minimum and
    maximum; its facts are ``{"pixel_spacing_mm": (row, column), "value_range": (min, max)}``
    (``{}`` for other files)."""
    if path.suffix.lower() == ".dcm":
        from ..data.dicom import DicomImages

        images = DicomImages(path, complex=False)
        return images[0], {"pixel_spacing_mm": images.pixel_spacing[0], "value_range": images.value_range[0]}
    return torch.from_numpy(read_image(path, grey=run.image_shape[0] != 3, warn_colour=True)), {}


def _dicom_image_notice(path: Path, output: Path, facts: dict, zoom: tuple[float, float], progress: bool) -> dict:
    """The line that says what a ``.png`` / ``.npy`` estimate of a DICOM image cannot hold: its
    pixel spacing in mm (the input's times ``zoom``, the input / output size ratio per axis) and
    the stored values mapped to [0, 1]; printed with ``progress``. Returns the result keys."""
    row, column = (s * z for s, z in zip(facts["pixel_spacing_mm"], zoom))
    low, high = facts["value_range"]
    notice = (f"{path.name}: pixel spacing {row:g} x {column:g} mm (row, column) and values {low:g} to {high:g} "
              f"(after RescaleSlope / RescaleIntercept), mapped to [0, 1]; {output.name} stores neither "
              "(with --simulate, write .nii.gz to keep the spacing)")
    if progress:
        tqdm.write(notice)
    return {"notice": notice, "pixel_spacing_mm": [row, column], "value_range": [low, high]}


def _to_run_channels(x: torch.Tensor, run: Run) -> torch.Tensor:
    """``(C, ...)`` -> the run's channel count: grey -> complex with zero imaginary part for MRI runs."""
    channels = run.image_shape[0]
    if x.shape[0] == 1 and channels == 2:
        x = torch.cat([x, torch.zeros_like(x)])
    if x.shape[0] != channels:
        raise ValueError(f"the run reconstructs images with {channels} channels (shape {run.image_shape}); "
                         f"the input has {x.shape[0]} (shape {tuple(x.shape)})")
    return x


def _check_shape(run: Run, shape: tuple[int, ...]) -> None:
    """Refuse an image ``(C, H, W)`` the run's operator cannot measure, naming both shapes."""
    if run.operator in SHAPE_BOUND and shape != run.image_shape:
        raise ValueError(f"operator {run.operator!r} is built for the run's image shape {run.image_shape}; "
                         f"the input has shape {shape} (resize or crop it to {run.image_shape[-2:]})")
    if run.operator == "super_resolution":
        factor = Measurement(run.config, run.image_shape).fixed.factor
        if shape[-1] % factor or shape[-2] % factor:
            raise ValueError(f"super-resolution by {factor} needs a size divisible by {factor}; "
                             f"the input has shape {shape}")


def _measurement(run: Run, shape: tuple[int, ...]) -> Measurement:
    """The run's measurement for images of ``shape`` (C, H, W), after :func:`_check_shape`.

    An own-coils run (``data.params.own_coils``) is refused: its measurement undersamples
    measured coil k-space, which an image file does not hold (and no coil maps exist to simulate it).
    """
    if uses_own_coils(run.config):
        raise ValueError("the run was trained on multi-coil fastMRI files' own coil k-space (data.params.own_coils): "
                         "it has no coil sensitivities to simulate a measurement of an image with --simulate; give "
                         "it a multi-coil fastMRI .h5 file (without --simulate)")
    _check_shape(run, shape)
    return Measurement(run.config, shape)  # masks and operators sized to this image


def _simulate_and_solve(run: Run, measurement: Measurement, x: torch.Tensor,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Truth ``(1, C, H, W)`` -> (back-projection, estimate, the back-projection's panel title);
    both images ``(1, C, H, W)`` on the CPU.

    The back-projection is ``A^T y`` for a linear operator and the operator's ``A_dagger(y)`` for
    a nonlinear one (phase retrieval, Beer-Lambert CT), which have no adjoint.
    """
    y, operator, sigma = measurement(x.to(run.device), generator)
    title = "adjoint A^T y" if is_linear(operator) else "A_dagger(y)"
    return back_projection(operator, y).cpu(), _solve(run, y, operator, sigma), title


def _simulate_slices(run: Run, slices: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """Truth slices ``(N, C, h, w)`` -> (back-projections, estimates) ``(N, C, h, w)`` and the
    back-projection's panel title: each slice measured in turn from one generator seeded ``seed``."""
    measurement = _measurement(run, tuple(slices.shape[1:]))
    generator = torch.Generator().manual_seed(seed)
    adjoints, estimates, titles = zip(*(_simulate_and_solve(run, measurement, s[None], generator) for s in slices))
    return torch.cat(adjoints), torch.cat(estimates), titles[0]


def _volume_result(run: Run, output: Path, slices: torch.Tensor, adjoint: torch.Tensor, estimate: torch.Tensor,
                   title: str) -> dict:
    """The middle slice's side-by-side figure and volume scores of ``(N, C, h, w)`` slices."""
    middle = len(slices) // 2
    side = _side_by_side(output, _comparison_panels(adjoint[middle], estimate[middle], slices[middle], title),
                         peak=float(magnitude(slices[middle][None]).max()))

    def as_volume(t: torch.Tensor) -> torch.Tensor:  # (N, C, h, w) -> (1, 1, N, h, w) magnitude volume
        return magnitude(t).movedim(0, 1)[None]

    scores = {name: _scores(as_volume(img), as_volume(slices), run.config["data"]["data_range"])
              for name, img in (("adjoint", adjoint), ("estimate", estimate))}
    return {"output": str(output), "side_by_side": str(side), "metrics": scores}


@torch.no_grad()
def _solve(run: Run, y: torch.Tensor, operator, sigma) -> torch.Tensor:
    """The solver's last iterate for measurement ``y`` (batch of 1), on the CPU (averaged over
    ``run.ensemble`` flipped/rotated copies of the problem)."""
    operator = operator.to(run.device)
    return self_ensemble(run.solver, y.to(run.device), operator, run.ensemble, sigma=sigma).cpu()


def _scores(estimate: torch.Tensor, truth: torch.Tensor, data_range: float | None) -> dict[str, float]:
    """PSNR and SSIM of real ``(1, C, H, W)`` images or ``(1, C, N, H, W)`` volumes (one peak per
    volume, SSIM averaged over slices); ``data_range`` None takes the truth's max. SSIM is NaN
    below its 7 x 7 window."""
    too_small = min(truth.shape[-2:]) < 7
    return {"psnr": metrics.psnr(estimate, truth, data_range),
            "ssim": float("nan") if too_small else metrics.ssim(estimate, truth, data_range)}


def _reconstruct_kspace_volume(run: Run, items: list[dict], measured: list[tuple], path: Path,
                               progress: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """fastMRI slice items and their measurements -> (zero-filled, estimate) magnitudes
    ``(slices, h, w)``, cropped; a progress bar per slice with ``progress``."""
    adjoints = [op.A_adjoint(y) for y, op in measured]
    scale = max(float(complex_abs(z).max()) for z in adjoints)
    if scale <= 0:
        raise ValueError(f"{path}: the k-space is all zeros")
    sigma = _config_sigma(run.config)
    bar = tqdm(measured, desc=f"reconstructing {path.name}", unit="slice", disable=not progress)
    estimates = [_solve(run, y / scale, op, sigma) * scale for y, op in bar]
    crops = [item["crop_size"] for item in items]
    zero_filled = torch.cat([_crop_magnitude(z, crop) for z, crop in zip(adjoints, crops)])[:, 0]
    estimate = torch.cat([_crop_magnitude(e, crop) for e, crop in zip(estimates, crops)])[:, 0]
    return zero_filled, estimate


def _masked_kspace(item: dict, mask: torch.Tensor):
    """A fastMRI item and a ``(1, 1, W)`` column mask -> (measured k-space ``(1, 2, H, W)`` with +0
    off the mask, its :class:`SingleCoilMRI`); a multi-coil item gives ``(1, 2, C, H, W)`` and a
    :class:`MultiCoilMRI` with sensitivities estimated from the measured calibration region.

    fastMRI volumes are multi-slice 2-D acquisitions: every slice is measured, and reconstructed,
    with its own 2-D FFT (``fft_dims=2``, the per-slice model), never a 3-D FFT across slices."""
    kspace = item["kspace"][None]
    if kspace.dim() == 5:
        mask = mask.to(torch.bool)
        y = torch.where(mask, kspace, torch.zeros_like(kspace))  # (1, 1, W) broadcasts over coils and rows
        return y, MultiCoilMRI(mask, estimate_sensitivities(y), fft_dims=2)
    operator = SingleCoilMRI(mask, fft_dims=2)
    return torch.where(operator.mask, kspace, torch.zeros_like(kspace)), operator


def _crop_magnitude(image: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    """``(1, 2, H, W)`` complex image -> ``(1, 1, h, w)`` centre-cropped magnitude (fastMRI's way)."""
    return complex_abs(center_crop(image, crop))


def _save_fastmri(path: Path, reconstruction: torch.Tensor) -> None:
    """Write ``(slices, h, w)`` float32 as dataset ``reconstruction``, like fastMRI submissions."""
    import h5py

    with h5py.File(path, "w") as hf:
        hf.create_dataset("reconstruction", data=reconstruction.numpy().astype(np.float32))


def _save_image(path: Path, image: torch.Tensor) -> None:
    """``(C, H, W)`` estimate -> ``.npy`` (raw float values) or an 8-bit PNG of its magnitude in [0, 1]."""
    if path.suffix.lower() == ".npy":
        np.save(path, image.numpy())
        return
    from skimage.io import imsave

    img = magnitude(image[None])[0].clamp(0, 1).numpy()  # (1 or 3, H, W)
    pixels = np.round(255 * np.moveaxis(img, 0, -1)).astype(np.uint8)
    imsave(path, pixels[..., 0] if pixels.shape[-1] == 1 else pixels, check_contrast=False)


def _comparison_panels(adjoint: torch.Tensor, estimate: torch.Tensor, truth: torch.Tensor,
                       adjoint_title: str = "adjoint A^T y") -> list[tuple[str, torch.Tensor]]:
    """Back-projection / estimate / truth / |error| panels from ``(C, H, W)`` images."""
    error = (magnitude(estimate[None]) - magnitude(truth[None]))[0].abs().mean(dim=0, keepdim=True)
    return [(adjoint_title, adjoint), ("estimate", estimate), ("truth", truth), ("|estimate - truth|", error)]


def side_by_side_path(output: Path) -> Path:
    """``dir/name.ext`` -> ``dir/name_side_by_side.png`` (``.nii.gz`` counts as one extension)."""
    stem = output.name[: -len(".nii.gz")] if output.name.lower().endswith(".nii.gz") else output.stem
    return output.with_name(f"{stem}_side_by_side.png")


def _side_by_side(output: Path, panels: list[tuple[str, torch.Tensor]], peak: float) -> Path:
    """Draw ``(title, (C, H, W) image)`` panels in a row beside ``output``.

    Grey images share the scale ``[0, peak]`` (the truth's peak, so a wild adjoint saturates
    rather than darkening the rest); an error panel (title starting with "|") gets a magma scale
    up to 20 % of ``peak``; RGB images are shown clipped to [0, 1].
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [(title, magnitude(img[None])[0]) for title, img in panels]
    peak = peak if peak > 0 else 1.0
    fig, axes = plt.subplots(1, len(shown), figsize=(2.5 * len(shown), 2.8), squeeze=False)
    for ax, (title, img) in zip(axes[0], shown):
        if img.shape[0] == 3:
            ax.imshow(img.permute(1, 2, 0).clamp(0, 1).numpy())
        elif title.startswith("|"):
            ax.imshow(img[0].numpy(), cmap="magma", vmin=0, vmax=0.2 * peak)
        else:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=peak)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    path = side_by_side_path(output)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["reconstruct", "reconstruct_measured_image", "reconstruct_sinogram", "simulate_image", "simulate_volume",
           "simulate_dicom_series", "reconstruct_fastmri",
           "fastmri_measurements", "side_by_side_path"]
