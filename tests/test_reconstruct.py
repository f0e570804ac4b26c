"""``l2i reconstruct``: a user's own file through a tiny trained run (measured image, --simulate, fastMRI)."""
import math
import re
import warnings
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from skimage.io import imsave

from learn2invert.cli import main
from learn2invert.data import load_nifti, save_nifti
from learn2invert.data.image_folder import read_image
from learn2invert.operators import Denoising
from learn2invert.train import loop
from learn2invert.inference.reconstruct import reconstruct
from learn2invert.inference import load_solver
from learn2invert.inference.ensemble import self_ensemble

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
TINY = (
    "data.train_length=16", "data.val_length=4", "data.patch_size=8", "train.batch_size=8",
    "solver.params.steps=2", "solver.params.conv_channels=4", "solver.params.hidden_channels=4",
)


def _train(tmp_path_factory, name: str, *overrides: str) -> Path:
    run_dir = tmp_path_factory.mktemp(name)
    loop.train(SMOKE, run_dir, overrides=TINY + overrides, show_progress=False)
    return run_dir


@pytest.fixture(scope="module")
def denoising_run(tmp_path_factory):
    return _train(tmp_path_factory, "denoising", "operator.name=denoising", "operator.params={}")


@pytest.fixture(scope="module")
def projection_run(tmp_path_factory):  # the smoke config: Gaussian random projections of 8 x 8 patches
    return _train(tmp_path_factory, "projection")


@pytest.fixture(scope="module")
def mri_run(tmp_path_factory):
    return _train(tmp_path_factory, "mri", "data.name=brain_slices", "data.patch_size=32", "operator.name=mri",
                  "operator.noise_sigma=0.01")


def _write_png(path: Path, height: int, width: int, seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width), dtype=np.uint8)
    imsave(path, pixels, check_contrast=False)
    return path


def test_denoising_run_reconstructs_a_noisy_png(denoising_run, tmp_path):
    noisy = _write_png(tmp_path / "noisy.png", 20, 13)  # any size: the RIM is convolutional
    result = reconstruct(denoising_run, noisy, tmp_path / "out" / "clean.png")
    assert result["output"] == str(tmp_path / "out" / "clean.png")
    assert read_image(tmp_path / "out" / "clean.png").shape == (1, 20, 13)
    side = tmp_path / "out" / "clean_side_by_side.png"
    assert result["side_by_side"] == str(side) and side.stat().st_size > 1000
    # .npy keeps the raw float estimate: the solver's last iterate at the config's sigma.
    reconstruct(denoising_run, noisy, tmp_path / "clean.npy")
    raw = np.load(tmp_path / "clean.npy")
    solver, config, _, _ = load_solver(denoising_run)
    y = torch.from_numpy(read_image(noisy))[None]
    with torch.no_grad():
        expected = solver(y, Denoising(), sigma=config["operator"]["noise_sigma"])[-1][0]
    np.testing.assert_allclose(raw, expected.numpy(), rtol=0, atol=1e-6)


def test_ensemble_averages_flipped_and_rotated_reconstructions(denoising_run, tmp_path, capsys):
    noisy = _write_png(tmp_path / "noisy.png", 12, 12)
    assert main(["reconstruct", str(denoising_run), str(noisy), str(tmp_path / "x8.npy"), "--ensemble", "8"]) == 0
    solver, config, _, _ = load_solver(denoising_run)
    y = torch.from_numpy(read_image(noisy))[None]
    with torch.no_grad():
        expected = self_ensemble(solver, y, Denoising(), 8, sigma=config["operator"]["noise_sigma"])[0]
        single = solver(y, Denoising(), sigma=config["operator"]["noise_sigma"])[-1][0]
    np.testing.assert_allclose(np.load(tmp_path / "x8.npy"), expected.numpy(), rtol=0, atol=1e-6)
    assert not np.allclose(expected.numpy(), single.numpy(), atol=1e-4)
    wide = _write_png(tmp_path / "wide.png", 12, 16)  # quarter turns would change its shape
    assert main(["reconstruct", str(denoising_run), str(wide), str(tmp_path / "w.png"), "--ensemble", "8"]) == 2
    assert "use 4 or fewer" in capsys.readouterr().err
    assert main(["reconstruct", str(denoising_run), str(wide), str(tmp_path / "w.png"), "--ensemble", "4"]) == 0


def test_simulate_png_with_random_projections_reports_scores(projection_run, tmp_path):
    clean = _write_png(tmp_path / "clean.png", 8, 8)
    result = reconstruct(projection_run, clean, tmp_path / "estimate.png", simulate=True, seed=3)
    for name in ("adjoint", "estimate"):
        assert math.isfinite(result["metrics"][name]["psnr"]) and math.isfinite(result["metrics"][name]["ssim"])
    assert read_image(tmp_path / "estimate.png").shape == (1, 8, 8)
    assert (tmp_path / "estimate_side_by_side.png").stat().st_size > 1000
    again = reconstruct(projection_run, clean, tmp_path / "again.png", simulate=True, seed=3)
    assert again["metrics"] == result["metrics"]  # the seed fixes the simulated noise


@pytest.mark.parametrize("operator, params", [("phase_retrieval", "{oversampling: 2}"),
                                               ("beer_lambert_ct", "{n_angles: 6, attenuation: 0.1}")])
def test_simulate_with_a_nonlinear_operator_starts_from_its_a_dagger(tmp_path_factory, tmp_path, operator, params):
    # A nonlinear operator has no adjoint: the first panel and the "adjoint" scores are its A_dagger(y).
    run = _train(tmp_path_factory, operator, f"operator.name={operator}", f"operator.params={params}",
                 "operator.noise_sigma=0.01")
    clean = _write_png(tmp_path / "clean.png", 8, 8)
    result = reconstruct(run, clean, tmp_path / "estimate.png", simulate=True, seed=1)
    for name in ("adjoint", "estimate"):
        assert math.isfinite(result["metrics"][name]["psnr"])
    assert result["metrics"]["adjoint"] != result["metrics"]["estimate"]
    assert (tmp_path / "estimate_side_by_side.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="does not measure images.*--simulate"):
        reconstruct(run, clean, tmp_path / "out.png")


def test_wrong_size_or_non_image_measurement_is_refused(projection_run, tmp_path):
    image = _write_png(tmp_path / "big.png", 12, 10)
    with pytest.raises(ValueError, match=r"\(1, 8, 8\).*\(1, 12, 10\)"):
        reconstruct(projection_run, image, tmp_path / "out.png", simulate=True)
    with pytest.raises(ValueError, match="--simulate"):
        reconstruct(projection_run, image, tmp_path / "out.png")
    with pytest.raises(ValueError, match="out.jpg"):
        reconstruct(projection_run, image, tmp_path / "out.jpg", simulate=True)


def test_super_resolution_takes_the_low_resolution_image(tmp_path_factory, tmp_path):
    run = _train(tmp_path_factory, "sr", "operator.name=super_resolution", "operator.params={factor: 2}",
                 "operator.noise_sigma=0.01")
    low = _write_png(tmp_path / "low.png", 6, 5)
    reconstruct(run, low, tmp_path / "high.png")
    assert read_image(tmp_path / "high.png").shape == (1, 12, 10)
    with pytest.raises(ValueError, match=r"divisible by 2.*\(1, 9, 8\)"):
        reconstruct(run, _write_png(tmp_path / "odd.png", 9, 8), tmp_path / "x.png", simulate=True)


# A tiny fastMRI single-coil file, laid out as in tests/test_data_mri.py.
H, W, SLICES, RECON = 24, 17, 3, (12, 10)
HEADER = f"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>
  <encodedSpace><matrixSize><x>{H}</x><y>{W}</y><z>1</z></matrixSize></encodedSpace>
  <reconSpace><matrixSize><x>{RECON[0]}</x><y>{RECON[1]}</y><z>1</z></matrixSize></reconSpace>
</encoding></ismrmrdHeader>
"""


def _write_fastmri(path: Path, mask: np.ndarray | None = None, target: bool = True) -> Path:
    rng = np.random.default_rng(0)
    kspace = (rng.standard_normal((SLICES, H, W)) + 1j * rng.standard_normal((SLICES, H, W))).astype(np.complex64)
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=kspace * (mask if mask is not None else 1))
        hf.create_dataset("ismrmrd_header", data=HEADER.encode())
        if mask is not None:
            hf.create_dataset("mask", data=mask)
        if target:
            hf.create_dataset("reconstruction_esc", data=rng.random((SLICES, *RECON), dtype=np.float32))
    return path


def test_mri_run_reconstructs_a_fastmri_file(mri_run, tmp_path):
    mask = np.zeros(W, dtype=bool)
    mask[::3] = True
    mask[W // 2 - 1 : W // 2 + 2] = True
    for name, kwargs in (("test", {"mask": mask, "target": False}), ("val", {})):
        source = _write_fastmri(tmp_path / f"{name}.h5", **kwargs)
        result = reconstruct(mri_run, source, tmp_path / f"{name}_recon.h5")
        with h5py.File(tmp_path / f"{name}_recon.h5", "r") as hf:
            recon = hf["reconstruction"][()]
        assert recon.shape == (SLICES, *RECON) and recon.dtype == np.float32
        assert np.all(np.isfinite(recon)) and recon.min() >= 0  # magnitudes
        assert (tmp_path / f"{name}_recon_side_by_side.png").stat().st_size > 1000
    assert set(result["metrics"]) == {"adjoint", "estimate"}  # the val file has a target to score against


def test_mri_run_simulates_a_nifti_volume(mri_run, tmp_path):
    volume = torch.rand(1, 10, 9, 3, generator=torch.Generator().manual_seed(0)) * 100  # any units
    save_nifti(tmp_path / "vol.nii.gz", volume, (1.0, 1.5, 3.0))
    result = reconstruct(mri_run, tmp_path / "vol.nii.gz", tmp_path / "est.nii.gz", simulate=True)
    estimate, voxel_size = load_nifti(tmp_path / "est.nii.gz")
    assert estimate.shape == (1, 10, 9, 3) and voxel_size == pytest.approx((1.0, 1.5, 3.0))
    assert math.isfinite(result["metrics"]["estimate"]["psnr"])
    assert (tmp_path / "est_side_by_side.png").is_file()


def test_cli_reconstructs_and_reports_errors(denoising_run, tmp_path, capsys):
    noisy = _write_png(tmp_path / "noisy.png", 9, 11)
    assert main(["reconstruct", str(denoising_run), str(noisy), str(tmp_path / "out.png")]) == 0
    assert "out_side_by_side.png" in capsys.readouterr().out
    assert main(["reconstruct", str(denoising_run), str(noisy), str(tmp_path / "sim.png"), "--simulate"]) == 0
    assert "PSNR" in capsys.readouterr().out
    missing = tmp_path / "no_such_run"
    assert main(["reconstruct", str(missing), str(noisy), str(tmp_path / "out.png")]) == 2
    assert str(missing) in capsys.readouterr().err
    gif = tmp_path / "noisy.gif"
    gif.write_bytes(noisy.read_bytes())
    assert main(["reconstruct", str(denoising_run), str(gif), str(tmp_path / "out.png")]) == 2
    assert f"unsupported input file {gif}" in capsys.readouterr().err


# ------------------------------------------------------------------- a newcomer's files (issue 17)
def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> Path:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units(xyz="mm")
    nib.save(img, str(path))
    return path


# File axis 0 runs posterior (world -y), axis 1 right (+x), axis 2 superior (+z), origin off zero:
# the RAS+ volume the solver sees is the file's array transposed and flipped.
ROTATED = np.array([[0.0, 1.5, 0.0, -10.0], [-1.0, 0.0, 0.0, 20.0], [0.0, 0.0, 3.0, 5.0], [0.0, 0.0, 0.0, 1.0]])


def test_nifti_output_keeps_the_input_affine_and_axis_order(mri_run, tmp_path):
    data = (100 * np.random.default_rng(0).random((9, 10, 3))).astype(np.float32)
    rotated = _write_nifti(tmp_path / "rotated.nii.gz", data, ROTATED)
    canonical = tmp_path / "canonical.nii.gz"
    nib.save(nib.as_closest_canonical(nib.load(str(rotated))), str(canonical))
    reconstruct(mri_run, rotated, tmp_path / "est_rotated.nii.gz", simulate=True)
    reconstruct(mri_run, canonical, tmp_path / "est_canonical.nii.gz", simulate=True)
    out = nib.load(str(tmp_path / "est_rotated.nii.gz"))
    # Same voxel grid as the input: it overlays on it in a viewer.
    assert out.shape == data.shape
    np.testing.assert_allclose(out.affine, ROTATED, atol=1e-6)
    assert out.header.get_xyzt_units()[0] == "mm"
    # The same RAS+ slices were reconstructed: only the writing differs.
    same = nib.load(str(tmp_path / "est_canonical.nii.gz"))
    np.testing.assert_allclose(same.affine, nib.load(str(canonical)).affine, atol=1e-6)
    np.testing.assert_allclose(nib.as_closest_canonical(out).get_fdata(), same.get_fdata(), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("plane", ["axial", "coronal"])
def test_a_2d_nifti_slice_is_reconstructed_and_written_as_2d(mri_run, tmp_path, plane):
    data = (np.random.default_rng(1).random((10, 9)) + 0.5).astype(np.float32)
    affine = np.diag([1.0, 1.5, 3.0, 1.0])
    affine[:3, 3] = (4.0, -7.0, 12.0)
    if plane == "coronal":  # file axis 1 runs superior, the slice normal is y
        affine[:3, :3] = [[1.0, 0.0, 0.0], [0.0, 0.0, 3.0], [0.0, 1.5, 0.0]]
    path = _write_nifti(tmp_path / "slice.nii", data, affine)
    result = reconstruct(mri_run, path, tmp_path / "est.nii.gz", simulate=True)
    out = nib.load(str(tmp_path / "est.nii.gz"))
    assert out.shape == (10, 9)
    np.testing.assert_allclose(out.affine, affine, atol=1e-6)
    assert math.isfinite(result["metrics"]["estimate"]["psnr"]) and math.isfinite(result["metrics"]["estimate"]["ssim"])


def test_a_4d_nifti_series_needs_a_frame(mri_run, tmp_path):
    frames = (np.random.default_rng(2).random((10, 9, 3, 2)) + [0.0, 1.0]).astype(np.float32)
    affine = np.diag([1.0, 1.5, 3.0, 1.0])
    series = _write_nifti(tmp_path / "series.nii.gz", frames, affine)
    with pytest.raises(ValueError, match=re.escape(str(series)) + r".*2 frames.*frame="):
        reconstruct(mri_run, series, tmp_path / "est.nii.gz", simulate=True)
    with pytest.raises(ValueError, match=r"frame.*0\.\.1"):
        reconstruct(mri_run, series, tmp_path / "est.nii.gz", simulate=True, frame=2)
    with pytest.raises(ValueError, match="frame"):  # frames belong to NIfTI series only
        reconstruct(mri_run, _write_png(tmp_path / "x.png", 8, 8), tmp_path / "x_est.png", simulate=True, frame=0)
    second = reconstruct(mri_run, series, tmp_path / "est.nii.gz", simulate=True, frame=1)
    single = _write_nifti(tmp_path / "frame1.nii.gz", np.ascontiguousarray(frames[..., 1]), affine)
    expected = reconstruct(mri_run, single, tmp_path / "frame1_est.nii.gz", simulate=True)
    assert second["metrics"] == expected["metrics"]
    out = nib.load(str(tmp_path / "est.nii.gz"))
    assert out.shape == (10, 9, 3)
    np.testing.assert_allclose(out.get_fdata(), nib.load(str(tmp_path / "frame1_est.nii.gz")).get_fdata())


def test_nan_and_inf_in_an_input_file_are_counted_and_the_file_named(mri_run, denoising_run, tmp_path):
    volume = np.random.default_rng(3).random((10, 9, 3)).astype(np.float32)
    volume[0, 0, :2] = np.nan
    volume[1, 1, 1] = np.inf
    nifti = _write_nifti(tmp_path / "holes.nii.gz", volume, np.eye(4))
    with pytest.raises(ValueError, match=re.escape(str(nifti)) + r".*2 NaN and 1 infinite"):
        reconstruct(mri_run, nifti, tmp_path / "est.nii.gz", simulate=True)
    image = np.random.default_rng(4).random((9, 11)).astype(np.float32)
    image[0, 0] = np.nan
    image[2, :2] = [np.inf, -np.inf]
    tiff = tmp_path / "holes.tif"
    imsave(tiff, image, check_contrast=False)
    for simulate in (False, True):
        with pytest.raises(ValueError, match=re.escape(str(tiff)) + r".*1 NaN and 2 infinite"):
            reconstruct(denoising_run, tiff, tmp_path / "est.png", simulate=simulate)
    kspace = _write_fastmri(tmp_path / "holes.h5")
    with h5py.File(kspace, "r+") as hf:
        hf["kspace"][1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=re.escape(str(kspace)) + r".*1 NaN and 0 infinite"):
        reconstruct(mri_run, kspace, tmp_path / "est.h5")


def test_a_grey_run_warns_once_that_a_colour_photo_became_grey(denoising_run, tmp_path):
    rgb = np.random.default_rng(5).integers(0, 256, (10, 12, 3), dtype=np.uint8)
    photo = tmp_path / "photo.png"
    imsave(photo, rgb, check_contrast=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reconstruct(denoising_run, photo, tmp_path / "est.png")
    grey = [w for w in caught if "grey" in str(w.message)]
    assert len(grey) == 1 and str(photo) in str(grey[0].message)
    # A grey picture stored as RGB (equal channels) loses nothing: no warning.
    imsave(tmp_path / "grey_rgb.png", np.repeat(rgb[..., :1], 3, axis=-1), check_contrast=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reconstruct(denoising_run, tmp_path / "grey_rgb.png", tmp_path / "est2.png")
    assert not [w for w in caught if "grey" in str(w.message)]


def test_sigma_tells_the_solver_the_noise_level_of_the_users_image(denoising_run, tmp_path, monkeypatch, capsys):
    from learn2invert.solvers.rim import RIM

    told = []
    real_forward = RIM.forward

    def recording(self, y, operator, sigma=None, **kwargs):
        told.append(torch.as_tensor(sigma).flatten().tolist())
        return real_forward(self, y, operator, sigma=sigma, **kwargs)

    monkeypatch.setattr(RIM, "forward", recording)
    noisy = _write_png(tmp_path / "noisy.png", 9, 11)
    assert main(["reconstruct", str(denoising_run), str(noisy), str(tmp_path / "a.npy"), "--sigma", "0.05"]) == 0
    assert main(["reconstruct", str(denoising_run), str(noisy), str(tmp_path / "b.npy")]) == 0
    assert told == [[pytest.approx(0.05)], [pytest.approx(1.0)]]  # the user's level, then the run's operator.noise_sigma (smoke.yaml: 1.0)
    assert not np.allclose(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))
    # With --simulate it is also the noise that is simulated (and the level the solver is told).
    told.clear()
    result = reconstruct(denoising_run, noisy, tmp_path / "s.png", simulate=True, sigma=0.02)
    assert told == [[pytest.approx(0.02)]] and math.isfinite(result["metrics"]["adjoint"]["psnr"])
    assert result["metrics"]["adjoint"]["psnr"] > 30  # noise 0.02, not the config's 1.0 (about 0 dB)
    capsys.readouterr()
    for bad in ("-0.1", "nan"):
        assert main(["reconstruct", str(denoising_run), str(noisy), str(tmp_path / "c.png"), "--sigma", bad]) == 2
        assert "--sigma" in capsys.readouterr().err


def test_ct_run_reconstructs_a_measured_sinogram(tmp_path_factory, tmp_path, capsys):
    run = _train(tmp_path_factory, "ct", "data.name=ellipses", "data.patch_size=16", "operator.name=ct",
                 "operator.params={n_angles: 8}", "operator.noise_sigma=0.1", "solver.params.init=adjoint")
    _, config, measurement, shape = load_solver(run)
    truth = torch.zeros((1, *shape))
    truth[..., 4:12, 5:11] = 1.0
    sinogram = measurement.fixed.A(truth)[0, 0].numpy()  # (angles, detectors)
    np.save(tmp_path / "sino.npy", sinogram)
    result = reconstruct(run, tmp_path / "sino.npy", tmp_path / "image.npy")
    image = np.load(result["output"])
    assert image.shape == shape and np.isfinite(image).all()
    assert Path(result["side_by_side"]).stat().st_size > 0
    np.save(tmp_path / "wrong.npy", sinogram[:, :-1])
    with pytest.raises(ValueError, match=r"measures 8 angles x \d+ detectors"):
        reconstruct(run, tmp_path / "wrong.npy", tmp_path / "x.npy")
    png = _write_png(tmp_path / "sino.png", *sinogram.shape)
    assert main(["reconstruct", str(run), str(png), str(tmp_path / "x.png")]) == 2
    assert "measured sinogram given as .npy" in capsys.readouterr().err


def test_mri_run_simulates_a_dicom_slice(mri_run, tmp_path, capsys):
    pytest.importorskip("pydicom")
    from learn2invert.data.dicom import resolve_dicom_paths

    scan = resolve_dicom_paths("pydicom:MR_small.dcm")[0]  # a real 64 x 64 MR slice
    result = reconstruct(mri_run, scan, tmp_path / "mr.png", simulate=True, seed=1)
    assert (tmp_path / "mr.png").is_file() and Path(result["side_by_side"]).is_file()
    assert result["metrics"]["estimate"]["psnr"] > 10 and result["metrics"]["adjoint"]["psnr"] > 10
    (tmp_path / "fake.dcm").write_text("not dicom")
    assert main(["reconstruct", str(mri_run), str(tmp_path / "fake.dcm"), str(tmp_path / "x.png"), "--simulate"]) == 2
    err = capsys.readouterr().err
    assert "fake.dcm" in err and "Traceback" not in err
