"""``l2i bench compare`` and i-RIM training through the engine: two tiny MRI runs against zero-filled and TV."""
import json
from pathlib import Path

import pytest

from learn2invert.cli import main
from learn2invert.train import loop

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL = ("data.patch_size=16", "data.params.scale=0.0875", "data.val_length=4", "train.epochs=1", "train.batch_size=8")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    irim = tmp_path_factory.mktemp("irim")
    loop.train(CONFIGS / "mri_irim_4x.yaml", irim, show_progress=False, overrides=SMALL + (
        "solver.params.steps=2", "solver.params.state_channels=8", "solver.params.hidden_channels=8",
        "solver.params.downsampling=[1,2]"))
    rim = tmp_path_factory.mktemp("rim")
    loop.train(CONFIGS / "mri_rim_4x.yaml", rim, show_progress=False, overrides=SMALL + (
        "solver.params.steps=2", "solver.params.conv_channels=4", "solver.params.hidden_channels=4"))
    return {"irim": irim, "rim": rim}


def test_irim_config_trains_and_loss_falls(runs):
    history = json.loads((runs["irim"] / "history.json").read_text())
    assert len(history) == 1 and history[0]["train_loss"] < 1.0  # NMSE of the zero start is 1


def test_compare_scores_every_method_on_the_same_data(runs, tmp_path, capsys):
    out = tmp_path / "mri"
    assert main(["bench", "compare", f"irim={runs['irim']}", f"rim={runs['rim']}", "--out", str(out), "--samples", "4",
                 "--tv-iterations", "30", "--tv-grid", "0.001", "0.01", "0.1"]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert list(result["methods"]) == ["zero-filled", "tv", "irim", "rim"]
    assert result["samples"] == 4 and result["tv_weight"] in (0.001, 0.01, 0.1)
    methods = result["methods"]
    assert methods["tv"]["psnr"]["mean"] > methods["zero-filled"]["psnr"]["mean"]  # TV helps at 4x
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| tv |" in out.with_suffix(".md").read_text()
    assert "chosen on the validation split" in capsys.readouterr().out


def test_compare_refuses_runs_of_different_problems(runs, tmp_path, capsys):
    other = tmp_path / "other"
    loop.train(CONFIGS / "smoke.yaml", other, show_progress=False, overrides=(
        "data.train_length=8", "data.val_length=4", "data.patch_size=8", "train.batch_size=8", "solver.params.steps=1",
        "solver.params.conv_channels=4", "solver.params.hidden_channels=4", "train.epochs=1"))
    assert main(["bench", "compare", f"a={runs['rim']}", f"b={other}", "--out", str(tmp_path / "x")]) == 2
    assert "differ in their 'data' config" in capsys.readouterr().err


def test_compare_scores_out_of_distribution_with_set_overrides(runs, tmp_path):
    out = tmp_path / "ood"
    base = ["bench", "compare", f"rim={runs['rim']}", "--samples", "4", "--no-tv"]
    assert main(base + ["--out", str(tmp_path / "in")]) == 0
    assert main(base + ["--out", str(out), "--set", "operator.noise_sigma=0.05", "--set", "operator.acceleration=8"]) == 0
    inside = json.loads((tmp_path / "in.json").read_text())
    outside = json.loads(out.with_suffix(".json").read_text())
    assert outside["operator"]["noise_sigma"] == 0.05 and outside["operator"]["acceleration"] == 8
    # Ten times the noise and half the samples: the zero-filled input gets worse.
    assert outside["methods"]["zero-filled"]["psnr"]["mean"] < inside["methods"]["zero-filled"]["psnr"]["mean"] - 1
    assert main(base + ["--out", str(out), "--set", "solver.name=unet"]) == 2


def test_example_figure_shows_rgb_and_grey_images(tmp_path):
    import torch

    from learn2invert.bench.compare import plot_example

    for channels in (1, 2, 3):
        example = {"truth": torch.rand(channels, 8, 8), "adjoint": torch.rand(channels, 8, 8)}
        result = {"example": example, "methods": {"adjoint": {"psnr": {"mean": 10.0}}}}
        plot_example(result, tmp_path / f"c{channels}.png")
        assert (tmp_path / f"c{channels}.png").stat().st_size > 0


def test_real_dicom_scan_is_scored_with_the_tv_weight_of_the_validation_slices(runs, tmp_path):
    pytest.importorskip("pydicom")
    out = tmp_path / "real"
    common = ["bench", "compare", f"rim={runs['rim']}", "--samples", "3", "--tv-iterations", "20",
              "--tv-grid", "0.001", "0.01"]
    assert main(common + ["--out", str(tmp_path / "val")]) == 0
    assert main(common + ["--out", str(out), "--test-set", "data.name=dicom", "--test-set", "data.root=pydicom:MR_small.dcm",
                          "--test-set", "data.params={repeats: 3}", "--test-set", "data.patch_size=64"]) == 0
    real = json.loads(out.with_suffix(".json").read_text())
    assert real["data"]["name"] == "dicom" and real["samples"] == 3
    # The weight comes from the (unchanged) validation slices, so both runs choose the same one.
    assert real["tv_weight"] == json.loads((tmp_path / "val.json").read_text())["tv_weight"]


def test_compare_ignores_training_only_data_keys():
    from learn2invert.bench.compare import _check_same_problem

    def config(**params):
        return {"data": {"name": "brain_mix", "train_length": 64, "params": params}, "operator": {"name": "mri"}}

    parent, tuned = config(scale=0.35), config(scale=0.35, scale_range=[0.8, 3.0])
    tuned["data"]["train_length"] = 4096
    assert _check_same_problem({"parent": parent, "tuned": tuned}) is parent  # augmentation is training-only
    with pytest.raises(ValueError, match="differ in their 'data' config"):
        _check_same_problem({"parent": parent, "other": config(scale=0.5)})  # the base scale changes the test slices


def test_compare_scores_the_last_weights_when_asked(runs, tmp_path, monkeypatch):
    import learn2invert.bench.compare as compare_module

    asked = []
    original = compare_module.load_solver
    monkeypatch.setattr(compare_module, "load_solver", lambda run, weights="best": asked.append(weights) or
                        original(run, weights=weights))
    base = ["bench", "compare", f"rim={runs['rim']}", "--samples", "2", "--no-tv"]
    assert main(base + ["--out", str(tmp_path / "last"), "--weights", "last"]) == 0
    assert main(base + ["--out", str(tmp_path / "best")]) == 0
    assert asked == ["last", "best"]


def test_compare_scores_a_self_ensemble_under_its_own_name(runs, tmp_path):
    out = tmp_path / "x2"
    assert main(["bench", "compare", f"irim={runs['irim']}", "--samples", "2", "--no-tv", "--ensemble", "2",
                 "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert list(result["methods"]) == ["zero-filled", "irim x2"] and result["ensemble"] == 2
    assert "| irim x2 |" in out.with_suffix(".md").read_text()
