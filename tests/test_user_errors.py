"""A newcomer's first hour (issue 17): benchmarks that write where they say and never over shipped results."""
import json

import pytest
import torch

from learn2invert import operators
from learn2invert.bench import memory as memory_bench
from learn2invert.bench import operator_speed

FAKE_RECORD = {"model": "irim", "memory_mode": "invertible", "dims": 2, "steps": 1, "layers": 5, "image_size": [8, 8],
               "batch": 1, "peak_bytes": 2**20, "saved_bytes": 2**19, "step_seconds": 0.01}


def test_bench_memory_writes_under_runs_not_over_the_shipped_results(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(memory_bench, "run_grid", lambda specs, show_progress=True: [FAKE_RECORD])
    assert memory_bench.main(["--quick"]) == 0
    assert json.loads((tmp_path / "runs" / "bench" / "memory.json").read_text()) == [FAKE_RECORD]
    assert "| irim | invertible |" in (tmp_path / "runs" / "bench" / "memory.md").read_text()
    assert (tmp_path / "runs" / "bench" / "memory.png").is_file()
    assert not (tmp_path / "docs").exists()
    # --configs has its own default file, so it does not overwrite the grid's either.
    from learn2invert.bench import config_memory

    monkeypatch.setattr(config_memory, "run_configs", lambda *args, **kwargs: [{"label": "x"}])
    monkeypatch.setattr(config_memory, "markdown_table", lambda rows: "| x |")
    assert memory_bench.main(["--configs", "x=configs/smoke.yaml"]) == 0
    assert json.loads((tmp_path / "runs" / "bench" / "config_memory.json").read_text()) == [{"label": "x"}]
    assert json.loads((tmp_path / "runs" / "bench" / "memory.json").read_text()) == [FAKE_RECORD]
    assert not (tmp_path / "docs").exists()


def test_bench_operators_has_its_name_in_help_and_writes_json_and_markdown(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit):
        operator_speed.main(["--help"])
    assert capsys.readouterr().out.startswith("usage: l2i bench operators")
    # Two cheap operators instead of the full list (the CT matrix of the real one takes seconds).
    monkeypatch.setattr(operator_speed, "cases", lambda size, angles: [
        ("Denoising", operators.Denoising, (1, 1, size, size)),
        (f"GaussianBlur(3, 1.0) {size}x{size}", lambda: operators.GaussianBlur(3, 1.0), (1, 1, size, size))])
    out = tmp_path / "deep" / "ops"
    assert operator_speed.main(["--size", "8", "--repeats", "1", "--warmup", "0", "--out", str(out)]) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["size"] == 8 and result["device"] == "cpu" and result["torch"] == torch.__version__
    assert [r["operator"] for r in result["records"]] == ["Denoising", "GaussianBlur(3, 1.0) 8x8"]
    assert all(r["forward_ms"] >= 0 and r["adjoint_ms"] >= 0 and r["build_ms"] >= 0 for r in result["records"])
    table = out.with_suffix(".md").read_text()
    assert "| operator | build (ms) | A (ms) | A^T (ms) |" in table and "| Denoising |" in table
    printed = capsys.readouterr().out
    assert "| Denoising |" in printed and str(out.with_suffix(".json")) in printed
    # The default goes under runs/bench, never into the docs.
    monkeypatch.chdir(tmp_path)
    assert operator_speed.main(["--size", "8", "--repeats", "1", "--warmup", "0"]) == 0
    assert (tmp_path / "runs" / "bench" / "operators.json").is_file() and (tmp_path / "runs" / "bench" / "operators.md").is_file()
    for bad in (["--repeats", "0"], ["--size", "0"], ["--warmup", "-1"]):
        with pytest.raises(SystemExit):
            operator_speed.main(bad)
        assert "must be" in capsys.readouterr().err


# ------------------------------------------------- the bad-input sweep's findings (scripts/bad_inputs.py)

from pathlib import Path  # noqa: E402

from learn2invert.cli import main  # noqa: E402
from learn2invert.train.config import ConfigError, load_config  # noqa: E402

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
TINY = ("data.train_length=8", "data.val_length=2", "data.patch_size=8", "train.batch_size=2",
        "solver.params.steps=2", "solver.params.conv_channels=4", "solver.params.hidden_channels=4")


def _sets(overrides) -> list[str]:
    return [a for item in overrides for a in ("--set", item)]


def _one_error_line(err: str, command: str) -> str:
    lines = [line for line in err.splitlines() if line.strip() and "|" not in line]  # progress bars aside
    assert len(lines) == 1 and lines[0].startswith(f"l2i {command}: error: "), err
    assert "Traceback" not in err
    return lines[0]


def test_an_empty_config_file_is_refused_instead_of_training_the_defaults(tmp_path, capsys):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="empty"):
        load_config(empty)
    assert main(["train", str(empty), "--out", str(tmp_path / "run")]) == 2
    assert str(empty) in _one_error_line(capsys.readouterr().err, "train")
    assert not (tmp_path / "run").exists()


def test_a_config_that_is_not_text_names_the_file(tmp_path):
    png = tmp_path / "photo.yaml"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(ConfigError, match=r"photo\.yaml: not a YAML text file"):
        load_config(png)


@pytest.mark.parametrize("key", ["train.batch_size", "train.val_batch_size", "data.patch_size"])
def test_a_batch_or_patch_of_zero_is_refused_naming_the_key(key):
    with pytest.raises(ConfigError, match=rf"'{key}' must be >= 1, got 0"):
        load_config(SMOKE, [f"{key}=0"])


def test_a_run_that_ends_below_0_db_fails_with_exit_4(tmp_path, capsys):
    argv = ["train", str(SMOKE), "--out", str(tmp_path / "run"), *_sets(TINY + ("train.max_steps=3",
                                                                                "train.optimizer.lr=1e6"))]
    assert main(argv) == 4
    line = [line for line in capsys.readouterr().err.splitlines() if line.startswith("l2i train")]
    assert len(line) == 1 and line[0].startswith("l2i train: error: ") and "below 0 dB" in line[0]


def test_warnings_meant_for_the_user_are_one_line():
    import warnings

    from learn2invert import cli

    fmt = cli._one_line_warning("reconstruct")
    own = fmt("x.png is a colour image; it was converted to grey", UserWarning,
              "/site-packages/learn2invert/data/image_folder.py", 178)
    assert own == "l2i reconstruct: warning: x.png is a colour image; it was converted to grey\n"
    other = fmt("something in torch", UserWarning, "/site-packages/torch/nn/modules/module.py", 12)
    assert other.startswith("/site-packages/torch/nn/modules/module.py:12: UserWarning")
    before = warnings.formatwarning
    with pytest.raises(SystemExit):
        main(["tour", "--size", "x"])
    assert warnings.formatwarning is before


def test_empty_and_undecodable_image_files_are_one_line(tmp_path):
    from learn2invert.data.image_folder import read_image

    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ValueError, match=r"empty\.png is empty \(0 bytes\)"):
        read_image(empty)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all" * 4)
    with pytest.raises(ValueError) as err:
        read_image(junk)
    assert str(junk) in str(err.value) and len(str(err.value).splitlines()) == 1


@pytest.mark.parametrize("benchmark", ["compare", "curves"])
def test_a_run_without_its_name_is_one_line(benchmark, tmp_path, capsys):
    assert main(["bench", benchmark, str(tmp_path), "--out", str(tmp_path / "c")]) == 2
    line = _one_error_line(capsys.readouterr().err, "bench")
    assert "NAME=RUN_DIR" in line and str(tmp_path) in line


def test_bench_memory_names_a_missing_config_before_any_measurement(tmp_path, monkeypatch, capsys):
    from learn2invert.bench import config_memory

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(config_memory, "_run", lambda spec: pytest.fail("measured a config that does not exist"))
    assert main(["bench", "memory", "--configs", "x=missing.yaml"]) == 2
    assert "missing.yaml" in _one_error_line(capsys.readouterr().err, "bench")


@pytest.mark.parametrize("size, words", [("0", "--size is the image size"), ("-5", "--size is the image size"),
                                         ("1000", "--size 1000 is larger than")])
def test_tour_size_is_checked_naming_the_option(size, words, tmp_path, capsys):
    assert main(["tour", "--out", str(tmp_path / "tour"), "--size", size]) == 2
    assert words in _one_error_line(capsys.readouterr().err, "tour")
