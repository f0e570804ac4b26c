"""Shipped models: export a run, list, load, reconstruct with --pretrained, clear errors for
missing or corrupt files; and every model that ships really reconstructs."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.io import imsave

from learn2invert import pretrained
from learn2invert.cli import main
from learn2invert.train import loop
from learn2invert.inference import load_solver

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
TINY = (
    "data.train_length=16", "data.val_length=4", "data.patch_size=8", "train.batch_size=8", "train.max_steps=4",
    "train.val_every=2", "solver.params.steps=2", "solver.params.conv_channels=4", "solver.params.hidden_channels=4",
    "operator.name=denoising", "operator.params={}", "operator.noise_sigma=0.1",
)


@pytest.fixture()
def shipped(tmp_path, monkeypatch):
    """A tiny denoising run exported as shipped model 'tiny' into a temporary package folder."""
    loop.train(SMOKE, tmp_path / "run", overrides=TINY, show_progress=False)
    root = tmp_path / "pretrained"
    info = {"task": "grey denoising (test)", "solver": "rim", "command": "l2i train configs/smoke.yaml",
            "metrics": {"test": {"rim": {"psnr": 20.0, "ssim": 0.5}}}}
    pretrained.export(tmp_path / "run", "tiny", info, destination=root)
    monkeypatch.setattr(pretrained.shipped, "ROOT", root)
    return tmp_path / "run", root / "tiny"


def test_export_list_and_load_give_the_runs_best_weights(shipped, capsys):
    run, folder = shipped
    assert pretrained.available() == ["tiny"]
    card = pretrained.card("tiny")
    history = json.loads((run / "history.json").read_text())
    assert card["optimiser_steps"] == 4 and card["best_step"] == history[-1]["best_step"]
    assert card["parameters"] == sum(p.numel() for p in load_solver(run)[0].parameters())
    assert "l2i train configs/smoke.yaml" in (folder / "README.md").read_text()
    solver = pretrained.load("tiny")
    reference = load_solver(run, weights="best")[0]
    for key, value in reference.state_dict().items():
        assert torch.equal(solver.state_dict()[key], value), key
    assert main(["pretrained", "list"]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "test: rim 20.00 dB" in out


def test_export_of_the_last_weights(shipped, tmp_path, capsys):
    run, _ = shipped
    folder = pretrained.export(run, "tiny_last", {"task": "t", "command": "c", "metrics": {}}, destination=tmp_path / "p",
                               weights="last")
    card = json.loads((folder / "card.json").read_text())
    assert card["weights"] == "last" and "shipped weights: the last step" in (folder / "README.md").read_text()
    pretrained.export(run, "a_much_longer_model_name", {"task": "t", "command": "c", "metrics": {}},
                      destination=pretrained.shipped.ROOT)
    assert main(["pretrained", "list"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.split(" ")[0] in ("name", "tiny")]
    assert rows[0].index("solver") == rows[1].index("rim") == len("a_much_longer_model_name") + 1  # columns align
    solver = load_solver(folder, weights="best")[0]  # a shipped folder's model.safetensors is what it ships
    for key, value in load_solver(run, weights="last")[0].state_dict().items():
        assert torch.equal(solver.state_dict()[key], value), key


def test_reconstruct_with_a_shipped_model(shipped, tmp_path, capsys):
    noisy = tmp_path / "noisy.png"
    imsave(noisy, (np.random.default_rng(0).random((12, 12)) * 255).astype(np.uint8))
    assert main(["reconstruct", "--pretrained", "tiny", str(noisy), str(tmp_path / "out.png")]) == 0
    assert (tmp_path / "out.png").is_file()
    assert main(["reconstruct", "--pretrained", "tiny", "run", str(noisy), str(tmp_path / "o.png")]) == 2
    assert "INPUT and OUTPUT only" in capsys.readouterr().err


def test_eval_of_a_shipped_model_writes_only_where_told(shipped, tmp_path, capsys):
    _, folder = shipped
    before = sorted(p.name for p in folder.iterdir())
    assert main(["eval", str(folder), "--samples", "2"]) == 2
    assert "shipped model inside the installed package" in capsys.readouterr().err
    assert sorted(p.name for p in folder.iterdir()) == before  # nothing written into the package
    assert main(["eval", str(folder), "--samples", "2", "--out", str(tmp_path / "scores.json")]) == 0
    assert (tmp_path / "scores.json").is_file()


def test_unknown_missing_and_corrupt_models_name_the_file(shipped):
    _, folder = shipped
    with pytest.raises(pretrained.PretrainedError, match="available: tiny"):
        pretrained.load("nope")
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(pretrained.PretrainedError, match="corrupt.*model.safetensors"):
        pretrained.load("tiny")
    weights.unlink()
    with pytest.raises(pretrained.PretrainedError, match="model.safetensors is missing"):
        pretrained.load("tiny")


@pytest.mark.parametrize("name", pretrained.available())
def test_every_shipped_model_beats_its_adjoint_on_a_test_slice(name):
    pytest.importorskip("nilearn")
    from learn2invert.train.datasets import build_dataset
    from learn2invert.operators.generator import Measurement
    from learn2invert.train.validate import score_batch

    solver, config = pretrained.load_with_config(name)
    config["operator"]["acceleration"] = 4.0
    x = build_dataset(config, "test")[0][None]
    y, op, sigma = Measurement(config, tuple(x.shape[1:]))(x, torch.Generator().manual_seed(0))
    with torch.no_grad():
        estimate = solver(y, op, sigma=sigma)[-1]
    assert score_batch(estimate, x)["psnr"] > score_batch(op.A_adjoint(y), x)["psnr"] + 2.0


@pytest.mark.parametrize("name", pretrained.available())
def test_every_shipped_model_loads_with_the_parameter_names_of_its_file(name):
    """The solver classes keep the state-dict keys the shipped weights were saved with: a
    refactoring that renames, adds or drops a parameter or buffer fails here, not for a user."""
    from safetensors import safe_open

    with safe_open(str(pretrained.path(name) / "model.safetensors"), "pt") as file:
        saved = set(file.keys())
    assert set(pretrained.load(name).state_dict().keys()) == saved


def test_export_from_the_command_line_reads_compare_results(tmp_path, monkeypatch, capsys):
    loop.train(SMOKE, tmp_path / "run", overrides=TINY, show_progress=False)
    compare = {"methods": {m: {k: {"mean": v, "std": 0.0} for k, v in (("psnr", p), ("ssim", 0.5), ("nmse", 0.1))}
                           for m, p in (("adjoint", 18.0), ("tv", 21.0), ("rim", 22.5))}, "tv_weight": 0.01}
    (tmp_path / "cmp.json").write_text(json.dumps(compare))
    monkeypatch.setattr(pretrained.shipped, "ROOT", tmp_path / "shipped")
    assert main(["pretrained", "export", str(tmp_path / "run"), "tiny", "--method", "rim", "--metrics",
                 f"test={tmp_path / 'cmp.json'}", "--task", "denoising", "--command", "l2i train smoke.yaml"]) == 0
    card = json.loads((tmp_path / "shipped" / "tiny" / "card.json").read_text())
    assert card["metrics"]["test"]["rim"]["psnr"] == 22.5 and card["tv_weights"] == {"test": 0.01}
    assert card["solver"] == "rim" and card["operator"] == "denoising" and card["optimiser_steps"] == 4
    assert main(["pretrained", "export", str(tmp_path / "run"), "tiny", "--method", "irim", "--metrics",
                 f"test={tmp_path / 'cmp.json'}"]) == 2
    assert "no results for 'irim'" in capsys.readouterr().err
