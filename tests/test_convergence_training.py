"""Training to a step count: max_steps, validation every N steps, early stopping, best weights,
warm-up + cosine schedule, resuming in the middle of an epoch."""
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learn2invert.train import loop
from learn2invert.checkpoint import read_safetensors, read_train_state
from learn2invert.train.experiment import warmup_cosine
from learn2invert.inference import load_solver

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
# 32 samples, batch 4: 8 steps per epoch.
TINY = (
    "data.train_length=32", "data.val_length=4", "data.patch_size=8", "train.batch_size=4",
    "solver.params.steps=2", "solver.params.conv_channels=4", "solver.params.hidden_channels=4",
)


def test_max_steps_and_val_every_validate_on_schedule_across_epochs(tmp_path):
    result = loop.train(SMOKE, tmp_path / "run", overrides=TINY + ("train.max_steps=12", "train.val_every=5"),
                        show_progress=False)
    history = result["epochs"]
    # Validations at steps 5 and 10, and at the last step (12) though it is no multiple of 5.
    assert [r["global_step"] for r in history] == [5, 10, 12]
    assert [r["epoch"] for r in history] == [1, 2, 2]  # step 10 is in the second pass over the data
    assert result["stopped_by"] == "max_steps"
    assert all(math.isfinite(r["val_loss"]) for r in history)
    best = min(history, key=lambda r: r["val_loss"])
    assert result["best_step"] == best["global_step"] == history[-1]["best_step"]
    tensors, metadata = read_safetensors(tmp_path / "run" / loop.BEST_FILE)
    assert int(metadata["global_step"]) == best["global_step"]
    assert float(metadata["val_loss"]) == pytest.approx(best["val_loss"])
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == history


def test_resume_mid_epoch_reaches_the_uninterrupted_weights(tmp_path):
    settings = TINY + ("train.val_every=3", "train.max_steps=11",
                       "train.schedule={name: warmup_cosine, warmup_steps: 2}")
    full = loop.train(SMOKE, tmp_path / "full", overrides=settings, show_progress=False)
    assert [r["global_step"] for r in full["epochs"]] == [3, 6, 9, 11]
    # The safety time cap stops the run after its first step, in the middle of the first epoch;
    # resuming goes on from the second batch with the same schedule.
    cut = loop.train(SMOKE, tmp_path / "cut", overrides=settings + ("train.time_limit_minutes=1e-9",),
                     show_progress=False)
    assert cut["stopped_by"] == "time_limit" and [r["global_step"] for r in cut["epochs"]] == [1]
    resumed = loop.train(None, tmp_path / "cut", overrides=("train.time_limit_minutes=0",), resume=True,
                         show_progress=False)
    assert [r["global_step"] for r in resumed["epochs"]] == [1, 3, 6, 9, 11]
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    for key in a:
        assert torch.allclose(a[key], b[key], rtol=0, atol=1e-6), key


def test_resume_with_a_lower_learning_rate_trains_at_it(tmp_path, capsys):
    # Both the optimiser and the scheduler save the peak rate; the resumed run's config must win,
    # or "resume with a lower train.optimizer.lr" silently trains at the old one.
    settings = TINY + ("train.val_every=2", "train.schedule={name: warmup_cosine, warmup_steps: 2}")
    loop.train(SMOKE, tmp_path / "cut", overrides=settings + ("train.max_steps=4",), show_progress=False)
    capsys.readouterr()
    loop.train(None, tmp_path / "cut", overrides=("train.max_steps=8", "train.optimizer.lr=0.0001"), resume=True)
    assert "resuming at a peak learning rate of 0.0001 (train.optimizer.lr; the run had 0.001)" in capsys.readouterr().out
    loop.train(SMOKE, tmp_path / "low", overrides=settings + ("train.max_steps=8", "train.optimizer.lr=0.0001"),
               show_progress=False)
    resumed = read_train_state(tmp_path / "cut" / "train_state.safetensors")
    fresh = read_train_state(tmp_path / "low" / "train_state.safetensors")
    for a, b in zip(resumed["optimizer"]["param_groups"], fresh["optimizer"]["param_groups"]):
        assert a["initial_lr"] == b["initial_lr"] == pytest.approx(1e-4)
        assert a["lr"] == pytest.approx(b["lr"], rel=1e-12) and a["lr"] < 1e-4
    assert resumed["scheduler"]["base_lrs"] == fresh["scheduler"]["base_lrs"]


def test_patience_stops_when_the_validation_loss_stops_falling(tmp_path):
    # A learning rate of 0 never changes the weights: the validation loss never falls below the
    # first one, so training stops after 1 + patience validations.
    result = loop.train(SMOKE, tmp_path / "run", overrides=TINY + (
        "train.max_steps=100", "train.val_every=2", "train.patience=2", "train.optimizer={name: sgd, lr: 0.0}"),
        show_progress=False)
    assert result["stopped_by"] == "patience"
    assert [r["global_step"] for r in result["epochs"]] == [2, 4, 6]
    assert result["best_step"] == 2 and result["epochs"][-1]["stopped_early"]


def test_load_solver_prefers_best_weights(tmp_path):
    loop.train(SMOKE, tmp_path / "run", overrides=TINY + ("train.max_steps=4", "train.val_every=2"), show_progress=False)
    assert loop.weights_file(tmp_path / "run").name == loop.BEST_FILE
    assert loop.weights_file(tmp_path / "run", "last").name == "model.safetensors"
    best = load_file(str(tmp_path / "run" / loop.BEST_FILE))
    solver = load_solver(tmp_path / "run")[0]
    for key, value in solver.state_dict().items():
        assert torch.equal(value, best[key]), key
    (tmp_path / "run" / loop.BEST_FILE).unlink()  # runs from before best weights existed
    assert loop.weights_file(tmp_path / "run").name == "model.safetensors"
    with pytest.raises(ValueError, match="'best' or 'last'"):
        loop.weights_file(tmp_path / "run", "newest")


def test_bad_step_settings_are_refused(tmp_path):
    for bad, key in (("train.max_steps=-1", "max_steps"), ("train.val_every=-5", "val_every"),
                     ("train.patience=-1", "patience"), ("train.epochs=0", "epochs")):
        with pytest.raises(ValueError, match=f"train.{key}"):
            loop.train(SMOKE, tmp_path / key, overrides=TINY + (bad,), show_progress=False)


def test_warmup_cosine_schedule_shape():
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    schedule = warmup_cosine(optimizer, total_steps=10, warmup_steps=4, final_lr_fraction=0.1)
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(rates[3:], rates[4:]))  # falls after the warm-up
    assert rates[10] == pytest.approx(0.1) and rates[11] == pytest.approx(0.1)  # and stays at the floor


def test_init_weights_starts_from_another_runs_best_weights(tmp_path):
    loop.train(SMOKE, tmp_path / "source", overrides=TINY + ("train.max_steps=4", "train.val_every=2"), show_progress=False)
    frozen = TINY + ("train.max_steps=1", "train.optimizer={name: sgd, lr: 0.0}")
    loop.train(SMOKE, tmp_path / "tuned", overrides=frozen + (f"train.init_weights={tmp_path / 'source'}",),
               show_progress=False)
    best = load_file(str(tmp_path / "source" / loop.BEST_FILE))
    tuned = load_file(str(tmp_path / "tuned" / "model.safetensors"))
    assert all(torch.equal(best[k], tuned[k]) for k in best)
    with pytest.raises(ValueError, match="train.init_weights"):
        loop.train(SMOKE, tmp_path / "bad", overrides=frozen + (f"train.init_weights={tmp_path / 'nowhere'}",),
                   show_progress=False)
    with pytest.raises(ValueError, match="no shipped model named 'nope'"):
        loop.train(SMOKE, tmp_path / "bad2", overrides=frozen + ("train.init_weights=pretrained:nope",), show_progress=False)


def test_exponent_numbers_in_free_form_sections_are_numbers(tmp_path):
    from learn2invert.train.config import load_config

    config = tmp_path / "c.yaml"
    config.write_text("train:\n  optimizer: {name: adam, lr: 1e-4, betas: [0.9, 0.999]}\n"
                      "solver:\n  params: {eps_init: 5e-1, tag: e5}\n")
    loaded = load_config(config)
    # The default solver is the RIM: its new-default keys are written out (CHANGED_DEFAULTS).
    assert loaded["train"]["optimizer"]["lr"] == 1e-4 and loaded["solver"]["params"] == {
        "eps_init": 0.5, "tag": "e5", "output_init": "zero", "eps_units": "lipschitz"}
    result = loop.train(SMOKE, tmp_path / "run", overrides=TINY + ("train.max_steps=1", "train.optimizer={lr: 1e-4}"),
                        show_progress=False)
    assert result["epochs"][-1]["global_step"] == 1


def test_a_second_training_into_a_busy_run_folder_fails_at_once(tmp_path):
    from learn2invert.train.loop import _lock_run_folder, _unlock_run_folder

    run = tmp_path / "run"
    run.mkdir()
    _lock_run_folder(run)  # as a training in progress holds it (flock: a second open file description)
    try:
        with pytest.raises(ValueError, match=r"in use by another training \(pid \d+\)"):
            loop.train(SMOKE, run, overrides=TINY + ("train.max_steps=1",), show_progress=False)
    finally:
        _unlock_run_folder(run)
    loop.train(SMOKE, run, overrides=TINY + ("train.max_steps=1",), show_progress=False)  # free again


def test_ctrl_c_during_training_prints_one_line_with_the_resume_command(tmp_path, monkeypatch, capsys):
    from learn2invert.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted)
    assert main(["train", str(SMOKE), "--out", str(tmp_path / "run")]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"l2i train: interrupted; the last checkpoint in {tmp_path / 'run'} is kept. Continue with: "
                   f"l2i train --resume {tmp_path / 'run'}"]


def test_negative_settings_and_resume_with_a_config_are_refused(tmp_path, capsys):
    from learn2invert.cli import main
    from learn2invert.train.config import ConfigError, load_config

    for bad in ("operator.noise_sigma=-0.1", "operator.noise_sigma=[-0.1, 0.2]", "train.time_limit_minutes=-1",
                "data.train_length=-4"):
        with pytest.raises(ConfigError, match=bad.split("=")[0]):
            load_config(SMOKE, [bad])
    with pytest.raises(SystemExit) as exit_:
        main(["train", str(SMOKE), "--resume", str(tmp_path / "run")])
    assert exit_.value.code == 2 and "drop CONFIG and --out" in capsys.readouterr().err


def test_bench_curves_plots_validation_psnr_against_steps(tmp_path, capsys):
    from learn2invert.cli import main

    loop.train(SMOKE, tmp_path / "run", overrides=TINY + ("train.max_steps=4", "train.val_every=2"), show_progress=False)
    assert main(["bench", "curves", f"rim={tmp_path / 'run'}", "--out", str(tmp_path / "curves")]) == 0
    table = (tmp_path / "curves.md").read_text()
    assert "| 2" in table and "| 4" in table and "(best)" in table
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert main(["bench", "curves", f"x={tmp_path / 'nowhere'}", "--out", str(tmp_path / "c2")]) == 2
    assert "history.json does not exist" in capsys.readouterr().err
