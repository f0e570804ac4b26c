"""fastMRI files as training data: the synthetic generator's format, ground-truth images and crops,
multi-coil files, bad files (one error naming file and key), and a cross-check against the
``fastmri`` package (skipped when it is not installed)."""
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from learn2invert.data import FastMRIImages, FastMRISingleCoil
from learn2invert.data.fastmri_synthetic import write_synthetic_fastmri, write_synthetic_fastmri_dataset
from learn2invert.data.fastmri import parse_ismrmrd_header
from learn2invert.data.fastmri_synthetic import main as synthetic_main

H, W, RECON = 48, 28, (20, 20)


def _single(tmp_path: Path, name: str = "file.h5", **kwargs) -> Path:
    args = dict(slices=2, kspace_shape=(H, W), recon_size=RECON, seed=3)
    return write_synthetic_fastmri(tmp_path / name, **{**args, **kwargs})


def test_synthetic_files_have_the_fastmri_layout(tmp_path):
    train = _single(tmp_path, "train.h5")
    test = _single(tmp_path, "test.h5", split="test")
    multi = _single(tmp_path, "multi.h5", coils=4)
    with h5py.File(train, "r") as hf:
        assert set(hf) == {"kspace", "reconstruction_esc", "ismrmrd_header"}
        assert hf["kspace"].dtype == np.complex64 and hf["kspace"].shape == (2, H, W)
        assert hf["reconstruction_esc"].dtype == np.float32 and hf["reconstruction_esc"].shape == (2, *RECON)
        target = hf["reconstruction_esc"][()]
        assert hf.attrs["max"] == pytest.approx(float(target.max()))
        assert hf.attrs["norm"] == pytest.approx(float(np.linalg.norm(target)), rel=1e-6)
        assert hf.attrs["acquisition"] == "CORPD_FBK" and isinstance(hf.attrs["patient_id"], str)
        header = parse_ismrmrd_header(hf["ismrmrd_header"][()])
        kspace = hf["kspace"][()]
    assert header["encoding_size"] == (H, W, 1) and header["recon_size"] == (*RECON, 1)
    # The columns outside the header's acquired range are zero-padded, those inside hold data.
    left, right = header["padding_left"], header["padding_right"]
    assert (left, right) == (2, W - 2)
    columns = np.abs(kspace).sum(axis=(0, 1)) > 0
    assert not columns[:left].any() and not columns[right:].any() and columns[left:right].all()
    with h5py.File(test, "r") as hf:
        assert "reconstruction_esc" not in hf and hf["mask"].dtype == bool and hf["mask"].shape == (W,)
        assert {"acceleration", "num_low_frequency"} <= set(hf.attrs)
        unsampled = ~hf["mask"][()]
        assert np.all(hf["kspace"][()][..., unsampled] == 0)
    with h5py.File(multi, "r") as hf:
        assert hf["kspace"].shape == (2, 4, H, W) and hf["reconstruction_rss"].shape == (2, *RECON)
        assert "reconstruction_esc" not in hf


def test_images_crop_to_the_target_and_match_it(tmp_path):
    path = _single(tmp_path)
    images = FastMRIImages(path)
    assert len(images) == 2 and images.image_shape == (2, *RECON) and images.volume_ids == [0, 0]
    x = images[1]
    assert x.shape == (2, *RECON) and x.dtype == torch.float32
    with h5py.File(path, "r") as hf:
        target, peak = hf["reconstruction_esc"][1], hf.attrs["max"]
    # |image| is the stored emulated single-coil target, in units of the volume's max.
    torch.testing.assert_close(x.norm(dim=0), torch.from_numpy(target) / peak, rtol=0, atol=2e-6)
    assert float(images[0].norm(dim=0).max()) <= 1 + 1e-5
    # A chosen crop: the centre of the same image.
    small = FastMRIImages(path, crop=(12, 8))[1]
    torch.testing.assert_close(small, x[:, 4:16, 6:14])
    # Validation subsets spread over the volumes.
    write_synthetic_fastmri(tmp_path / "second.h5", slices=2, kspace_shape=(H, W), recon_size=RECON, seed=4)
    both = FastMRIImages([path, tmp_path / "second.h5"], max_items=2)
    assert both.volume_ids == [0, 1]


def test_multicoil_files_give_coil_combined_images_close_to_rss(tmp_path):
    path = _single(tmp_path, "multi.h5", coils=6, kspace_shape=(64, 48), recon_size=(32, 32))
    images = FastMRIImages(path, coils="multi")
    with h5py.File(path, "r") as hf:
        rss = torch.from_numpy(hf["reconstruction_rss"][()]) / hf.attrs["max"]
    magnitudes = torch.stack([images[i].norm(dim=0) for i in range(len(images))])
    error = float((magnitudes - rss).norm() / rss.norm())
    assert error < 0.1, error  # low-resolution sensitivity estimate: magnitude within a few % of the rss
    with pytest.raises(ValueError, match="single-coil"):
        FastMRIImages(path, coils="single")


def test_test_split_files_are_not_ground_truth(tmp_path):
    test = _single(tmp_path, "test.h5", split="test")
    with pytest.raises(ValueError, match=r"test\.h5.*'mask'"):
        FastMRIImages(test)
    item = FastMRISingleCoil(test)[0]  # what l2i reconstruct reads: the stored k-space and mask
    with h5py.File(test, "r") as hf:
        np.testing.assert_array_equal(item["mask"].reshape(-1).numpy() > 0, hf["mask"][()])


def _corrupt(path: Path, case: str) -> str:
    """Damage a synthetic file in place; returns the key the error must name."""
    with h5py.File(path, "a") as hf:
        if case == "missing_kspace":
            del hf["kspace"]
            return "kspace"
        if case == "kspace_float":
            data = np.abs(hf["kspace"][()]).astype(np.float32)
            del hf["kspace"]
            hf.create_dataset("kspace", data=data)
            return "kspace"
        if case == "target_int":
            data = hf["reconstruction_esc"][()].astype(np.int16)
            del hf["reconstruction_esc"]
            hf.create_dataset("reconstruction_esc", data=data)
            return "reconstruction_esc"
        if case == "target_slices":
            data = hf["reconstruction_esc"][:1]
            del hf["reconstruction_esc"]
            hf.create_dataset("reconstruction_esc", data=data)
            return "reconstruction_esc"
        if case == "header_sizes":
            text = hf["ismrmrd_header"][()].decode().replace(f"<x>{H}</x><y>{W}</y>", f"<x>{H}</x><y>{W + 4}</y>")
            del hf["ismrmrd_header"]
            hf.create_dataset("ismrmrd_header", data=text.encode())
            return "ismrmrd_header"
        if case == "header_limits":
            text = hf["ismrmrd_header"][()].decode().replace(f"<maximum>{W - 5}</maximum>", f"<maximum>{W + 10}</maximum>")
            del hf["ismrmrd_header"]
            hf.create_dataset("ismrmrd_header", data=text.encode())
            return "ismrmrd_header"
        if case == "mask_length":
            hf.create_dataset("mask", data=np.ones(W - 1, bool))
            return "mask"
    raise AssertionError(case)


CASES = ["missing_kspace", "kspace_float", "target_int", "target_slices", "header_sizes", "header_limits", "mask_length"]


@pytest.mark.parametrize("case", CASES)
def test_bad_files_give_one_error_naming_file_and_key(tmp_path, case):
    path = _single(tmp_path, f"{case}.h5")
    key = _corrupt(path, case)
    for dataset in (FastMRIImages, FastMRISingleCoil):
        with pytest.raises(ValueError) as info:
            dataset(path)
        message = str(info.value)
        assert str(path) in message and f"'{key}'" in message, message
        assert "\n" not in message


def test_undersampled_kspace_without_a_mask_is_not_ground_truth(tmp_path):
    path = _single(tmp_path, "undersampled.h5")
    with h5py.File(path, "r+") as hf:
        hf["kspace"][1, :, W // 2 + 3] = 0  # one acquired column of slice 1 missing
    images = FastMRIImages(path)
    assert images[0].shape == (2, *RECON)
    with pytest.raises(ValueError, match=r"undersampled\.h5: 'kspace' slice 1 is not fully sampled \(23 of the 24"):
        images[1]


def test_bad_files_are_skipped_when_asked(tmp_path):
    good = _single(tmp_path, "good.h5")
    bad = _single(tmp_path, "bad.h5")
    _corrupt(bad, "kspace_float")
    with pytest.warns(RuntimeWarning, match="bad.h5"):
        images = FastMRIImages(tmp_path, skip_bad_files=True)
    assert images.files == [good] and [p for p, _ in images.skipped] == [bad]


def test_dataset_writer_and_command_line(tmp_path, capsys):
    folders = write_synthetic_fastmri_dataset(tmp_path / "a", files={"train": 2, "val": 1, "test": 0}, slices=1,
                                              kspace_shape=(32, 20), recon_size=(16, 16))
    assert set(folders) == {"train", "val"} and folders["train"].name == "knee_singlecoil_train"
    assert len(list(folders["train"].glob("*.h5"))) == 2
    assert synthetic_main([str(tmp_path / "b"), "--train", "1", "--val", "1", "--test", "1", "--slices", "1",
                           "--size", "32", "20", "--recon", "16", "16", "--coils", "3"]) == 0
    assert "knee_multicoil_test" in capsys.readouterr().out


def test_cross_check_against_the_fastmri_package(tmp_path):
    """Targets, crops and zero-filled images agree with fastmri's SliceDataset and transforms."""
    fastmri = pytest.importorskip("fastmri")
    from fastmri.data import SliceDataset
    from fastmri.data import transforms as T

    folder = tmp_path / "singlecoil_val"
    write_synthetic_fastmri(folder / "file1.h5", slices=2, kspace_shape=(H, W), recon_size=RECON, seed=5)
    theirs = SliceDataset(folder, challenge="singlecoil", use_dataset_cache=False,
                          dataset_cache_file=tmp_path / "unused_cache.pkl")
    ours = FastMRIImages(folder)
    measured = FastMRISingleCoil(folder)
    assert len(theirs) == len(ours) == 2
    worst = {"target": 0.0, "image": 0.0, "zero_filled": 0.0}
    for i in range(len(theirs)):
        kspace, _, target, attrs, _, _ = theirs[i]
        assert tuple(attrs["recon_size"][:2]) == RECON
        assert (attrs["padding_left"], attrs["padding_right"]) == (2, W - 2)
        np.testing.assert_array_equal(measured[i]["target"][0].numpy(), target)
        image = fastmri.complex_abs(T.complex_center_crop(fastmri.ifft2c(T.to_tensor(kspace)), RECON))
        mine = ours[i].norm(dim=0) * ours.peak(0)
        worst["target"] = max(worst["target"], float((image - torch.from_numpy(target)).abs().max() / target.max()))
        worst["image"] = max(worst["image"], float((mine - image).abs().max() / image.max()))
        # Zero-filled under a mask: the same column mask applied on both sides.
        mask = torch.zeros(W, dtype=torch.bool)
        mask[::3] = True
        masked = T.to_tensor(kspace) * mask.reshape(1, W, 1)
        theirs_zf = fastmri.complex_abs(T.complex_center_crop(fastmri.ifft2c(masked), RECON))
        from learn2invert.data.fastmri import kspace_to_magnitude

        mine_zf = kspace_to_magnitude(measured[i]["kspace"] * mask, RECON)[0]
        worst["zero_filled"] = max(worst["zero_filled"], float((mine_zf - theirs_zf).abs().max() / theirs_zf.max()))
    # Multi-coil: fastmri's rss of the coil images is the stored target; test files: the same mask.
    multi = tmp_path / "multicoil_val"
    write_synthetic_fastmri(multi / "file2.h5", coils=4, slices=1, kspace_shape=(H, W), recon_size=RECON, seed=6)
    kspace, _, target, _, _, _ = SliceDataset(multi, challenge="multicoil", use_dataset_cache=False,
                                              dataset_cache_file=tmp_path / "unused_cache.pkl")[0]
    coil_images = T.complex_center_crop(fastmri.ifft2c(T.to_tensor(kspace)), RECON)
    rss = fastmri.rss(fastmri.complex_abs(coil_images), dim=0)
    worst["rss_target"] = float((rss - torch.from_numpy(target)).abs().max() / target.max())
    test = tmp_path / "singlecoil_test"
    write_synthetic_fastmri(test / "file3.h5", split="test", slices=1, kspace_shape=(H, W), recon_size=RECON, seed=7)
    _, their_mask, target, attrs, _, _ = SliceDataset(test, challenge="singlecoil", use_dataset_cache=False,
                                                      dataset_cache_file=tmp_path / "unused_cache.pkl")[0]
    assert target is None and attrs["acceleration"] == 4
    np.testing.assert_array_equal(FastMRISingleCoil(test)[0]["mask"].reshape(-1).numpy() > 0, their_mask)
    print(f"fastmri cross-check, max relative errors: {worst}")
    assert all(v < 1e-5 for v in worst.values()), worst
