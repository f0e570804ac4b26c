"""MRI data: the embedded MNI152 brain, fastMRI single-coil HDF5 files, NIfTI volumes."""
import importlib.util
import math

import h5py
import nibabel as nib
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from learn2invert.data.brain import (
    SPLIT_GUARD,
    BrainPatches3D,
    BrainSlices,
    load_mni152,
    split_slice_indices,
)
from learn2invert.operators.phase import smooth_phase
from learn2invert.data.fastmri import (
    FastMRISingleCoil,
    fastmri_crop_size,
    kspace_to_magnitude,
    parse_ismrmrd_header,
)
from learn2invert.data.nifti import NiftiSlices, load_nifti, read_nifti, save_nifti, slice_stack

# ---------------------------------------------------------------------------------------------
# MNI152 brain template
# ---------------------------------------------------------------------------------------------

# Only the template needs nilearn; the other tests in this file run without it.
needs_nilearn = pytest.mark.skipif(
    importlib.util.find_spec("nilearn") is None, reason="the embedded brain needs learn2invert[brain]"
)


def test_missing_nilearn_says_how_to_install(monkeypatch):
    import sys

    from learn2invert.data import brain

    monkeypatch.setitem(sys.modules, "nilearn.datasets", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"learn2invert\[brain\]"):
        brain._mni152_path()


@needs_nilearn
def test_mni152_shape_range_and_cache():
    volume = load_mni152()
    assert volume.shape == (197, 233, 189)
    assert volume.dtype == np.float32
    assert volume.min() == 0.0 and volume.max() == 1.0
    assert load_mni152() is volume  # decoded once
    with pytest.raises(ValueError):
        volume[0, 0, 0] = 1.0  # read-only, so nobody can corrupt the cached copy


@needs_nilearn
@pytest.mark.parametrize("axis", ["axial", "coronal", "sagittal"])
def test_splits_disjoint_separated_and_nonempty(axis):
    splits = {s: split_slice_indices(s, axis) for s in ("train", "val", "test")}
    for name, idx in splits.items():
        assert len(idx) > 0, name
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        gaps = np.abs(splits[a][:, None] - splits[b][None, :])
        assert gaps.min() > SPLIT_GUARD, (a, b)
    if axis == "sagittal":
        # The template is left-right symmetric: slice x equals the mirror of 196 - x, so all
        # slices must come from one hemisphere or mirrored twins would cross splits.
        volume = load_mni152()
        np.testing.assert_array_equal(volume[10], volume[186])
        assert max(idx.max() for idx in splits.values()) <= 98


@needs_nilearn
def test_axial_split_ranges_match_documentation():
    ranges = {}
    for split in ("train", "val", "test"):
        idx = split_slice_indices(split)
        ranges[split] = (int(idx.min()), int(idx.max()), len(idx))
    assert ranges == {"train": (12, 148, 78), "val": (71, 93, 23), "test": (98, 121, 24)}


@needs_nilearn
def test_brain_slices_shape_determinism_and_magnitude():
    ds = BrainSlices("val", size=128, seed=3)
    assert len(ds) == 23
    x = ds[5]
    assert x.shape == (2, 128, 128) and x.dtype == torch.float32
    torch.testing.assert_close(x, BrainSlices("val", size=128, seed=3)[5], rtol=0, atol=0)
    assert not torch.equal(x, BrainSlices("val", size=128, seed=4)[5])
    # The phase changes the real/imaginary split, never |x|.
    magnitude = ds.magnitude(5)
    assert magnitude.shape == (1, 128, 128)
    torch.testing.assert_close(x.norm(dim=0, keepdim=True), magnitude, rtol=0, atol=1e-6)
    assert x[1].abs().max() > 0.05  # the phase is really there
    assert 0.8 < magnitude.max() <= 1.0
    # Another index gets another phase map (compare unit phasors where both have tissue).
    y = ds[6]
    tissue = (magnitude[0] > 0.2) & (ds.magnitude(6)[0] > 0.2)
    u5 = torch.complex(x[0], x[1])[tissue] / magnitude[0][tissue]
    u6 = torch.complex(y[0], y[1])[tissue] / y.norm(dim=0)[tissue]
    assert (u5 - u6).abs().mean() > 0.05


@needs_nilearn
def test_brain_slices_no_phase_native_size_and_padding():
    native = BrainSlices("test", phase=False)
    x = native[0]
    assert x.shape == (2, 233, 197)
    assert torch.count_nonzero(x[1]) == 0
    padded = BrainSlices("test", size=(240, 201), phase=False)[0]
    assert padded.shape == (2, 240, 201)
    torch.testing.assert_close(padded[:, 3:236, 2:199], x)  # (240 - 233) // 2 = 3, (201 - 197) // 2 = 2
    small = BrainSlices("test", size=64, scale=0.35, phase=False)[0]
    assert small.shape == (2, 64, 64)
    # At 0.35 the whole brain (about 181 x 145 px) fits inside 64 x 64: the border is empty.
    assert small[0, 0].abs().max() == 0 and small[0, :, 0].abs().max() == 0


def test_smooth_phase_range_smoothness_and_seed():
    gen = torch.Generator().manual_seed(11)
    phase = smooth_phase((48, 40), gen, order=3, max_amplitude=math.pi)
    assert phase.shape == (48, 40) and phase.dtype == torch.float32
    assert phase.abs().max() <= math.pi + 1e-6
    # Smooth: a cubic across 48 pixels cannot change by more than a few tenths of a radian per pixel.
    assert phase.diff(dim=0).abs().max() < 0.5 and phase.diff(dim=1).abs().max() < 0.5
    again = smooth_phase((48, 40), torch.Generator().manual_seed(11), order=3)
    torch.testing.assert_close(phase, again, rtol=0, atol=0)
    constant = smooth_phase((5, 6, 7), torch.Generator().manual_seed(2), order=0)
    assert constant.shape == (5, 6, 7)
    assert torch.allclose(constant, constant.flatten()[0].expand_as(constant))


@needs_nilearn
def test_brain_patches_3d():
    ds = BrainPatches3D("test", patch=(8, 32, 48), seed=1)
    assert len(ds) > 0
    x = ds[0]
    assert x.shape == (2, 8, 32, 48) and x.dtype == torch.float32
    torch.testing.assert_close(x.norm(dim=0, keepdim=True), ds.magnitude(0), rtol=0, atol=1e-6)
    torch.testing.assert_close(x, BrainPatches3D("test", patch=(8, 32, 48), seed=1)[0], rtol=0, atol=0)
    for z, _, _ in ds.positions:
        assert 98 <= z and z + 8 <= 122  # inside the documented axial test slab
    with pytest.raises(ValueError, match="slices thick"):
        BrainPatches3D("val", patch=(40, 32, 32))


# ---------------------------------------------------------------------------------------------
# fastMRI single-coil HDF5
# ---------------------------------------------------------------------------------------------

H, W, SLICES = 24, 17, 3  # odd W: fftshift != ifftshift, so a swapped shift would show
RECON = (12, 10)  # header recon matrix (x, y): the crop is x rows by y columns

HEADER = f"""<?xml version="1.0" encoding="utf-8"?>
<ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD">
  <encoding>
    <encodedSpace><matrixSize><x>{H}</x><y>{W}</y><z>1</z></matrixSize></encodedSpace>
    <reconSpace><matrixSize><x>{RECON[0]}</x><y>{RECON[1]}</y><z>1</z></matrixSize></reconSpace>
    <encodingLimits>
      <kspace_encoding_step_1><minimum>0</minimum><maximum>15</maximum><center>8</center></kspace_encoding_step_1>
    </encodingLimits>
  </encoding>
</ismrmrdHeader>
"""


def _reference_target(kspace: np.ndarray) -> np.ndarray:
    """|centred ortho ifft2| cropped to RECON, written independently of the library in numpy."""
    image = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    top, left = (H - RECON[0]) // 2, (W - RECON[1]) // 2
    return np.abs(image[..., top : top + RECON[0], left : left + RECON[1]]).astype(np.float32)


def _write_fastmri(path, rng, with_target=True, mask=None, header=HEADER):
    kspace = (rng.standard_normal((SLICES, H, W)) + 1j * rng.standard_normal((SLICES, H, W))).astype(np.complex64)
    with h5py.File(path, "w") as hf:
        hf.create_dataset("kspace", data=kspace)
        if with_target:
            target = _reference_target(kspace)
            hf.create_dataset("reconstruction_esc", data=target)
            hf.attrs["max"] = float(target.max())
            hf.attrs["norm"] = float(np.linalg.norm(target))
        if mask is not None:
            hf.create_dataset("mask", data=mask)
            hf.attrs["acceleration"] = 4
            hf.attrs["num_low_frequency"] = 4
        if header is not None:
            hf.create_dataset("ismrmrd_header", data=header.encode())
        hf.attrs["acquisition"] = "CORPD_FBK"
        hf.attrs["patient_id"] = "abc123"
    return kspace


def test_fastmri_dataset_shapes_crop_and_target(tmp_path):
    rng = np.random.default_rng(0)
    kspaces = [_write_fastmri(tmp_path / f"file{i}.h5", rng) for i in range(2)]
    ds = FastMRISingleCoil(tmp_path)
    assert len(ds) == 2 * SLICES
    item = ds[SLICES + 1]  # second file, slice 1
    assert item["fname"] == "file1.h5" and item["slice"] == 1
    assert item["kspace"].shape == (2, H, W) and item["kspace"].dtype == torch.float32
    np.testing.assert_array_equal(item["kspace"][0].numpy(), kspaces[1][1].real)
    np.testing.assert_array_equal(item["kspace"][1].numpy(), kspaces[1][1].imag)
    assert item["crop_size"] == RECON
    assert item["recon_size"] == (*RECON, 1) and item["encoding_size"] == (H, W, 1)
    assert item["target"].shape == (1, *RECON)
    assert "mask" not in item
    assert item["attrs"]["acquisition"] == "CORPD_FBK" and item["attrs"]["patient_id"] == "abc123"
    assert item["attrs"]["max"] == pytest.approx(float(item["target"].max()), rel=0.5)
    # k-space -> ifft2c -> crop -> |.| reproduces the stored target.
    image = kspace_to_magnitude(item["kspace"], item["crop_size"])
    torch.testing.assert_close(image, item["target"], rtol=1e-5, atol=1e-6)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["kspace"].shape == (2, 2, H, W) and batch["target"].shape == (2, 1, *RECON)


def test_ismrmrd_header_and_crop_rules():
    sizes = parse_ismrmrd_header(HEADER.encode())
    assert sizes["encoding_size"] == (H, W, 1) and sizes["recon_size"] == (*RECON, 1)
    assert (sizes["padding_left"], sizes["padding_right"]) == (W // 2 - 8, W // 2 - 8 + 16)
    plain = (
        "<ismrmrdHeader><encoding>"
        "<encodedSpace><matrixSize><x>640</x><y>372</y></matrixSize></encodedSpace>"
        "<reconSpace><matrixSize><x>320</x><y>320</y></matrixSize></reconSpace>"
        "</encoding></ismrmrdHeader>"
    )
    assert parse_ismrmrd_header(plain)["recon_size"] == (320, 320, 1)  # no namespace, no z
    assert fastmri_crop_size((640, 368), (320, 320, 1)) == (320, 320)
    assert fastmri_crop_size((640, 203), (320, 320, 1)) == (203, 203)  # narrow brain FLAIR files
    assert fastmri_crop_size((640, 368), (320, 320, 1), target_shape=(5, 300, 310)) == (300, 310)


def test_fastmri_test_split_mask(tmp_path):
    rng = np.random.default_rng(1)
    mask = np.zeros(W, dtype=bool)
    mask[::4] = True
    mask[W // 2 - 2 : W // 2 + 2] = True
    _write_fastmri(tmp_path / "test.h5", rng, with_target=False, mask=mask)
    item = FastMRISingleCoil(tmp_path / "test.h5")[0]
    assert "target" not in item
    assert item["crop_size"] == RECON  # from the header when there is no target
    assert item["mask"].shape == (1, 1, W)
    np.testing.assert_array_equal(item["mask"][0, 0].numpy(), mask.astype(np.float32))
    assert item["attrs"]["acceleration"] == 4
    assert "mask" not in FastMRISingleCoil(tmp_path / "test.h5", split_has_mask=False)[0]
    _write_fastmri(tmp_path / "train.h5", rng)
    with pytest.raises(ValueError, match="train.h5"):
        FastMRISingleCoil([tmp_path / "train.h5"], split_has_mask=True)


def _write_h5(path, **datasets):
    with h5py.File(path, "w") as hf:
        for key, value in datasets.items():
            hf.create_dataset(key, data=value)


@pytest.mark.parametrize(
    "case",
    ["text", "no_kspace", "multicoil", "real_kspace", "bad_header", "bad_target", "no_header_no_target"],
)
def test_fastmri_corrupt_files_name_the_file(tmp_path, case):
    path = tmp_path / f"{case}.h5"
    k = np.ones((2, 8, 6), np.complex64)
    if case == "text":
        path.write_text("this is not an HDF5 file\n")
    elif case == "no_kspace":
        _write_h5(path, reconstruction_esc=np.ones((2, 4, 4), np.float32))
    elif case == "multicoil":
        _write_h5(path, kspace=np.ones((2, 4, 8, 6), np.complex64), ismrmrd_header=HEADER.encode())
    elif case == "real_kspace":
        _write_h5(path, kspace=np.ones((2, 8, 6), np.float32), ismrmrd_header=HEADER.encode())
    elif case == "bad_header":
        _write_h5(path, kspace=k, ismrmrd_header=b"<ismrmrdHeader><encoding>")
    elif case == "bad_target":
        _write_h5(path, kspace=k, reconstruction_esc=np.ones((3, 4, 4), np.float32))
    else:
        _write_h5(path, kspace=k)
    with pytest.raises(ValueError) as info:
        FastMRISingleCoil(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------
# NIfTI
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 2])
def test_nifti_round_trip(tmp_path, channels):
    gen = torch.Generator().manual_seed(0)
    volume = torch.rand(channels, 6, 7, 5, generator=gen)
    path = tmp_path / "vol.nii.gz"
    save_nifti(path, volume, (0.5, 1.0, 2.5))
    loaded, voxel_size = load_nifti(path)
    assert loaded.dtype == torch.float32 and loaded.shape == (channels, 6, 7, 5)
    torch.testing.assert_close(loaded, volume, rtol=0, atol=0)
    assert voxel_size == pytest.approx((0.5, 1.0, 2.5))


def test_nifti_reorients_to_ras(tmp_path):
    data = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    affine = np.diag([-2.0, 1.0, 3.0, 1.0])  # first axis stored right-to-left (LAS)
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "las.nii"))
    loaded, voxel_size = load_nifti(tmp_path / "las.nii")
    np.testing.assert_array_equal(loaded[0].numpy(), data[::-1])
    assert voxel_size == pytest.approx((2.0, 1.0, 3.0))
    raw, _ = load_nifti(tmp_path / "las.nii", canonical=False)
    np.testing.assert_array_equal(raw[0].numpy(), data)


def test_nifti_slices(tmp_path):
    volume = torch.zeros(2, 10, 9, 6)
    volume[:, 2:8, 2:7, 1:5] = torch.rand(2, 6, 5, 4, generator=torch.Generator().manual_seed(1)) + 0.5
    save_nifti(tmp_path / "a.nii", volume, (1, 1, 1))
    save_nifti(tmp_path / "b.nii", 3 * volume[:1], (1, 1, 1))
    ds = NiftiSlices(tmp_path / "a.nii", axis="axial")
    assert len(ds) == 6
    x = ds[2]
    assert x.shape == (2, 9, 10)  # axial slice of an (X, Y, Z) volume: Y rows by X columns
    expected = slice_stack(volume, "axial")[:, 2] / volume.norm(dim=0).max()
    torch.testing.assert_close(x, expected)
    assert max(ds[i].norm(dim=0).max() for i in range(len(ds))) == pytest.approx(1.0)
    both = NiftiSlices([tmp_path / "a.nii", tmp_path / "b.nii"], axis="coronal", min_foreground=0.05)
    assert len(both) == 2 * 5  # the empty coronal slices (y outside 2..6) are skipped
    assert both[0].shape == (2, 6, 10) and both[len(both) - 1].shape == (1, 6, 10)


@pytest.mark.parametrize("case", ["text", "4d", "2d", "truncated"])
def test_nifti_corrupt_files_name_the_file(tmp_path, case):
    path = tmp_path / f"{case}.nii"
    if case == "text":
        path.write_text("not a nifti file")
    elif case == "4d":
        nib.save(nib.Nifti1Image(np.zeros((3, 3, 3, 2), np.float32), np.eye(4)), str(path))
    elif case == "2d":
        nib.save(nib.Nifti1Image(np.zeros((3, 3), np.float32), np.eye(4)), str(path))
    else:
        nib.save(nib.Nifti1Image(np.ones((8, 8, 8), np.float32), np.eye(4)), str(path))
        path.write_bytes(path.read_bytes()[:600])  # header intact, voxel data cut short
    with pytest.raises(ValueError) as info:
        load_nifti(path)
    assert str(path) in str(info.value)
    if case != "truncated":
        with pytest.raises(ValueError, match=case):
            NiftiSlices([path])


_OBLIQUE_AFFINES = {
    "ras": np.diag([1.0, 2.0, 3.0, 1.0]),
    "las_offset": np.array([[-2.0, 0, 0, 30], [0, 1.0, 0, -4], [0, 0, 3.0, 7], [0, 0, 0, 1]]),
    "permuted": np.array([[0, 1.5, 0, -10], [-1.0, 0, 0, 20], [0, 0, 3.0, 5], [0, 0, 0, 1]]),
    "coronal_stack": np.array([[0, 0, -1.0, 3], [2.0, 0, 0, 0], [0, -1.0, 0, 9], [0, 0, 0, 1]]),
}


@pytest.mark.parametrize("name", sorted(_OBLIQUE_AFFINES))
@pytest.mark.parametrize("complex_data", [False, True])
def test_read_nifti_round_trips_on_the_files_own_grid(tmp_path, name, complex_data):
    affine = _OBLIQUE_AFFINES[name]
    rng = np.random.default_rng(0)
    data = rng.random((4, 5, 6)).astype(np.float32)
    if complex_data:
        data = (data + 1j * rng.random((4, 5, 6))).astype(np.complex64)
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units(xyz="mm")
    img.header["descrip"] = b"scanner"
    nib.save(img, str(tmp_path / "in.nii.gz"))
    read = read_nifti(tmp_path / "in.nii.gz")
    # The volume is the RAS+ one load_nifti gives; voxel sizes follow its axes.
    canonical, voxel_size = load_nifti(tmp_path / "in.nii.gz")
    torch.testing.assert_close(read.volume, canonical, rtol=0, atol=0)
    assert read.voxel_size == pytest.approx(voxel_size) and read.frame is None and read.slice_axis is None
    save_nifti(tmp_path / "out.nii.gz", read.volume, like=read)
    out = nib.load(str(tmp_path / "out.nii.gz"))
    np.testing.assert_array_equal(np.asanyarray(out.dataobj), data)  # the file's own axis order
    np.testing.assert_allclose(out.affine, affine, atol=1e-6)
    assert out.header.get_xyzt_units()[0] == "mm" and out.header["descrip"] == b"scanner"


def test_read_nifti_takes_2d_slices_and_frames_of_4d_series(tmp_path):
    coronal = np.array([[1.0, 0, 0, 0], [0, 0, 2.0, 0], [0, 1.5, 0, 0], [0, 0, 0, 1]])  # file axis 1 is z
    slice_2d = np.arange(20, dtype=np.float32).reshape(4, 5)
    nib.save(nib.Nifti1Image(slice_2d, coronal), str(tmp_path / "slice.nii"))
    read = read_nifti(tmp_path / "slice.nii")
    assert read.volume.shape == (1, 4, 1, 5) and read.slice_axis == 1 and read.file_shape == (4, 5)
    save_nifti(tmp_path / "slice_out.nii", 2 * read.volume, like=read)
    out = nib.load(str(tmp_path / "slice_out.nii"))
    assert out.shape == (4, 5)
    np.testing.assert_array_equal(out.get_fdata(), 2 * slice_2d)
    np.testing.assert_allclose(out.affine, coronal)
    # A 4D series: one frame, chosen explicitly; the output is that frame's 3D volume.
    series = np.stack([np.full((3, 4, 2), t, np.float32) for t in range(3)], axis=-1)
    nib.save(nib.Nifti1Image(series, np.eye(4)), str(tmp_path / "series.nii.gz"))
    with pytest.raises(ValueError, match=r"series.nii.gz is a 4D series of 3 frames.*frame=0..2"):
        read_nifti(tmp_path / "series.nii.gz")
    for bad in (3, -1, 1.0, True):
        with pytest.raises(ValueError, match=r"frame must be an int in 0..2"):
            read_nifti(tmp_path / "series.nii.gz", frame=bad)
    second = read_nifti(tmp_path / "series.nii.gz", frame=2)
    assert second.frame == 2 and second.file_shape == (3, 4, 2) and float(second.volume.min()) == 2.0
    save_nifti(tmp_path / "frame.nii.gz", second.volume, like=second)
    assert nib.load(str(tmp_path / "frame.nii.gz")).shape == (3, 4, 2)
    with pytest.raises(ValueError, match="expected a RAS"):
        second.to_file_order(np.zeros((3, 4)))


def test_brain_slices_augment_draws_new_phase_and_flips_per_epoch():
    from learn2invert.data import BrainSlices
    from learn2invert.operators.fft import complex_abs

    plain = BrainSlices("train", size=32, scale=0.175)
    aug = BrainSlices("train", size=32, scale=0.175, augment=True)
    assert torch.equal(aug[3], plain[3])  # epoch 0 is the plain set
    aug.set_epoch(1)
    flipped = 0
    for i in range(8):
        x, ref = aug[i], plain[i]
        assert not torch.allclose(x, ref)  # a new phase map
        mag, ref_mag = complex_abs(x[None])[0], complex_abs(ref[None])[0]
        same, mirrored = torch.allclose(mag, ref_mag, atol=1e-5), torch.allclose(mag, ref_mag.flip(-1), atol=1e-5)
        assert same or mirrored
        flipped += mirrored and not same
    assert 0 < flipped < 8
    assert torch.equal(aug[5], aug[5])  # reproducible within the epoch


def test_slices_are_displayed_anterior_up_and_superior_up():
    volume = torch.zeros(5, 6, 7)  # RAS+: x left->right, y posterior->anterior, z inferior->superior
    volume[0, 5, 3] = 1.0  # subject's left, anterior
    volume[2, 3, 6] = 2.0  # superior
    axial = slice_stack(volume, "axial")[3]
    assert axial.shape == (6, 5) and axial[0, 0] == 1.0  # anterior at the top, left on the left
    assert slice_stack(volume, "coronal")[3][0, 2] == 2.0  # superior at the top
    assert slice_stack(volume, "sagittal")[2][0, 3] == 2.0
    # The template's axial slices are longer front to back than side to side: not transposed.
    brain = BrainSlices(split="test", size=64, scale=0.35)[0].norm(dim=0) > 0.1
    rows, cols = brain.any(dim=1).sum(), brain.any(dim=0).sum()
    assert rows > 1.1 * cols
