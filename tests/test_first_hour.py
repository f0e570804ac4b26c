"""A newcomer's first hour (issue 17): every mistake gets one clear line, before any work is done.

YAML typos, output paths that are folders, files or read-only, a flow prior given to ``l2i eval``,
a random projection too large for memory, an empty validation set, a run whose validation
diverged, and progress bars where the tools were silent for minutes.
"""
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.io import imsave

from learn2invert import outputs
from learn2invert.cli import main
from learn2invert.operators import random_projection
from learn2invert.operators.random_projection import MatrixTooLarge, RandomProjection
from learn2invert.train import loop
from learn2invert.train.config import ConfigError, dump_config, load_config
from learn2invert.operators.generator import Measurement
from learn2invert.inference import load_solver
from learn2invert.inference.load import NotAReconstructionRun

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMOKE = CONFIGS / "smoke.yaml"
FLOW = CONFIGS.parent / "projects" / "flow_unfolding2021" / "configs"
TINY = (
    "data.train_length=16", "data.val_length=4", "data.patch_size=8", "train.batch_size=8",
    "solver.params.steps=2", "solver.params.conv_channels=4", "solver.params.hidden_channels=4",
)


def _sets(overrides) -> list[str]:
    return [a for item in overrides for a in ("--set", item)]


def _one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"l2i {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def _forbid(monkeypatch, target, name: str) -> None:
    """Make ``target.name`` fail the test if called: the check must come before that work."""
    def called(*args, **kwargs):
        raise AssertionError(f"{name} was called: the mistake should have been refused before this work")
    monkeypatch.setattr(target, name, called)


def _png(path: Path, size: int = 8) -> Path:
    imsave(path, np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8), check_contrast=False)
    return path


# ------------------------------------------------------------------------- 1. YAML syntax errors

def test_yaml_syntax_error_names_file_line_and_column(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("seed: 0\ndata:\n  name: natural_patches\n  patch_size: [16\ntrain:\n  epochs: 1\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML: line 5, column 6: expected ',' or ']'"):
        load_config(bad)
    assert main(["train", str(bad), "--out", str(tmp_path / "run")]) == 2
    line = _one_error_line(capsys.readouterr().err, "train")
    assert str(bad) in line and "line 5, column 6" in line and "started at line 4" in line


def test_bad_yaml_in_a_set_value_is_one_line(tmp_path, capsys):
    with pytest.raises(ConfigError, match=r"--set train\.optimizer=\{name: adam: the value is not valid YAML: column 12"):
        load_config(SMOKE, ["train.optimizer={name: adam"])
    assert main(["train", str(SMOKE), "--out", str(tmp_path / "run"), "--set", "data.root=a: b: c"]) == 2
    assert "--set data.root=a: b: c: the value is not valid YAML" in _one_error_line(capsys.readouterr().err, "train")


# ------------------------------------------------------------------------------- 2. output paths

def test_train_out_that_is_a_file_is_one_line(tmp_path, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    assert main(["train", str(SMOKE), "--out", str(existing)] + _sets(TINY)) == 2
    assert f"the run folder {existing} is an existing file" in _one_error_line(capsys.readouterr().err, "train")
    assert main(["train", str(SMOKE), "--out", str(existing / "run")] + _sets(TINY)) == 2
    assert "is an existing file" in _one_error_line(capsys.readouterr().err, "train")
    assert existing.read_text() == "mine"


def test_outputs_that_are_folders_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    from learn2invert import tour
    from learn2invert.bench import compare
    from learn2invert.inference import evaluate, reconstruct

    run_dir = tmp_path / "run"  # never loaded: every check below comes first
    run_dir.mkdir()
    image = _png(tmp_path / "in.png")
    folder = tmp_path / "out.png"
    folder.mkdir()
    for target, name in ((reconstruct, "load_solver"), (evaluate, "load_solver"), (tour, "_build_tasks"),
                         (compare, "compare")):
        _forbid(monkeypatch, target, name)

    assert main(["reconstruct", str(run_dir), str(image), str(folder)]) == 2
    line = _one_error_line(capsys.readouterr().err, "reconstruct")
    assert f"the output file {folder} is an existing folder" in line and str(folder / "estimate.png") in line
    assert main(["eval", str(run_dir), "--out", str(folder)]) == 2
    assert f"the --out file {folder} is an existing folder" in _one_error_line(capsys.readouterr().err, "eval")
    assert main(["tour", "--out", str(image)]) == 2
    assert f"the output folder {image} is an existing file" in _one_error_line(capsys.readouterr().err, "tour")
    assert main(["bench", "compare", f"a={run_dir}", "--out", str(folder)]) == 2
    assert f"--out {folder} is an existing folder" in _one_error_line(capsys.readouterr().err, "bench")
    (tmp_path / "cmp.png").mkdir()  # one of the three files compare writes
    assert main(["bench", "compare", f"a={run_dir}", "--out", str(tmp_path / "cmp")]) == 2
    assert f"{tmp_path / 'cmp.png'} is an existing folder" in _one_error_line(capsys.readouterr().err, "bench")


def _read_only(folder: Path, monkeypatch) -> Path:
    """``folder``, read-only. Root ignores permission bits, so for root the probe's file creation
    in (or below) that folder is made to fail as it would for anyone else."""
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        real = outputs.tempfile.TemporaryFile

        def denied(*args, dir=None, **kwargs):
            if dir is not None and (Path(dir) == folder or folder in Path(dir).parents):
                raise PermissionError(13, "Permission denied", str(dir))
            return real(*args, dir=dir, **kwargs)

        monkeypatch.setattr(outputs.tempfile, "TemporaryFile", denied)
    return folder


def test_read_only_output_folders_are_one_line(tmp_path, monkeypatch, capsys):
    from learn2invert import tour
    from learn2invert.bench import compare
    from learn2invert.inference import evaluate, reconstruct

    locked = _read_only(tmp_path / "locked", monkeypatch)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    image = _png(tmp_path / "in.png")
    for target, name in ((reconstruct, "load_solver"), (evaluate, "load_solver"), (tour, "_build_tasks"),
                         (compare, "compare"), (loop, "build_dataset")):
        _forbid(monkeypatch, target, name)
    try:
        commands = {
            "train": ["train", str(SMOKE), "--out", str(locked / "run")],
            "reconstruct": ["reconstruct", str(run_dir), str(image), str(locked / "out.png")],
            "eval": ["eval", str(run_dir), "--out", str(locked / "eval.json")],
            "tour": ["tour", "--out", str(locked)],
            "bench": ["bench", "compare", f"a={run_dir}", "--out", str(locked / "cmp")],
        }
        for command, argv in commands.items():
            assert main(argv) == 2, command
            line = _one_error_line(capsys.readouterr().err, command)
            assert str(locked) in line and "permission denied" in line, line
    finally:
        locked.chmod(0o755)


# ----------------------------------------------------------------------- 3. a flow prior is no solver

def test_flow_prior_run_is_refused_by_eval_and_reconstruct(tmp_path, capsys):
    from learn2invert.inference import evaluate, reconstruct

    run_dir = tmp_path / "prior"  # what l2i train projects/flow_unfolding2021/configs/flow_prior.yaml leaves (the weights are not read)
    run_dir.mkdir()
    config = load_config(FLOW / "flow_prior.yaml", ["data.patch_size=8", "solver.params.image_size=8"])
    (run_dir / "config.yaml").write_text(dump_config(config))
    (run_dir / "model.safetensors").write_bytes(b"")
    image = _png(tmp_path / "in.png")
    with pytest.raises(NotAReconstructionRun, match="flow prior"):
        evaluate.evaluate_run(run_dir)
    with pytest.raises(NotAReconstructionRun, match="flow prior"):
        reconstruct.reconstruct(run_dir, image, tmp_path / "out.png")
    for argv in (["eval", str(run_dir)], ["reconstruct", str(run_dir), str(image), str(tmp_path / "out.png"), "--simulate"]):
        assert main(argv) == 2
        line = _one_error_line(capsys.readouterr().err, argv[0])
        assert "not a reconstruction model" in line and "flow unfolding" in line
        assert "configs/flow_denoise.yaml" in line and f"solver.params.pretrained={run_dir}" in line


# ----------------------------------------------------------------- 4. random projections too large

def test_random_projection_too_large_for_memory_is_refused_before_building():
    config = load_config(SMOKE, ["data.patch_size=1000"])  # n = 10^6 pixels, m = n / 2: a 1.8 TiB matrix
    with pytest.raises(ConfigError, match=r"data\.patch_size.*operator\.params\.reduction.*m = 500000.*1862\.6 GiB"):
        Measurement(config, (1, 1000, 1000))
    assert Measurement(load_config(SMOKE), (1, 16, 16)).fixed.matrix.shape == (128, 256)  # the usual sizes build


def test_random_projection_checks_its_size_against_half_the_memory(monkeypatch):
    assert random_projection.memory_limit_bytes() >= 2**20
    monkeypatch.setattr(random_projection, "memory_limit_bytes", lambda: 2**20)  # 1 MiB
    # 100 x 1000 entries: drawn in float64 and kept in float32, 1.2 MB at the peak.
    with pytest.raises(MatrixTooLarge, match=r"m = 100 measurements of n = 1000 pixels.*limit is 1\.0 MiB"):
        RandomProjection(100, 1000, seed=0)
    assert RandomProjection(10, 1000, seed=0).matrix.shape == (10, 1000)
    assert RandomProjection(100, 1000, kind="fourier", seed=0).rows.shape == (100,)  # no matrix


def test_train_with_a_huge_random_projection_stops_before_training(tmp_path, monkeypatch, capsys):
    _forbid(monkeypatch, loop, "build_solver")
    argv = ["train", str(SMOKE), "--out", str(tmp_path / "run")] + _sets(TINY + ("data.patch_size=1000",))
    assert main(argv) == 2
    assert "GiB" in _one_error_line(capsys.readouterr().err, "train")


# ------------------------------------------------------------------------ 5. empty validation sets

def test_empty_validation_set_is_refused_before_training(tmp_path, monkeypatch, capsys):
    _forbid(monkeypatch, loop, "iterate_loss")
    assert main(["train", str(SMOKE), "--out", str(tmp_path / "a")] + _sets(TINY + ("data.val_length=0",))) == 2
    assert "'data.val_length' must be >= 1" in _one_error_line(capsys.readouterr().err, "train")
    # Any dataset: here one whose validation split comes back empty.
    real = loop.build_dataset
    monkeypatch.setattr(loop, "build_dataset", lambda config, split: [] if split == "val" else real(config, split))
    with pytest.raises(ConfigError, match="validation set of data.name=natural_patches is empty"):
        loop.train(SMOKE, tmp_path / "b", overrides=TINY, show_progress=False)


def test_empty_validation_set_of_a_flow_prior_is_refused_before_training(tmp_path):
    tiny = ("data.train_length=16", "data.val_length=0", "data.patch_size=8", "train.batch_size=8",
            "solver.params={image_size: 8, levels: 1, depth: 1, hidden: 4, memory: invertible}")
    with pytest.raises(ConfigError, match="'data.val_length' must be >= 1"):
        loop.train(FLOW / "flow_prior.yaml", tmp_path, overrides=tiny, show_progress=False)
    assert not (tmp_path / "model.safetensors").exists()


def test_eval_refuses_zero_samples(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    assert main(["eval", str(tmp_path / "run"), "--samples", "0"]) == 2
    assert "--samples must be >= 1" in _one_error_line(capsys.readouterr().err, "eval")


# --------------------------------------------------------------------- 6. a diverged validation

def _record(step: int, psnr: float, loss: float = 0.01) -> dict:
    return {"epoch": step, "global_step": step, "val_psnr": psnr, "val_loss": loss}


def test_validation_warning_rule():
    warn = loop.validation_warning
    assert warn([], "run") is None
    assert warn([_record(1, 20.0), _record(2, 27.0), _record(3, 25.5)], "run", best_step=2) is None  # a wobble
    assert warn([_record(1, 1.5)], "run") is None  # poor but not wrong
    assert "below 0 dB" in warn([_record(1, -154.0, 3e14)], "run")
    dropped = warn([_record(1, 20.0), _record(2, 30.0), _record(3, 18.0)], "run", best_step=2)
    assert "12.0 dB below the run's best (30.00 dB)" in dropped and "step 2" in dropped and "best.safetensors" in dropped
    nan = warn([_record(1, 20.0), _record(2, 20.5, math.nan)], "run", best_step=1)
    assert "loss nan" in nan and "train.optimizer.lr" in nan


def test_diverging_training_warns_at_the_end(tmp_path):
    with pytest.warns(loop.DivergenceWarning, match=r"below 0 dB"):
        result = loop.train(SMOKE, tmp_path, overrides=TINY + ("train.optimizer={name: adam, lr: 1e6}",),
                            show_progress=False)
    assert result["epochs"][-1]["val_psnr"] < 0 and "train.optimizer.lr" in result["warning"]
    assert len(result["epochs"]) == 2  # a warning, not a stop


def test_train_exits_4_when_the_final_validation_loss_is_not_finite(tmp_path, monkeypatch, capsys):
    real = loop.validate
    calls = {"n": 0}

    def last_one_nan(*args, **kwargs):
        calls["n"] += 1
        metrics = real(*args, **kwargs)
        return {**metrics, "loss": math.nan} if calls["n"] == 2 else metrics

    monkeypatch.setattr(loop, "validate", last_one_nan)
    assert main(["train", str(SMOKE), "--out", str(tmp_path / "run")] + _sets(TINY)) == 4
    captured = capsys.readouterr()
    assert any(line.startswith("run: ") for line in captured.out.splitlines())
    (line,) = [line for line in captured.err.splitlines() if line.startswith("l2i train")]  # besides the progress bars
    assert line.startswith("l2i train: error: ") and "loss nan" in line and "(step 2) are in" in line
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert len(history) == 2  # the bad validation did not stop training


# --------------------------------------------------------------------------------- 7. progress

def _validation_triples():
    from learn2invert.operators import Denoising

    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    return [(x + 0.1 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1)), Denoising(), x)]


def test_tv_weight_search_shows_a_bar_over_the_grid(capsys):
    from learn2invert.solvers.tv import choose_tv_weight

    choose_tv_weight(_validation_triples(), grid=[0.01, 0.1, 1.0], iterations=3, show_progress=True)
    err = capsys.readouterr().err
    assert "TV weight search" in err and "3/3" in err and "best=" in err
    choose_tv_weight(_validation_triples(), grid=[0.01, 0.1], iterations=3)
    assert "TV weight search" not in capsys.readouterr().err  # library calls stay quiet


def test_bench_compare_shows_the_tv_search(monkeypatch, capsys):
    from learn2invert.bench import compare

    config = load_config(SMOKE, TINY)
    solver = torch.nn.Identity()  # stands in for a trained run: the adjoint as its one iterate
    solver.forward = lambda y, op, sigma=None: [op.A_adjoint(y)]
    monkeypatch.setattr(compare, "load_solver", lambda run_dir, **kwargs: (solver, config, None, None))
    for show in (True, False):
        compare.compare({"a": "run"}, samples=2, tv_iterations=2, tv_grid=[0.01, 0.1], show_progress=show)
        assert ("TV weight search" in capsys.readouterr().err) == show


@pytest.mark.parametrize("benchmark", ["memory", "speed", "operators", "rim2017/rim_superres",
                                       "flow_unfolding2021/flow_tables", "luser2022/luser_tables", "compare", "curves",
                                       "precision"])
def test_no_benchmark_writes_into_the_shipped_docs_by_default(benchmark, monkeypatch, project):
    # Every default output path of `l2i bench NAME` (and of a paper's table script under projects/) is read
    # from the parser without running it.
    import argparse
    import importlib

    from learn2invert.registry import BENCHMARKS

    module = (project(*benchmark.split("/")) if "/" in benchmark
              else importlib.import_module(BENCHMARKS.entry(benchmark).target.split(":")[0]))
    defaults = []

    def capture(parser, args=None, namespace=None):
        defaults.extend(str(a.default) for a in parser._actions if isinstance(a.default, (str, Path)))
        raise SystemExit(0)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(SystemExit):
        module.main([])
    assert defaults and not [d for d in defaults if d.startswith(("docs", "projects"))], defaults


def test_a_run_on_an_image_folder_loads_after_the_folder_moved(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        imsave(folder / f"{i}.png", (rng.random((20, 20)) * 255).astype(np.uint8))
    loop.train(SMOKE, tmp_path / "run", show_progress=False, overrides=(
        "data.name=image_folder", f"data.root={folder}", "data.patch_size=8", "data.grey=true", "data.train_length=8",
        "data.val_length=2", "train.batch_size=2", "train.max_steps=2", "solver.params.steps=1",
        "solver.params.conv_channels=4", "solver.params.hidden_channels=4", "operator.name=denoising",
        "operator.params={}", "operator.noise_sigma=0.1"))
    before = load_solver(tmp_path / "run")[0].state_dict()
    folder.rename(tmp_path / "moved")
    after, _, _, shape = load_solver(tmp_path / "run")
    assert shape == (1, 8, 8)
    assert all(torch.equal(v, after.state_dict()[k]) for k, v in before.items())


def test_a_bad_config_leaves_no_run_folder(tmp_path, capsys):
    assert main(["train", str(SMOKE), "--out", str(tmp_path / "run"), "--set", "solver.name=nope"]) == 2
    assert "unknown solver 'nope'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    (tmp_path / "kept").mkdir()  # a folder that was there before is never removed
    assert main(["train", str(SMOKE), "--out", str(tmp_path / "kept"), "--set", "solver.name=nope"]) == 2
    assert (tmp_path / "kept").is_dir()


def test_validation_nmse_is_over_the_whole_set_not_a_mean_of_ratios():
    from learn2invert.operators import Denoising
    from learn2invert.train.validate import validate

    images = torch.stack([torch.full((1, 8, 8), 0.5), torch.full((1, 8, 8), 1e-3)])  # one near-black image

    class AddOne(torch.nn.Module):  # an estimate 0.01 off everywhere
        def forward(self, y, op, sigma=None, steps=None):
            return [y + 0.01]

    def measurement(x, generator):
        return x, Denoising(), None

    config = {"train": {"val_batch_size": 2}, "data": {"data_range": None}, "loss": {"name": "mse"}}
    result = validate(AddOne(), images, measurement, config, torch.device("cpu"))
    assert result["nmse"] == pytest.approx(2 * 0.01**2 / (0.5**2 + 1e-3**2), rel=1e-6)  # 8e-4, not ~50
    assert result["psnr"] > 0 and result["loss"] == pytest.approx(1e-4, rel=1e-4)


def test_a_batch_that_cannot_fit_is_refused_before_training_with_the_numbers(tmp_path, monkeypatch, capsys):
    from learn2invert.train import memory_check

    tiny = ("data.train_length=8", "data.val_length=2", "data.patch_size=8", "train.batch_size=8", "train.max_steps=1",
            "solver.params.steps=1", "solver.params.conv_channels=4", "solver.params.hidden_channels=4")
    monkeypatch.setattr(memory_check, "available_bytes", lambda device: 1000)  # a machine with 1 kB free
    assert main(["train", str(SMOKE), "--out", str(tmp_path / "run"), *[a for t in tiny for a in ("--set", t)]]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size=8 needs about" in err and "MiB per sample" in err and "use train.batch_size <= 0" in err
    assert not (tmp_path / "run").exists()
    monkeypatch.setattr(memory_check, "available_bytes", lambda device: 2**40)
    assert main(["train", str(SMOKE), "--out", str(tmp_path / "run"), *[a for t in tiny for a in ("--set", t)]]) == 0
    probe = memory_check.saved_tensor_bytes(lambda: (torch.ones(1, requires_grad=True) * torch.ones(1000)).sum())
    assert probe >= 4000  # the product saved its 1000-float operand for backward
