"""``data.name: fastmri`` from a config: tiny trainings on synthetic fastMRI files, the split folders,
and ``l2i reconstruct`` on fastMRI files (file masks, retrospective masks, progress, no partial output)."""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import yaml

from learn2invert.cli import main
from learn2invert.data.fastmri_synthetic import write_synthetic_fastmri, write_synthetic_fastmri_dataset
from learn2invert.train import loop
from learn2invert.train.config import ConfigError, load_config
from learn2invert.train.datasets import build_dataset
from learn2invert.inference.reconstruct import fastmri_measurements, reconstruct

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "fastmri"
SHAPE = dict(slices=2, kspace_shape=(64, 32), recon_size=(32, 32))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fastmri")
    write_synthetic_fastmri_dataset(root, files={"train": 3, "val": 1, "test": 1}, **SHAPE)
    return root


def _tiny(root: Path, solver: str = "rim") -> dict:
    """A tiny config of the same shape as configs/fastmri/*.yaml."""
    solvers = {"rim": {"architecture": "mri", "steps": 2, "eps_init": 1.0},
               "irim": {"steps": 2, "state_channels": 8, "hidden_channels": 8, "downsampling": [1, 2], "init": "adjoint"}}
    return {
        "seed": 0,
        "data": {"name": "fastmri", "root": str(root / "knee_singlecoil_{split}"), "val_length": 2, "data_range": None},
        "operator": {"name": "mri", "mask": "random", "acceleration": 4.0, "center_fraction": 0.08, "noise_sigma": 0.0},
        "solver": {"name": solver, "params": solvers[solver]},
        "loss": {"name": "nmse", "weights": "last"},
        "train": {"max_steps": 4, "val_every": 2, "batch_size": 2, "optimizer": {"name": "adam", "lr": 0.02}},
    }


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def irim_run(data_root, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("irim_run")
    torch.manual_seed(0)
    loop.train(_write(folder, _tiny(data_root, "irim")), folder / "run", show_progress=False)
    return folder / "run"


def test_a_fastmri_config_trains_and_the_validation_loss_falls(irim_run):
    history = json.loads((irim_run / "history.json").read_text())
    assert [r["global_step"] for r in history] == [2, 4]
    assert all(np.isfinite(r["train_loss"]) and np.isfinite(r["val_psnr"]) for r in history)
    assert history[1]["val_loss"] < history[0]["val_loss"]  # seeded validation masks: the same measurements
    config = load_config(irim_run / "config.yaml")
    assert build_dataset(config, "train")[0].shape == (2, 32, 32)  # the fastMRI crop of the files
    assert len(build_dataset(config, "val")) == 2  # data.val_length slices


def test_split_folders_and_their_errors(data_root, tmp_path):
    config = load_config(None, ["data.name=fastmri", f"data.root={data_root}/knee_singlecoil_{{split}}",
                                "operator.name=mri"])
    assert len(build_dataset(config, "train")) == 6  # 3 files x 2 slices: all slices, whatever train_length
    # Per-split roots override data.root.
    own = load_config(None, ["data.name=fastmri", f"data.params={{val_root: {data_root}/knee_singlecoil_train}}",
                             f"data.root={data_root}/knee_singlecoil_{{split}}"])
    assert build_dataset(own, "val").files[0].parent.name == "knee_singlecoil_train"
    with pytest.raises(ConfigError, match="placeholder"):
        build_dataset(load_config(None, ["data.name=fastmri", f"data.root={data_root}"]), "train")
    with pytest.raises(ConfigError, match="does not exist"):
        build_dataset(load_config(None, ["data.name=fastmri", f"data.root={tmp_path}/nothing_{{split}}"]), "val")
    # The test split of the challenge files holds no ground truth: one error, naming the file and its mask.
    with pytest.raises(ValueError, match=r"test split.*file\d+\.h5.*'mask'"):
        build_dataset(config, "test")


def test_shipped_fastmri_configs_load_and_build(data_root):
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    single = [f"knee_singlecoil_{s}_{a}x.yaml" for s in ("irim", "rim", "unet") for a in (4, 8)]
    assert names == ["knee_multicoil_irim_4x.yaml"] + single  # the multi-coil one: tests/test_fastmri_own_coils.py
    for path in CONFIGS.glob("knee_singlecoil_*.yaml"):
        config = load_config(path, [f"data.root={data_root}/knee_singlecoil_{{split}}"])
        assert config["data"]["name"] == "fastmri" and config["operator"]["mask"] == "random"
        acceleration = 4.0 if "_4x" in path.name else 8.0
        assert config["operator"]["acceleration"] == acceleration
        assert config["operator"]["center_fraction"] == {4.0: 0.08, 8.0: 0.04}[acceleration]
        assert load_config(path)["data"]["root"] == "data/fastmri/knee_singlecoil_{split}"


# ---------------------------------------------------------------------------------- l2i reconstruct

def test_reconstruct_uses_the_test_files_own_mask_and_prints_no_scores(irim_run, data_root, tmp_path, capsys):
    test_file = next((data_root / "knee_singlecoil_test").glob("*.h5"))
    assert main(["reconstruct", str(irim_run), str(test_file), str(tmp_path / "test_recon.h5")]) == 0
    out = capsys.readouterr()
    assert "PSNR" not in out.out and "fully sampled" not in out.out
    with h5py.File(test_file, "r") as hf:
        file_mask = hf["mask"][()]
    from learn2invert.data import FastMRISingleCoil
    from learn2invert.inference import load_solver
    from learn2invert.inference.reconstruct import Run

    solver, config, _, shape = load_solver(irim_run)
    measured, info = fastmri_measurements(Run(solver, config, shape, torch.device("cpu")),
                                          list(FastMRISingleCoil(test_file)), test_file)
    assert info == {"mask_source": "file"}
    for _, operator in measured:
        np.testing.assert_array_equal(operator.mask.reshape(-1).numpy(), file_mask)
    with h5py.File(tmp_path / "test_recon.h5", "r") as hf:
        assert hf["reconstruction"].shape == (2, 32, 32)


def test_reconstruct_undersamples_a_fully_sampled_file(irim_run, data_root, tmp_path, capsys):
    """Issue 17: a fully sampled file was reconstructed from all of its k-space (adjoint 155 dB)."""
    val_file = next((data_root / "knee_singlecoil_val").glob("*.h5"))
    assert main(["reconstruct", str(irim_run), str(val_file), str(tmp_path / "val_recon.h5")]) == 0
    out = capsys.readouterr()
    notice = [line for line in out.out.splitlines() if "fully sampled" in line]
    assert len(notice) == 1 and "random mask" in notice[0] and "seed 0" in notice[0]
    adjoint = float(next(line for line in out.out.splitlines() if line.startswith("adjoint:")).split()[2])
    assert adjoint < 40  # zero-filled from a 4x mask, not the fully sampled image
    # A progress bar per slice on stderr.
    assert "reconstructing" in out.err and "2/2" in out.err
    result = reconstruct(irim_run, val_file, tmp_path / "again.h5", seed=0, progress=False)
    assert result["mask_source"] == "retrospective" and 2.5 < result["acceleration"] < 6
    with h5py.File(tmp_path / "again.h5", "r") as hf, h5py.File(tmp_path / "val_recon.h5", "r") as first:
        np.testing.assert_array_equal(hf["reconstruction"][()], first["reconstruction"][()])  # seeded


def test_reconstruct_a_bad_file_writes_nothing(irim_run, tmp_path, capsys):
    bad = write_synthetic_fastmri(tmp_path / "bad.h5", **SHAPE)
    with h5py.File(bad, "a") as hf:
        data = hf["reconstruction_esc"][()].astype(np.int32)
        del hf["reconstruction_esc"]
        hf.create_dataset("reconstruction_esc", data=data)
    assert main(["reconstruct", str(irim_run), str(bad), str(tmp_path / "out.h5")]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "'reconstruction_esc'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "out_side_by_side.png").exists()


def test_training_on_a_folder_with_a_bad_file_stops_before_writing(data_root, tmp_path):
    folder = tmp_path / "knee_singlecoil_train"
    for i in range(2):
        write_synthetic_fastmri(folder / f"file{i}.h5", seed=i, **SHAPE)
    with h5py.File(folder / "file1.h5", "a") as hf:
        del hf["kspace"]
    config = _tiny(data_root)
    config["data"]["params"] = {"train_root": str(folder)}
    with pytest.raises(ValueError, match=r"file1\.h5: no 'kspace' dataset"):
        loop.train(_write(tmp_path, config), tmp_path / "run", show_progress=False)
    run = tmp_path / "run"  # removed, or at most the lock file left: no config, weights or history
    assert not run.exists() or not any(p.name != ".lock" for p in run.iterdir())


# ------------------------------------------------------------------------------ volume-wise metrics

def test_volume_scores_are_fastmris_volume_metrics():
    from learn2invert import metrics
    from learn2invert.train.validate import VolumeScores

    g = torch.Generator().manual_seed(0)
    target = torch.rand(5, 1, 12, 12, generator=g)
    target[3:] *= 3  # the second volume has another peak
    estimate = target + 0.05 * torch.randn(5, 1, 12, 12, generator=g)
    scores = VolumeScores(["a", "a", "a", "b", "b"])
    scores.add(estimate[:2], target[:2], target[:2])  # batches need not follow volume borders
    scores.add(estimate[2:], target[2:], target[2:])
    result = scores.result()
    assert result["ids"] == ["a", "b"]
    for v, part in enumerate((slice(0, 3), slice(3, 5))):
        est, tgt = estimate[part, 0], target[part, 0]
        assert float(result["last"]["psnr"][v]) == pytest.approx(metrics.psnr_volume(est, tgt), rel=1e-6)
        assert float(result["last"]["ssim"][v]) == pytest.approx(metrics.ssim_volume(est, tgt), rel=1e-6)
        assert float(result["last"]["nmse"][v]) == pytest.approx(metrics.nmse_volume(est, tgt), rel=1e-6)
    assert torch.isinf(result["adjoint"]["psnr"]).all()  # the "adjoint" given was the target itself


def test_eval_reports_volume_wise_metrics(irim_run, tmp_path):
    from learn2invert.inference.evaluate import evaluate_run

    result = evaluate_run(irim_run, split="val", out=tmp_path / "eval.json")
    assert result["per_volume"]["volumes"] == 1 and len(result["per_volume"]["psnr"]["per_sample"]) == 1
    assert np.isfinite(result["per_volume"]["psnr"]["mean"]) and np.isfinite(result["per_volume"]["adjoint"]["ssim"]["mean"])
    assert "per volume (1)" in (tmp_path / "eval.md").read_text()


def test_reconstruct_a_multicoil_file(irim_run, tmp_path, capsys):
    for split in ("val", "test"):
        source = write_synthetic_fastmri(tmp_path / f"multi_{split}.h5", split=split, coils=4, seed=9, **SHAPE)
        result = reconstruct(irim_run, source, tmp_path / f"multi_{split}_recon.h5", progress=False)
        with h5py.File(tmp_path / f"multi_{split}_recon.h5", "r") as hf:
            recon = hf["reconstruction"][()]
        assert recon.shape == (2, 32, 32) and np.all(np.isfinite(recon))
        assert result["mask_source"] == ("retrospective" if split == "val" else "file")
        assert ("metrics" in result) == (split == "val")  # scored against reconstruction_rss
        if split == "val":  # the SENSE-combined zero-filled image is close to the rss target, as single-coil
            assert 10 < result["metrics"]["adjoint"]["psnr"] < 40
