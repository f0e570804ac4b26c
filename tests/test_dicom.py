"""Real DICOM scans as held-out truths (pydicom's own test files), DICOM series read as volumes, and
bad DICOM files, each one error naming the file (skipped without pydicom)."""
import re
from pathlib import Path

import numpy as np
import pytest
import torch

pydicom = pytest.importorskip("pydicom")

from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.uid import ExplicitVRLittleEndian, generate_uid  # noqa: E402

from learn2invert.data import DicomImages, read_dicom  # noqa: E402
from learn2invert.data.dicom import load_dicom_series, read_dicom_series, resolve_dicom_paths  # noqa: E402


def test_pydicom_mr_slice_is_read_with_spacing_and_scaled_to_unit_range():
    images = DicomImages("pydicom:MR_small.dcm", repeats=3)
    assert len(images) == 3 and images.pixel_spacing == [(0.3125, 0.3125)]
    x = images[2]
    assert x.shape == (2, 64, 64) and torch.equal(x, images[0])
    assert float(x[0].min()) == 0.0 and float(x[0].max()) == 1.0 and not x[1].any()
    ct = DicomImages("pydicom:CT_small.dcm", complex=False, size=96)
    assert ct[0].shape == (1, 96, 96)
    raw, _ = read_dicom(resolve_dicom_paths("pydicom:CT_small.dcm")[0])
    assert raw.min() < -500  # Hounsfield units: rescale slope and intercept applied (air is about -1000)


def test_bad_dicom_inputs_name_the_file(tmp_path):
    bad = tmp_path / "scan.dcm"
    bad.write_bytes(b"not a dicom file at all")
    with pytest.raises(ValueError, match="scan.dcm"):
        DicomImages(bad)
    with pytest.raises(ValueError, match="does not exist"):
        DicomImages(tmp_path / "missing.dcm")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no \\*.dcm files"):
        DicomImages(tmp_path / "empty")
    with pytest.raises(ValueError, match="no test file named"):
        DicomImages("pydicom:nothing_here.dcm")


# ----------------------------------------------------------------- series, spacing and bad files
# Small DICOM files written here with pydicom: 16-bit unsigned, uncompressed (explicit VR little endian).

MR_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
AXIAL = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _write_dicom(path: Path, pixels: np.ndarray, series: str = "1.2.826.0.1.3680043.8.498.1", **attributes) -> Path:
    """Write ``pixels`` ((H, W), or (frames, H, W) for a multi-frame file) as a DICOM file with
    the given attributes (keyword=value; a value of None leaves the attribute out)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MR_STORAGE, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = MR_STORAGE, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.SeriesInstanceUID = "MR", series
    ds.Rows, ds.Columns = int(pixels.shape[-2]), int(pixels.shape[-1])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if pixels.ndim == 3:
        ds.NumberOfFrames = int(pixels.shape[0])
    ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
    for keyword, value in attributes.items():
        if value is not None:
            setattr(ds, keyword, value)
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(str(path), enforce_file_format=True)
    else:  # pydicom 2.4
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.save_as(str(path), write_like_original=False)
    return path


def _slice(value: int, shape=(6, 5)) -> np.ndarray:
    """A slice whose pixels are ``value`` plus a ramp 0..H*W-1 (so no slice is constant)."""
    return value + np.arange(shape[0] * shape[1], dtype=np.uint16).reshape(shape)


# name -> (z position, InstanceNumber, stored value): by position the order is b, d, a, c;
# by InstanceNumber c, a, d, b; by file name a, b, c, d.
SCRAMBLED = {"a.dcm": (15.0, 2, 300), "b.dcm": (10.0, 4, 100), "c.dcm": (17.5, 1, 400), "d.dcm": (12.5, 3, 200)}


def _write_series(folder: Path, positions: bool = True, instances: bool = True, **attributes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, (z, instance, value) in SCRAMBLED.items():
        _write_dicom(folder / name, _slice(value), ImagePositionPatient=[-40.0, -30.0, z] if positions else None,
                     ImageOrientationPatient=list(AXIAL) if positions else None,
                     InstanceNumber=instance if instances else None, PixelSpacing=[0.5, 0.75], **attributes)
    return folder


@pytest.mark.parametrize("positions, instances, order, names", [
    (True, True, "position", ["b", "d", "a", "c"]),
    (False, True, "InstanceNumber", ["c", "a", "d", "b"]),
    (False, False, "file name", ["a", "b", "c", "d"]),
])
def test_a_series_is_sorted_by_position_then_instance_number_then_file_name(tmp_path, positions, instances, order,
                                                                             names):
    folder = _write_series(tmp_path / "series", positions, instances, SliceThickness=3.0)
    series = load_dicom_series(folder)
    assert series.order == order and [p.stem for p, _ in series.slices] == names
    assert series.volume.shape == (4, 6, 5) and series.volume.dtype == np.float64
    stored = {name[0]: value for name, (_, _, value) in SCRAMBLED.items()}
    assert series.volume[:, 0, 0].tolist() == [stored[n] for n in names]
    # Slice spacing from the positions (2.5 mm), else SliceThickness; pixel spacing kept.
    assert series.spacing == ((2.5 if positions else 3.0), 0.5, 0.75)
    volume, spacing = read_dicom_series(folder)
    assert np.array_equal(volume, series.volume) and spacing == series.spacing


def test_an_oblique_series_is_sorted_along_its_normal_not_by_any_one_coordinate(tmp_path):
    # Coronal-oblique slices: rows along x, columns along (0, 0.6, -0.8); the normal is
    # (0, 0.8, 0.6). Positions step 2 mm along the normal with in-plane shifts of up to 9 mm,
    # which would sort them otherwise by x, y or z alone.
    orientation = [1.0, 0.0, 0.0, 0.0, 0.6, -0.8]
    normal, column = np.array([0.0, 0.8, 0.6]), np.array([0.0, 0.6, -0.8])
    shifts = {"s0.dcm": (2, 9.0, 0.0), "s1.dcm": (0, -4.0, 6.0), "s2.dcm": (3, 0.0, -7.0), "s3.dcm": (1, 5.0, 3.0)}
    for name, (k, dx, dc) in shifts.items():
        position = np.array([dx, 0.0, 0.0]) + dc * column + 2.0 * k * normal
        _write_dicom(tmp_path / name, _slice(100 * k), ImagePositionPatient=position.tolist(),
                     ImageOrientationPatient=orientation, PixelSpacing=[1.0, 1.0], InstanceNumber=4 - k)
    series = load_dicom_series(tmp_path)
    assert [p.name for p, _ in series.slices] == ["s1.dcm", "s3.dcm", "s0.dcm", "s2.dcm"]
    assert series.volume[:, 0, 0].tolist() == [0.0, 100.0, 200.0, 300.0]
    assert series.spacing == pytest.approx((2.0, 1.0, 1.0))


def test_the_nifti_of_a_series_keeps_its_spacing_and_position(tmp_path):
    nib = pytest.importorskip("nibabel")
    series = load_dicom_series(_write_series(tmp_path / "series"))
    series.save_nifti(tmp_path / "series.nii.gz")
    image = nib.load(str(tmp_path / "series.nii.gz"))
    assert image.shape == (5, 6, 4) and image.header.get_zooms() == pytest.approx((0.75, 0.5, 2.5))
    # Voxel (column, row, slice) -> RAS+: LPS (x, y, z) becomes (-x, -y, z).
    for k, z in enumerate((10.0, 12.5, 15.0, 17.5)):
        np.testing.assert_allclose(image.affine @ [0, 0, k, 1], [40.0, 30.0, z, 1.0])
    np.testing.assert_allclose(image.affine @ [2, 3, 0, 1], [40.0 - 2 * 0.75, 30.0 - 3 * 0.5, 10.0, 1.0])
    np.testing.assert_array_equal(np.asarray(image.dataobj).transpose(2, 1, 0), series.volume.astype(np.float32))


def test_each_slice_is_rescaled_before_the_volume_is_scaled_to_unit_range(tmp_path):
    # Two slices with the same stored values and different rescale slopes and intercepts (as PET
    # and some CT series have): the volume holds the rescaled values, and the [0, 1] mapping is
    # that of the rescaled minimum and maximum.
    raw = _slice(10, (4, 4))
    for k, (slope, intercept) in enumerate(((1.0, -1024.0), (2.0, -1000.0))):
        _write_dicom(tmp_path / f"{k}.dcm", raw, ImagePositionPatient=[0.0, 0.0, 4.0 * k],
                     ImageOrientationPatient=list(AXIAL), PixelSpacing=[0.8, 0.8], RescaleSlope=slope,
                     RescaleIntercept=intercept)
    volume, spacing = read_dicom_series(tmp_path)
    np.testing.assert_array_equal(volume[0], raw - 1024.0)
    np.testing.assert_array_equal(volume[1], 2.0 * raw - 1000.0)
    assert spacing == (4.0, 0.8, 0.8)
    images = DicomImages(tmp_path, complex=False, series=True)
    low, high = -1014.0, 2.0 * 25 - 1000.0  # raw runs from 10 to 25
    assert images.value_range == [(low, high)] and images.pixel_spacing == [(4.0, 0.8, 0.8)]
    x = images[0]
    assert x.shape == (1, 2, 4, 4)
    torch.testing.assert_close(x[0, 1], torch.from_numpy((2.0 * raw - 1000.0 - low) / (high - low)).float())


def test_multi_frame_files_read_as_volumes(tmp_path):
    frames = np.stack([_slice(100 * k, (4, 6)) for k in range(3)])
    classic = _write_dicom(tmp_path / "classic.dcm", frames, ImagePositionPatient=[0.0, 0.0, 0.0],
                           ImageOrientationPatient=list(AXIAL), PixelSpacing=[0.4, 0.6], SpacingBetweenSlices=1.5,
                           RescaleIntercept=-50.0)
    series = load_dicom_series(classic)  # one position for all frames: the stored frame order
    assert series.order == "frame order" and series.volume.shape == (3, 4, 6)
    assert series.volume[:, 0, 0].tolist() == [-50.0, 50.0, 150.0] and series.spacing == (1.5, 0.4, 0.6)
    with pytest.raises(ValueError, match="classic.dcm: expected one 2D greyscale image, got 3 frames"):
        read_dicom(classic)
    # An enhanced multi-frame file: per-frame positions (stored in reverse) and shared spacing,
    # orientation and rescale in the functional groups.
    shared = Dataset()
    shared.PixelMeasuresSequence = [Dataset()]
    shared.PixelMeasuresSequence[0].PixelSpacing, shared.PixelMeasuresSequence[0].SliceThickness = [0.9, 0.7], 2.0
    shared.PlaneOrientationSequence = [Dataset()]
    shared.PlaneOrientationSequence[0].ImageOrientationPatient = list(AXIAL)
    shared.PixelValueTransformationSequence = [Dataset()]
    shared.PixelValueTransformationSequence[0].RescaleSlope = 2.0
    shared.PixelValueTransformationSequence[0].RescaleIntercept = 1.0
    per_frame = []
    for k in range(3):
        item = Dataset()
        item.PlanePositionSequence = [Dataset()]
        item.PlanePositionSequence[0].ImagePositionPatient = [0.0, 0.0, 6.0 - 3.0 * k]
        per_frame.append(item)
    enhanced = _write_dicom(tmp_path / "enhanced.dcm", frames, SharedFunctionalGroupsSequence=[shared],
                            PerFrameFunctionalGroupsSequence=per_frame)
    series = load_dicom_series(enhanced)
    assert series.order == "position" and [frame for _, frame in series.slices] == [2, 1, 0]
    assert series.volume[:, 0, 0].tolist() == [401.0, 201.0, 1.0] and series.spacing == (3.0, 0.9, 0.7)
    images = DicomImages(enhanced, complex=True, size=(2, 4), series=True)
    assert len(images) == 1 and images[0].shape == (2, 3, 2, 4) and images.pixel_spacing == [(3.0, 0.9, 0.7)]


def test_a_folder_of_series_folders_gives_one_volume_each_from_a_config(tmp_path):
    from learn2invert.train.config import load_config
    from learn2invert.train.datasets import build_dataset

    _write_series(tmp_path / "scans" / "one")
    _write_series(tmp_path / "scans" / "two", series="1.2.826.0.1.3680043.8.498.2")
    config = load_config(None, ["data.name=dicom", f"data.root={tmp_path / 'scans'}", "data.patch_size=4",
                                "operator.name=mri", "data.params={series: true, repeats: 2}"])
    images = build_dataset(config, "test")
    assert len(images) == 4 and images[3].shape == (2, 4, 4, 4) and images.pixel_spacing[1] == (2.5, 0.5, 0.75)
    assert [p.name for p in images.paths] == ["one", "two"]
    # Scaled by the whole volume's range (100 to 429), then centre-cropped from 6 x 5 to rows 1-4, columns 0-3.
    assert images.value_range[0] == (100.0, 429.0) and not images[0][1].any()
    assert float(images[0][0, 0, 0, 0]) == pytest.approx(5 / 329)
    assert float(images[0][0, 3, 3, 3]) == pytest.approx(323 / 329)
    with pytest.raises(ValueError, match="no \\*.dcm files in .*empty or in its subfolders"):
        (tmp_path / "empty").mkdir()
        DicomImages(tmp_path / "empty", series=True)


def test_mixed_series_in_one_folder_name_the_folder_and_the_file(tmp_path):
    folder = _write_series(tmp_path / "mixed")
    _write_dicom(folder / "e.dcm", _slice(0), series="9.9.9", ImagePositionPatient=[-40.0, -30.0, 20.0],
                 ImageOrientationPatient=list(AXIAL), PixelSpacing=[0.5, 0.75])
    with pytest.raises(ValueError, match=r"mixed: mixed series: e\.dcm has SeriesInstanceUID 9\.9\.9 but a\.dcm"):
        load_dicom_series(folder)
    (folder / "e.dcm").unlink()
    _write_dicom(folder / "e.dcm", _slice(0, (7, 5)), ImagePositionPatient=[-40.0, -30.0, 20.0],
                 ImageOrientationPatient=list(AXIAL), PixelSpacing=[0.5, 0.75])
    with pytest.raises(ValueError, match=r"mixed: e\.dcm is 7 x 5 pixels \(Rows x Columns\) but a\.dcm is 6 x 5"):
        DicomImages(folder, series=True)
    (folder / "e.dcm").unlink()
    _write_dicom(folder / "e.dcm", _slice(0), ImagePositionPatient=[-40.0, -30.0, 15.0],
                 ImageOrientationPatient=list(AXIAL), PixelSpacing=[0.5, 0.75])
    with pytest.raises(ValueError, match=r"mixed: a\.dcm and e\.dcm lie at the same position"):
        load_dicom_series(folder)


def _raises_naming(path: Path, match: str, read=read_dicom):
    with pytest.raises(ValueError) as info:
        read(path)
    message = str(info.value)
    assert str(path) in message and message.count(str(path)) == 1, message
    assert re.search(match, message), message


def test_a_file_without_pixel_data_is_one_error_naming_it(tmp_path):
    path = _write_dicom(tmp_path / "nopixels.dcm", _slice(0))
    ds = pydicom.dcmread(str(path))
    del ds.PixelData
    ds.save_as(str(path))
    _raises_naming(path, "no pixel data")
    _raises_naming(path, "no pixel data", read=lambda p: load_dicom_series(p.parent))


@pytest.mark.parametrize("rows, held", [(5, 60), (7, 60), (3, 60)])
def test_rows_and_columns_that_do_not_match_the_pixel_data_are_one_error_naming_the_file(tmp_path, rows, held):
    # 6 x 5 16-bit pixels are 60 bytes; pydicom alone would read 3 rows as two frames and drop the
    # extra row of 5 rows with only a warning.
    path = _write_dicom(tmp_path / "header.dcm", _slice(0), Rows=rows)
    _raises_naming(path, rf"Rows x Columns = {rows} x 5 .* needs {rows * 10} bytes .* holds {held}")
    _raises_naming(path, "does not match", read=DicomImages)


def test_a_truncated_file_is_one_error_naming_it(tmp_path):
    whole = Path(resolve_dicom_paths("pydicom:MR_small.dcm")[0]).read_bytes()
    for fraction in (0.6, 0.05):  # cut inside the pixel data, and before it
        path = tmp_path / f"cut{int(fraction * 100)}.dcm"
        path.write_bytes(whole[: int(len(whole) * fraction)])
        _raises_naming(path, "holds|no pixel data|cannot read")


def test_compressed_pixel_data_without_its_codec_is_one_error_naming_the_file(tmp_path, monkeypatch):
    jpeg2000 = Path(pydicom.data.get_testdata_file("JPEG2000.dcm"))

    def no_codec(self):  # what pydicom raises when every decoder plugin for the syntax is missing
        raise RuntimeError("Unable to decompress 'JPEG 2000 Image Compression' pixel data because all plugins are "
                           "missing dependencies:\n\tgdcm - requires gdcm>=3.0.10\n\tpylibjpeg - requires "
                           "pylibjpeg>=2.0 and pylibjpeg-openjpeg>=2.0")

    monkeypatch.setattr(pydicom.dataset.Dataset, "pixel_array", property(no_codec))
    _raises_naming(jpeg2000, r"compressed DICOM image .*\(JPEG 2000 Image Compression, transfer syntax "
                             r"1\.2\.840\.10008\.1\.2\.4\.91\): Unable to decompress .* pip install 'pylibjpeg\[all\]'")
    _raises_naming(jpeg2000, "missing dependencies", read=lambda p: DicomImages(p, series=True))


def test_a_gap_in_a_series_warns_naming_the_folder(tmp_path):
    folder = _write_series(tmp_path / "gap")
    (folder / "a.dcm").unlink()  # z = 10, 12.5, 17.5: the slice at 15 is missing
    with pytest.warns(UserWarning, match=r"gap: uneven slice spacing \(2\.500 to 5\.000 mm.*median, 3\.750 mm"):
        assert load_dicom_series(folder).spacing == (3.75, 0.5, 0.75)


# ----------------------------------------------------------------------- l2i reconstruct of DICOM

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"


@pytest.fixture(scope="module")
def denoising_run(tmp_path_factory):
    """A tiny grey denoising RIM (seconds): any image size, so DICOM slices of any size fit."""
    from learn2invert.train import loop

    run = tmp_path_factory.mktemp("denoise")
    loop.train(SMOKE, run, show_progress=False, overrides=(
        "data.train_length=16", "data.val_length=4", "data.patch_size=8", "train.batch_size=8", "train.epochs=1",
        "solver.params.steps=2", "solver.params.conv_channels=4", "solver.params.hidden_channels=4",
        "operator.name=denoising", "operator.params={}", "operator.noise_sigma=0.05"))
    return run


def test_reconstruct_a_series_folder_writes_its_spacing_and_stored_units(denoising_run, tmp_path, capsys):
    nib = pytest.importorskip("nibabel")
    from learn2invert.cli import main
    from learn2invert.inference.reconstruct import reconstruct

    folder = _write_series(tmp_path / "ct", RescaleIntercept=-1024.0)
    result = reconstruct(denoising_run, folder, tmp_path / "out.nii.gz", simulate=True, seed=0)
    assert result["order"] == "position" and result["slices"] == 4 and result["spacing_mm"] == [2.5, 0.5, 0.75]
    # Rescaled before the [0, 1] mapping: stored 100..429 are -924..-595 HU.
    assert result["value_range"] == [-924.0, -595.0]
    assert "4 slice(s) sorted by position, voxel spacing 2.5 x 0.5 x 0.75 mm" in result["notice"]
    assert capsys.readouterr().out.strip() == result["notice"]
    image = nib.load(result["output"])
    assert image.shape == (5, 6, 4) and image.header.get_zooms() == pytest.approx((0.75, 0.5, 2.5))
    np.testing.assert_allclose(image.affine @ [0, 0, 3, 1], [40.0, 30.0, 17.5, 1.0])
    estimate = np.asarray(image.dataobj).transpose(2, 1, 0)  # (slices, rows, columns), HU
    assert np.isfinite(estimate).all() and -1300 < estimate.mean() < -200
    assert set(result["metrics"]) == {"adjoint", "estimate"} and Path(result["side_by_side"]).is_file()
    # .npy: the same (slices, H, W) values; it cannot hold the spacing, and says so.
    npy = reconstruct(denoising_run, folder, tmp_path / "out.npy", simulate=True, seed=0, progress=False)
    np.testing.assert_allclose(np.load(npy["output"]), estimate, rtol=1e-5, atol=1e-3)
    assert "out.npy does not store the spacing" in npy["notice"] and capsys.readouterr().out == ""
    # The CLI: the notice, then the files.
    assert main(["reconstruct", str(denoising_run), str(folder), str(tmp_path / "cli.nii.gz"), "--simulate"]) == 0
    out = capsys.readouterr().out
    assert "voxel spacing 2.5 x 0.5 x 0.75 mm" in out and "wrote " in out
    for args, match in (([str(folder), str(tmp_path / "x.png"), "--simulate"], "expected one of .nii, .nii.gz, .npy"),
                        ([str(folder), str(tmp_path / "x.nii.gz")], "is taken as the clean truth; pass --simulate"),
                        ([str(tmp_path), str(tmp_path / "x.nii.gz"), "--simulate"], "holds no \\*.dcm files")):
        assert main(["reconstruct", str(denoising_run), *args]) == 2
        assert re.search(match, capsys.readouterr().err)


def test_reconstruct_a_dicom_image_says_what_a_png_cannot_hold_and_nifti_keeps(denoising_run, tmp_path, capsys):
    nib = pytest.importorskip("nibabel")
    from learn2invert.inference.reconstruct import reconstruct

    scan = _write_dicom(tmp_path / "scan.dcm", _slice(1000, (12, 10)), PixelSpacing=[0.5, 0.75], SliceThickness=3.0,
                        RescaleSlope=2.0, RescaleIntercept=-1000.0)
    result = reconstruct(denoising_run, scan, tmp_path / "out.png", simulate=True)
    assert result["pixel_spacing_mm"] == [0.5, 0.75] and result["value_range"] == [1000.0, 1238.0]
    assert result["notice"] == ("scan.dcm: pixel spacing 0.5 x 0.75 mm (row, column) and values 1000 to 1238 (after "
                                "RescaleSlope / RescaleIntercept), mapped to [0, 1]; out.png stores neither (with "
                                "--simulate, write .nii.gz to keep the spacing)")
    assert result["notice"] in capsys.readouterr().out
    measured = reconstruct(denoising_run, scan, tmp_path / "y.npy", progress=False)  # the file is y
    assert measured["pixel_spacing_mm"] == [0.5, 0.75] and np.load(measured["output"]).shape == (1, 12, 10)
    nifti = reconstruct(denoising_run, scan, tmp_path / "out.nii", simulate=True, progress=False)
    image = nib.load(nifti["output"])
    assert image.shape == (10, 12, 1) and image.header.get_zooms() == pytest.approx((0.75, 0.5, 3.0))
    assert 900 < float(np.asarray(image.dataobj).mean()) < 1350  # back in stored units
