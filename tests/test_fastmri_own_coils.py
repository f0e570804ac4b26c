"""``data.params.own_coils``: training on multi-coil fastMRI files' own coil k-space, undersampled
retrospectively, with coil maps estimated from what was measured (no simulated coils)."""
import json
from pathlib import Path

import h5py
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

from learn2invert import metrics
from learn2invert.bench.compare import compare
from learn2invert.data import FastMRIImages, FastMRISingleCoil
from learn2invert.data.fastmri import center_crop
from learn2invert.data.fastmri_synthetic import write_synthetic_fastmri, write_synthetic_fastmri_dataset
from learn2invert.inference.evaluate import evaluate_run
from learn2invert.inference.reconstruct import Run, fastmri_measurements, reconstruct_fastmri, simulate_image
from learn2invert.operators import MultiCoilMRI
from learn2invert.operators.generator import Measurement, measure
from learn2invert.operators.multicoil import calibration_region, estimate_sensitivities
from learn2invert.train import loop
from learn2invert.train.config import ConfigError, load_config
from learn2invert.train.datasets import build_dataset
from learn2invert.train.experiment import build_solver

SHAPE = dict(slices=2, kspace_shape=(64, 32), recon_size=(32, 32))
CONFIG = Path(__file__).resolve().parents[1] / "configs" / "fastmri" / "knee_multicoil_irim_4x.yaml"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fastmri_multicoil")
    write_synthetic_fastmri_dataset(root, coils=4, files={"train": 2, "val": 1}, **SHAPE)
    write_synthetic_fastmri_dataset(root, coils=0, files={"train": 1}, **SHAPE)  # knee_singlecoil_train
    return root


def _measurement(*overrides: str) -> Measurement:
    config = load_config(None, ["operator.name=mri", "operator.noise_sigma=0.0", "data.name=fastmri",
                                "data.params={own_coils: true}", *overrides])
    return Measurement(config, (2, 32, 32))


def _full_adjoint(kspace: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """``A^T`` of fully sampled coil k-space ``(B, 2, C, h, w)`` with maps ``(B, 2, C, h, w)``."""
    return MultiCoilMRI(torch.ones(kspace.shape[-2:], dtype=torch.bool), maps).A_adjoint(kspace)


def test_items_carry_the_coil_kspace_of_the_truth(data_root):
    folder = data_root / "knee_multicoil_train"
    own = FastMRIImages(folder, own_coils=True)
    assert len(own) == 4 and own.coils == 4
    with h5py.File(own.files[0], "r") as hf:
        rss = torch.from_numpy(hf["reconstruction_rss"][()]) / hf.attrs["max"]
    for index in (0, 1):
        item, full = own[index], own.coil_item(index)
        assert set(item) == {"image", "kspace"} and item["kspace"].shape == (2, 4, 32, 32)
        assert item["kspace"].dtype == item["image"].dtype == torch.float32
        assert torch.equal(item["image"], full["image"]) and torch.equal(item["kspace"], full["kspace"])
        # Fully sampled, the SENSE adjoint with the item's maps gives the truth back ...
        torch.testing.assert_close(_full_adjoint(full["kspace"][None], full["maps"][None])[0], item["image"],
                                   atol=2e-6, rtol=0)
        # ... whose magnitude is the file's RSS target over max, up to the low-resolution maps.
        error = float((item["image"].norm(dim=0) - rss[index]).norm() / rss[index].norm())
        assert error < 0.1, error
        # Real coil data, not one image times smooth maps: the coils differ.
        assert not torch.allclose(item["kspace"][:, 0], item["kspace"][:, 1])


def test_the_solver_gets_maps_from_the_measured_centre_that_reach_the_truth(data_root):
    own = FastMRIImages(data_root / "knee_multicoil_train", own_coils=True)
    full = own.coil_item(2)
    x, k = full["image"][None], full["kspace"][None]
    measurement = _measurement("operator.acceleration=4.0", "operator.center_fraction=0.08")
    sampled = []
    for seed in range(4):
        y, op, sigma = measurement(x, torch.Generator().manual_seed(seed), kspace=k)
        assert isinstance(op, MultiCoilMRI) and y.shape == (1, 2, 4, 32, 32) and op.mask.shape == (1, 1, 32, 32)
        mask = op.mask[:, None]  # (1, 1, 1, h, w): all coils share it
        sampled.append(float(op.mask.float().mean()))
        assert torch.equal(y, torch.where(mask, k, torch.zeros_like(k)))  # exactly the sampled k-space
        assert float(sigma.max()) == pytest.approx(1e-3)  # no added noise; the solver's floor
        # The maps are estimated from the measured centre columns: the truth's maps, so the
        # operator the solver gets returns the truth from fully sampled data.
        torch.testing.assert_close(op.sensitivities, estimate_sensitivities(y, acs=3), atol=0, rtol=0)
        torch.testing.assert_close(op.sensitivities[0], full["maps"], atol=1e-6, rtol=0)
        torch.testing.assert_close(_full_adjoint(k, op.sensitivities), x, atol=2e-6, rtol=0)
        # k-space the mask left out changes neither y nor the maps.
        changed = torch.where(mask, k, torch.randn(k.shape, generator=torch.Generator().manual_seed(9)))
        y2, op2, _ = measurement(x, torch.Generator().manual_seed(seed), kspace=changed)
        assert torch.equal(y2, y) and torch.equal(op2.sensitivities, op.sensitivities)
    assert 0.15 < sum(sampled) / len(sampled) < 0.4 and len(set(sampled)) > 1  # 4x masks, a new one per draw
    # A mask whose random columns widen its calibration region still gives the truth's maps (the
    # fixed centre block), not maps of its own wider region.
    def region(seed):
        mask = measurement._batched_operator(1, torch.Generator().manual_seed(seed)).mask  # the first draw of a call
        cols = calibration_region(mask, (1, 1, 32, 32))[1]
        return cols.stop - cols.start
    seed = next(seed for seed in range(1000) if region(seed) > 3)
    y, op, _ = measurement(x, torch.Generator().manual_seed(seed), kspace=k)
    torch.testing.assert_close(op.sensitivities[0], full["maps"], atol=1e-6, rtol=0)
    assert not torch.allclose(estimate_sensitivities(y, op.mask), op.sensitivities, atol=1e-3)
    # Maps from another block (here the whole k-space) would not give the truth back.
    other = estimate_sensitivities(k, acs=(32, 32))
    assert float((_full_adjoint(k, other) - x).norm() / x.norm()) > 1e-2
    # A mask that does not sample the maps' block is refused, naming the keys.
    narrow = _measurement("operator.acceleration=8.0", "operator.center_fraction=0.04")
    with pytest.raises(ValueError, match=r"data\.params\.acs_fraction.*operator\.center_fraction"):
        narrow(x, torch.Generator().manual_seed(0), kspace=k)


def test_extra_noise_falls_on_the_sampled_kspace_only_and_samples_measure_alone(data_root):
    own = FastMRIImages(data_root / "knee_multicoil_train", own_coils=True)
    batch = next(iter(DataLoader(own, batch_size=3)))
    x, k = batch["image"], batch["kspace"]
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    y, op, sigma = measure(_measurement("operator.noise_sigma=0.05"), x, generators, kspace=k)
    assert isinstance(op, MultiCoilMRI) and op.sensitivities.shape == (3, 2, 4, 32, 32) and sigma.shape == (3, 1, 1, 1)
    mask = op.mask[:, None].expand_as(y)
    assert bool((y[~mask] == 0).all())
    assert 0.04 < float((y - k)[mask].std()) < 0.06
    # Each sample's measurement is the one it gets alone from its own generator.
    alone = _measurement("operator.noise_sigma=0.05")(x[1:2], torch.Generator().manual_seed(1), kspace=k[1:2])
    assert torch.equal(alone[0], y[1:2]) and torch.equal(alone[1].sensitivities, op.sensitivities[1:2])


def test_files_with_fewer_coils_are_padded_with_zero_coils(tmp_path):
    folder = tmp_path / "multicoil_train"
    write_synthetic_fastmri(folder / "file_a.h5", coils=4, seed=1, **SHAPE)
    write_synthetic_fastmri(folder / "file_b.h5", coils=3, seed=2, **SHAPE)
    own = FastMRIImages(folder, own_coils=True)
    assert own.coils == 4
    padded = own.coil_item(3)  # a slice of the 3-coil file
    assert padded["kspace"].shape == (2, 4, 32, 32) and bool((padded["kspace"][:, 3] == 0).all())
    torch.testing.assert_close(_full_adjoint(padded["kspace"][None], padded["maps"][None])[0], padded["image"],
                               atol=2e-6, rtol=0)
    y, op, _ = _measurement()(padded["image"][None], torch.Generator().manual_seed(0), kspace=padded["kspace"][None])
    assert bool((op.sensitivities[:, :, 3] == 0).all())  # a coil that measured nothing gets no map
    batch = next(iter(DataLoader(own, batch_size=4)))  # slices of both files batch together
    assert batch["kspace"].shape == (4, 2, 4, 32, 32)


def _own_coils_config_file(data_root: Path, tmp_path: Path, **sections) -> Path:
    config = {
        "seed": 0,
        "data": {"name": "fastmri", "root": str(data_root / "knee_multicoil_{split}"), "val_length": 2,
                 "params": {"own_coils": True}},
        "operator": {"name": "mri", "acceleration": 4.0, "center_fraction": 0.08, "noise_sigma": 0.0},
        "solver": {"name": "irim", "params": {"steps": 2, "state_channels": 8, "hidden_channels": 8,
                                              "downsampling": [1, 2]}},
        "train": {"batch_size": 2},
        **sections,
    }
    path = tmp_path / "own_coils.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_an_own_coils_config_trains_evaluates_and_compares(data_root, tmp_path):
    path = _own_coils_config_file(
        data_root, tmp_path, loss={"name": "nmse", "weights": "last"},
        train={"max_steps": 2, "val_every": 2, "batch_size": 2, "optimizer": {"name": "adam", "lr": 0.01}})
    run = tmp_path / "run"
    loop.train(path, run, show_progress=False)
    history = json.loads((run / "history.json").read_text())
    assert history[-1]["global_step"] == 2 and all(torch.isfinite(torch.tensor(r["val_loss"])) for r in history)
    result = evaluate_run(run, split="val")
    assert result["samples"] == 2 and result["per_volume"]["volumes"] == 1
    # The zero-filled SENSE reconstruction of the real coil data scores sensibly (not the 0 dB of a mismatch).
    assert 15 < result["adjoint"]["psnr"]["mean"] < 60 and (run / "eval_grid.png").is_file()
    compared = compare({"own": run}, split="val", tv=False, show_progress=False)
    assert compared["methods"]["zero-filled"]["psnr"]["mean"] == pytest.approx(result["adjoint"]["psnr"]["mean"])


def _config(root: Path, *overrides: str) -> dict:
    return load_config(None, ["data.name=fastmri", f"data.root={root}/knee_multicoil_{{split}}", "operator.name=mri",
                              "data.params={own_coils: true}", *overrides])


@pytest.mark.parametrize("overrides, keys", [
    (["operator.params={coils: 4}"], ["data.params.own_coils", "operator.params.coils"]),
    (["operator.params={coils: 4, maps: estimated}"], ["data.params.own_coils", "operator.params.coils"]),
    (["operator.name=denoising"], ["data.params.own_coils", "operator.name: mri"]),
    (["operator.quantize=true"], ["data.params.own_coils", "operator.quantize"]),
    (["operator.name=mixture", "operator.mixture=[{name: mri}, {name: mri, acceleration: 8.0}]"], ["data.params.own_coils", "operator.mixture"]),
])
def test_own_coils_with_another_measurement_names_the_keys(data_root, overrides, keys):
    config = _config(data_root, *overrides)
    with pytest.raises(ConfigError) as err:
        Measurement(config, (2, 32, 32))
    for key in keys:
        assert key in str(err.value)


def test_own_coils_needs_multicoil_files(data_root, tmp_path):
    config = _config(data_root, f"data.root={data_root}/knee_singlecoil_{{split}}")
    with pytest.raises(ConfigError, match=r"data\.params\.own_coils.*single-coil"):
        build_dataset(config, "train")
    with pytest.raises(ConfigError, match=r"data\.params\.own_coils.*data\.params\.coils"):
        build_dataset(_config(data_root, "data.params={own_coils: true, coils: single}"), "train")
    with pytest.raises(ConfigError, match=r"data\.params\.own_coils' must be true or false"):
        build_dataset(_config(data_root, "data.params={own_coils: 'yes please'}"), "train")
    # The same from a config file: training stops before writing anything.
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"data": {"name": "fastmri", "root": str(data_root / "knee_singlecoil_{split}"),
                                             "params": {"own_coils": True}}, "operator": {"name": "mri"}}))
    with pytest.raises(ConfigError, match=r"data\.params\.own_coils"):
        loop.train(path, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()


def test_measurement_and_items_must_agree(data_root):
    own = FastMRIImages(data_root / "knee_multicoil_train", own_coils=True)
    item = own[0]
    with pytest.raises(ValueError, match="own coil k-space, but none was given"):
        _measurement()(item["image"][None], torch.Generator().manual_seed(0))
    plain = Measurement(load_config(None, ["operator.name=mri"]), (2, 32, 32))
    with pytest.raises(ValueError, match="set data.params.own_coils: true"):
        plain(item["image"][None], torch.Generator().manual_seed(0), kspace=item["kspace"][None])


def test_the_shipped_multicoil_config_builds_on_multicoil_files(data_root):
    config = load_config(CONFIG)
    assert config["data"]["root"] == "data/fastmri/knee_multicoil_{split}" and config["data"]["params"]["own_coils"]
    assert config["operator"]["acceleration"] == 4.0 and config["operator"]["params"] == {}
    config = load_config(CONFIG, [f"data.root={data_root}/knee_multicoil_{{split}}"])
    dataset = build_dataset(config, "val")
    item = dataset[0]
    measurement = Measurement(config, tuple(item["image"].shape))
    y, op, _ = measurement(item["image"][None], torch.Generator().manual_seed(0), kspace=item["kspace"][None])
    assert isinstance(op, MultiCoilMRI) and y.shape == (1, 2, 4, 32, 32)


# ------------------------------------------------------------------ l2i reconstruct of an own-coils run

def _own_coils_run(*overrides: str) -> Run:
    """An untrained tiny own-coils run (the zero-filled path needs no training)."""
    config = load_config(None, ["data.name=fastmri", "operator.name=mri", "operator.acceleration=4.0",
                                "operator.center_fraction=0.16", "operator.noise_sigma=0.0", "solver.name=irim",
                                "solver.params={steps: 2, state_channels: 8, hidden_channels: 8, downsampling: [1, 2]}",
                                *overrides])
    torch.manual_seed(0)
    return Run(build_solver(config, (2, 32, 32)).eval(), config, (2, 32, 32), torch.device("cpu"))


@pytest.mark.parametrize("crop", [None, (24, 24)])
def test_reconstruct_measures_a_fully_sampled_file_as_own_coils_training_did(tmp_path, crop):
    # 48 k-space columns cropped to 32 (or 24): the crop changes the columns' grid, so the file's
    # full-width measurement and the training measurement differ.
    path = write_synthetic_fastmri(tmp_path / "multicoil_val" / "file_a.h5", split="val", coils=4, seed=3,
                                   slices=2, kspace_shape=(64, 48), recon_size=(32, 32))
    params = "{own_coils: true, acs_fraction: 0.16" + (f", crop: {list(crop)}" if crop else "") + "}"
    run = _own_coils_run(f"data.params={params}")
    shape = crop or (32, 32)
    items = list(FastMRISingleCoil(path, coils="any"))
    measured, info = fastmri_measurements(run, items, path, seed=5)
    assert info["mask_source"] == "retrospective" and info["field_of_view"] == shape
    # The training measurement of the same slices with the same seed: same mask, same y (in the
    # items' units, the volume's peak), same maps, so the same zero-filled image.
    own = FastMRIImages(path.parent, own_coils=True, crop=crop, acs_fraction=0.16)
    training = Measurement(run.config, (2, *shape))
    peak = own.peak(0)
    adjoints = []
    for index, (y, op) in enumerate(measured):
        item = own.coil_item(index)
        y_t, op_t, _ = training(item["image"][None], torch.Generator().manual_seed(5), kspace=item["kspace"][None])
        assert y.shape == (1, 2, 4, *shape) and torch.equal(op.mask, op_t.mask)
        torch.testing.assert_close(y / peak, y_t, atol=1e-7, rtol=1e-6)
        torch.testing.assert_close(op.sensitivities, op_t.sensitivities, atol=1e-5, rtol=0)
        adjoint = op_t.A_adjoint(y_t)
        torch.testing.assert_close(op.A_adjoint(y) / peak, adjoint, atol=1e-5, rtol=0)
        adjoints.append(adjoint[0].norm(dim=0) * peak)  # (h, w) magnitude in the file's units
    assert 2.5 < info["acceleration"] < 6  # 4x of the crop's columns (a random mask)
    # The whole reconstruction: its zero-filled score is that of the training adjoints, against
    # the file's target cropped to the measured field of view.
    result = reconstruct_fastmri(run, path, tmp_path / "recon.h5", seed=5, progress=False)
    with h5py.File(path, "r") as hf:
        target = torch.from_numpy(hf["reconstruction_rss"][()])
    target = center_crop(target, shape)
    expected = metrics.psnr(torch.stack(adjoints)[None, None], target[None, None], None)
    assert result["metrics"]["adjoint"]["psnr"] == pytest.approx(expected, abs=1e-3)
    assert result["field_of_view"] == shape and "cropped to" in result["notice"]
    with h5py.File(tmp_path / "recon.h5", "r") as hf:
        assert hf["reconstruction"].shape == (2, *shape)
    # A plain run reads the same file on its full field of view, as before.
    plain, plain_info = fastmri_measurements(_own_coils_run(), items, path, seed=5)
    assert plain[0][0].shape == (1, 2, 4, 64, 48) and "field_of_view" not in plain_info


def test_reconstruct_keeps_the_full_field_of_view_for_undersampled_files(tmp_path):
    # A test file's mask is defined on its full width: cropping would not be a measurement of the
    # crop, so an own-coils run reads it exactly as a plain run does.
    path = write_synthetic_fastmri(tmp_path / "multicoil_test" / "file_t.h5", split="test", coils=4, seed=4,
                                   slices=2, kspace_shape=(64, 48), recon_size=(32, 32))
    items = list(FastMRISingleCoil(path, coils="any"))
    own, own_info = fastmri_measurements(_own_coils_run("data.params={own_coils: true}"), items, path)
    plain, plain_info = fastmri_measurements(_own_coils_run(), items, path)
    assert own_info == plain_info == {"mask_source": "file"}
    for (y, op), (y_p, op_p) in zip(own, plain):
        assert y.shape == (1, 2, 4, 64, 48) and torch.equal(y, y_p)
        assert torch.equal(op.mask, op_p.mask) and torch.equal(op.sensitivities, op_p.sensitivities)


def test_reconstruct_simulate_refuses_an_own_coils_run(tmp_path):
    import numpy as np
    from skimage.io import imsave

    image = tmp_path / "image.png"
    imsave(image, (np.arange(32 * 32).reshape(32, 32) % 256).astype(np.uint8), check_contrast=False)
    with pytest.raises(ValueError, match=r"own coil k-space \(data\.params\.own_coils\).*multi-coil fastMRI \.h5"):
        simulate_image(_own_coils_run("data.params={own_coils: true}"), image, tmp_path / "out.png", seed=0)
    assert not (tmp_path / "out.png").exists()


# ------------------------------------------------------------------- benchmarks on an own-coils config

def test_speed_memory_and_precision_benchmarks_measure_an_own_coils_config(data_root, tmp_path):
    from learn2invert.bench import config_memory, precision_speed, speed

    path = _own_coils_config_file(data_root, tmp_path)
    draw, simulate = speed._data_seconds(path, batch=2, repeats=1)
    assert draw > 0 and simulate > 0
    row = config_memory.measure_config({"label": "own", "config": str(path), "overrides": [], "batch": 2})
    assert row["image_shape"] == [2, 32, 32] and row["step_seconds"] > 0
    result = precision_speed.measure(str(path), ["fp32"], steps=1, warmup=0)
    assert result["batch"] == 2 and result["step_ms"]["fp32"]["median"] > 0


def test_a_flow_prior_refuses_own_coils_naming_the_keys(data_root, tmp_path):
    path = _own_coils_config_file(data_root, tmp_path, solver={"name": "flow_density", "params": {}},
                                  loss={"name": "bits_per_dim"})
    with pytest.raises(ConfigError, match=r"data\.params\.own_coils.*loss\.name: bits_per_dim"):
        loop.train(path, tmp_path / "prior", show_progress=False)
    assert not (tmp_path / "prior").exists()
