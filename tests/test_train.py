"""The training engine: configs, a tiny real run, checkpoints, resume, divergence, evaluation, CLI."""
import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learn2invert.cli import main
from learn2invert.solvers.rim import RIM
from learn2invert.train import loop
from learn2invert.checkpoint import load_model, save_model
from learn2invert.train.config import ConfigError, load_config
from learn2invert.inference.evaluate import evaluate_run

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
TINY = (
    "data.train_length=16", "data.val_length=4", "data.patch_size=8", "train.batch_size=8",
    "solver.params.steps=2", "solver.params.conv_channels=4", "solver.params.hidden_channels=4",
)


def test_config_defaults_overrides_and_errors(tmp_path):
    config = load_config(SMOKE, ["train.epochs=5", "operator.noise_sigma=[0.1, 0.2]", "solver.params.steps=3"])
    assert config["train"]["epochs"] == 5
    assert config["operator"]["noise_sigma"] == [0.1, 0.2]
    assert config["solver"]["params"]["steps"] == 3 and config["solver"]["params"]["hidden_channels"] == 16
    assert config["train"]["optimizer"]["name"] == "adam"
    with pytest.raises(ConfigError, match="'train.epoch'"):
        load_config(SMOKE, ["train.epoch=5"])
    with pytest.raises(ConfigError, match="'train.batch_size' must be an integer"):
        load_config(SMOKE, ["train.batch_size=2.5"])
    with pytest.raises(ConfigError, match="'data.grey' must be true or false"):
        load_config(SMOKE, ["data.grey=3"])
    with pytest.raises(ConfigError, match="low <= high"):
        load_config(SMOKE, ["operator.noise_sigma=[0.3, 0.1]"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)


def test_bad_constructor_arguments_name_the_config_key(tmp_path):
    with pytest.raises(ConfigError, match="solver.params"):
        loop.train(SMOKE, tmp_path / "a", overrides=TINY + ("solver.params.no_such_arg=1",), show_progress=False)
    with pytest.raises(ConfigError, match="operator.name"):
        loop.train(SMOKE, tmp_path / "b", overrides=TINY + ("operator.name=teleport",), show_progress=False)


def test_train_writes_checkpoints_and_resume_matches_uninterrupted(tmp_path):
    full = loop.train(SMOKE, tmp_path / "full", overrides=TINY + ("train.epochs=2",), show_progress=False)
    assert [e["epoch"] for e in full["epochs"]] == [1, 2]
    assert all(torch.isfinite(torch.tensor(e["train_loss"])) for e in full["epochs"])
    for name in ("config.yaml", "model.safetensors", "train_state.safetensors", "history.json"):
        assert (tmp_path / "full" / name).is_file()
    assert list((tmp_path / "full" / "tensorboard").iterdir())
    # Stop after one epoch (as a killed run would), then resume to two.
    loop.train(SMOKE, tmp_path / "cut", overrides=TINY + ("train.epochs=1",), show_progress=False)
    resumed = loop.train(None, tmp_path / "cut", overrides=("train.epochs=2",), resume=True, show_progress=False)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    with pytest.raises(ValueError, match="already holds a run"):
        loop.train(SMOKE, tmp_path / "full", overrides=TINY, show_progress=False)


def test_save_load_gives_identical_outputs_and_rejects_corrupt_files(tmp_path):
    torch.manual_seed(3)
    model = RIM(channels=1, steps=2, conv_channels=4, hidden_channels=4, norm="none", output_init="random")
    save_model(model, tmp_path)
    other = RIM(channels=1, steps=2, conv_channels=4, hidden_channels=4, norm="none", output_init="random")
    load_model(other, tmp_path)
    from learn2invert.operators import Denoising

    y = torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(y, Denoising(), sigma=0.1)[-1], other(y, Denoising(), sigma=0.1)[-1])
    (tmp_path / "model.safetensors").write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="model.safetensors"):
        load_model(other, tmp_path)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    calls = {"n": 0}
    real = loop.iterate_loss

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] > 2 else loss  # epoch 1 has 2 batches

    monkeypatch.setattr(loop, "iterate_loss", poisoned)
    with pytest.raises(loop.TrainingDiverged, match="epoch 2, batch 1"):
        loop.train(SMOKE, tmp_path, overrides=TINY + ("train.epochs=3",), show_progress=False)
    history = json.loads((tmp_path / "history.json").read_text())
    assert [e["epoch"] for e in history] == [1]
    assert (tmp_path / "model.safetensors").is_file()


def test_eval_writes_json_table_and_curve(tmp_path):
    loop.train(SMOKE, tmp_path, overrides=TINY, show_progress=False)
    result = evaluate_run(tmp_path, steps=4, length=4)
    saved = json.loads((tmp_path / "eval.json").read_text())
    for key in ("psnr", "ssim", "nmse"):
        assert set(saved[key]) >= {"mean", "std"}
        assert len(saved[key]["per_sample"]) == 4
    assert len(result["per_iterate"]["psnr"]) == 4
    assert (tmp_path / "eval.md").read_text().count("|") > 10
    assert (tmp_path / "eval_grid.png").stat().st_size > 1000
    assert (tmp_path / "eval_psnr.png").stat().st_size > 1000


def test_cli_reports_config_errors_without_traceback(tmp_path, capsys):
    code = main(["train", str(SMOKE), "--out", str(tmp_path), "--set", "train.bogus=1"])
    assert code == 2
    assert "train.bogus" in capsys.readouterr().err


def test_ct_run_on_ellipses_trains_one_epoch(tmp_path):
    result = loop.train(SMOKE, tmp_path, overrides=TINY + (
        "data.name=ellipses", "data.patch_size=16", "operator.name=ct", "operator.params={n_angles: 8}",
        "operator.noise_sigma=0.1", "solver.params.init=adjoint"), show_progress=False)
    assert result["epochs"][0]["epoch"] == 1
    assert torch.isfinite(torch.tensor(result["epochs"][0]["val_psnr"]))


def test_time_limit_stops_after_validating_and_saving(tmp_path):
    result = loop.train(SMOKE, tmp_path, overrides=TINY + ("train.epochs=3", "train.time_limit_minutes=1e-6"),
                        show_progress=False)
    (record,) = result["epochs"]  # the budget ran out in the first batch: one shortened epoch
    assert record["stopped_early"] and record["global_step"] == 1
    assert (tmp_path / "model.safetensors").is_file() and "val_psnr" in record


# ------------------------------------------------------------------------ precision and compile

IRIM_DENOISE = TINY + (
    "operator.name=denoising", "operator.params={}", "operator.noise_sigma=0.1", "solver.name=irim",
    "solver.params={steps: 2, state_channels: 4, hidden_channels: 8, downsampling: [1, 2], init: adjoint}",
)


def test_smoke_config_trains_in_bf16_on_cpu(tmp_path):
    """A few autocast-bf16 steps of the smoke config: finite losses that fall."""
    result = loop.train(SMOKE, tmp_path, overrides=("train.precision=bf16", "train.epochs=3", "data.train_length=64",
                                                    "data.val_length=4"), show_progress=False)
    losses = [e["train_loss"] for e in result["epochs"]]  # 4 steps per epoch
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < 0.7 * losses[0], losses
    weights = load_file(str(tmp_path / "model.safetensors"))
    assert all(w.dtype == torch.float32 for w in weights.values())  # autocast: the weights stay float32


def test_fp16_saves_and_restores_the_gradient_scaler(tmp_path):
    from learn2invert.checkpoint import read_train_state

    loop.train(SMOKE, tmp_path, overrides=IRIM_DENOISE + ("train.precision=fp16",), show_progress=False)
    scaler = read_train_state(tmp_path / "train_state.safetensors")["scaler"]
    assert scaler is not None and scaler["scale"] > 0
    resumed = loop.train(None, tmp_path, overrides=("train.epochs=2",), resume=True, show_progress=False)
    assert all(torch.isfinite(torch.tensor(e["train_loss"])) for e in resumed["epochs"])
    assert read_train_state(tmp_path / "train_state.safetensors")["scaler"]["scale"] > 0


def test_unknown_precision_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'train.precision' must be one of fp32, bf16, fp16"):
        loop.train(SMOKE, tmp_path, overrides=TINY + ("train.precision=fp8",), show_progress=False)


def test_compile_falls_back_to_eager_with_a_warning(tmp_path, monkeypatch):
    def broken_compile(module, *args, **kwargs):
        def call(*a, **k):
            raise RuntimeError("no C++ compiler found")  # what a failing backend looks like at the first call
        return call

    loop.train(SMOKE, tmp_path / "eager", overrides=TINY, show_progress=False)
    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(RuntimeWarning, match="train.compile.*no C\\+\\+ compiler.*without compiling"):
        loop.train(SMOKE, tmp_path / "compiled", overrides=TINY + ("train.compile=true",), show_progress=False)
    a, b = load_file(str(tmp_path / "eager" / "model.safetensors")), load_file(str(tmp_path / "compiled" / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)  # the fallback trains the very same model


def test_compile_really_compiles_the_mri_rim_and_matches_eager():
    """Not the fallback: inductor compiles a tiny MRI RIM (replicate padding, whose backward broke
    inductor's channels-last layout) and its outputs and gradients equal eager's to float32 rounding."""
    from learn2invert import operators
    from learn2invert.solvers.rim import RIM
    from learn2invert.train.precision import CompiledOrEager

    torch.manual_seed(0)
    mask = operators.masks.random_mask((8,), 2.0, 0.25, seed=0).float().reshape(1, 1, 1, 8)
    op = operators.SingleCoilMRI(mask)
    y = op.A(torch.randn(2, 2, 8, 8))
    model = RIM(2, architecture="mri", steps=1, conv_channels=4, hidden_channels=4, output_init="random")
    torch._dynamo.reset()
    compiled = CompiledOrEager(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback would warn
        out = compiled(y, op, sigma=0.1)[-1]
        out.square().mean().backward()
    assert compiled.active and torch._dynamo.utils.counters["stats"]["unique_graphs"] >= 1
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    reference = model(y, op, sigma=0.1)[-1]
    reference.square().mean().backward()
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-6)
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


def test_flow_prior_config_goes_to_likelihood_training_and_resumes(tmp_path):
    """loss.name=bits_per_dim dispatches to train/density.py; its checkpoints resume through this loop."""
    flow = Path(__file__).resolve().parents[1] / "projects" / "flow_unfolding2021" / "configs" / "flow_prior.yaml"
    tiny = ("data.train_length=16", "data.val_length=4", "data.patch_size=8", "train.batch_size=8", "train.epochs=1",
            "solver.params={image_size: 8, levels: 1, depth: 1, hidden: 4, memory: invertible}")
    first = loop.train(flow, tmp_path, overrides=tiny, show_progress=False)
    assert torch.isfinite(torch.tensor(first["epochs"][0]["val_bits_per_dim"]))
    resumed = loop.train(None, tmp_path, overrides=("train.epochs=2",), resume=True, show_progress=False)
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2]


def test_precision_bench_times_fp32_and_bf16_steps(tmp_path):
    from learn2invert.bench import precision_speed

    out = tmp_path / "p.json"
    assert precision_speed.main([str(SMOKE), "--steps", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert set(result["step_ms"]) == {"fp32", "bf16"} and all(v["median"] > 0 for v in result["step_ms"].values())
    assert "| bf16 |" in out.with_suffix(".md").read_text()


def test_psnr_loss_is_minus_the_mean_per_image_psnr_up_to_a_constant():
    from learn2invert.metrics import psnr
    from learn2invert.train.losses import psnr_loss

    torch.manual_seed(0)
    target = torch.rand(3, 1, 8, 8)
    # a flat-ish error on one image and a large one on another: the MSE loss would follow the large one
    estimate = target + torch.tensor([0.01, 0.2, 0.05]).view(3, 1, 1, 1) * torch.randn(3, 1, 8, 8)
    per_image = psnr(estimate, target, data_range=1.0, reduction="none")
    assert torch.allclose(psnr_loss(estimate, target), -per_image.mean(), atol=1e-4)
    estimate.requires_grad_(True)
    psnr_loss(estimate, target).backward()
    # each image's gradient is scaled by 1/its MSE: the nearly right image gets the largest pull
    norms = estimate.grad.flatten(1).norm(dim=1)
    assert norms[0] > norms[2] > norms[1]
