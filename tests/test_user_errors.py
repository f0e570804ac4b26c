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
