"""projects/rim2017 (the RIM paper's tables, outside the package): the super-resolution table end to
end, its upsamplers, and the run script's steps. The bicubic baseline itself is tested with the
operator (tests/test_operators_superres.py)."""
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from learn2invert.operators import SuperResolution, bicubic_matlab
from learn2invert.train.loop import train

CONFIGS = Path(__file__).resolve().parents[1] / "projects" / "rim2017" / "configs"
# 12 is divisible by 2 and 3; x2 leaves 8 pixels after shaving (scored), x3 only 6 (not shaved).
TINY = ("data.patch_size=12", "data.train_length=16", "data.val_length=16", "train.batch_size=8", "train.epochs=1",
        "train.time_limit_minutes=0", "solver.params.steps=3", "solver.params.conv_channels=4",
        "solver.params.hidden_channels=4")


@pytest.fixture
def rim_superres(project):
    return project("rim2017", "rim_superres")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("factor", [2, 3])
def test_upsamplers_are_the_library_baseline_and_the_scaled_adjoint(rim_superres, factor):
    op = SuperResolution(factor).double()
    y = torch.rand(1, 1, 6, 5, generator=torch.Generator().manual_seed(factor), dtype=torch.float64)
    torch.testing.assert_close(rim_superres.upsample("bicubic", y, op, factor), bicubic_matlab(y, factor), atol=0, rtol=0)
    torch.testing.assert_close(rim_superres.upsample("adjoint", y, op, factor), bicubic_matlab(y, factor),
                               atol=1e-12, rtol=0)
    nearest = rim_superres.upsample("nearest", y, op, factor)
    assert nearest.shape == (1, 1, 6 * factor, 5 * factor) and torch.equal(nearest[..., ::factor, ::factor], y)
    with pytest.raises(ValueError, match="unknown upsampling method"):
        rim_superres.upsample("lanczos", y, op, factor)


def test_bench_end_to_end(tmp_path, rim_superres):
    runs = []
    for factor in (2, 3):
        run = tmp_path / f"x{factor}"
        train(CONFIGS / f"rim_superres_x{factor}.yaml", run, overrides=TINY, show_progress=False)
        runs.append(str(run))
    out = tmp_path / "bench" / "rim_superres"
    rim_superres.main([runs[1], runs[0], "--out", str(out)])  # any order: the table is sorted by factor

    for suffix in (".json", ".md", ".png"):
        assert out.with_suffix(suffix).is_file()
    summary = json.loads(out.with_suffix(".json").read_text())
    assert [r["factor"] for r in summary["factors"]] == [2, 3]
    assert [r["shave"] for r in summary["factors"]] == [2, 0]
    for r in summary["factors"]:
        methods = r["methods"]
        assert set(methods) == {"nearest", "adjoint", "bicubic", "bicubic_torch", "rim"}
        assert r["samples"] == 16 and r["T"] == 3 and r["patch_size"] == 12
        for m in methods.values():
            assert set(m) == {"psnr", "ssim", "psnr_shaved", "ssim_shaved"}
            assert all(math.isfinite(m[k]["mean"]) for k in m)
        bicubic = methods["bicubic"]["psnr"]["mean"]
        assert 15 < bicubic < 60
        assert bicubic > methods["nearest"]["psnr"]["mean"]  # a real property of bicubic on natural images
        assert abs(bicubic - methods["adjoint"]["psnr"]["mean"]) < 1e-4  # f^2 A^T y is the same image
        assert 0 <= r["rim_beats_bicubic_fraction"] <= 1
        assert r["train"]["epochs"] == 1
    # Same held-out patches for both factors: the coarser measurement gives the worse bicubic image.
    x2, x3 = (r["methods"]["bicubic"]["psnr"]["mean"] for r in summary["factors"])
    assert x2 > x3
    assert summary["paper"]["2"]["bicubic"]["psnr"] == 29.55
    table = out.with_suffix(".md").read_text()
    assert "| x2 |" in table and "| x3 |" in table and "31.39" in table

    # Runs whose test patches differ (another seed) cannot share a table.
    other = tmp_path / "x3_other_seed"
    shutil.copytree(runs[1], other)
    config = yaml.safe_load((other / "config.yaml").read_text())
    config["seed"] = 1
    (other / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(ValueError, match="differ in their 'seed' or 'data'"):
        rim_superres.main([runs[0], str(other), "--out", str(tmp_path / "refused")])
