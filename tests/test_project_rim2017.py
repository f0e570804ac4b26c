"""`l2i bench superres` (RIM paper Table 3 at laptop scale): upsamplers, pixel alignment, end to end."""
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml

from learn2invert.bench import rim_superres
from learn2invert.bench.rim_superres import bicubic_matlab, upsample, upscale_matrix
from learn2invert.operators import SuperResolution
from learn2invert.train.loop import train

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# 12 is divisible by 2 and 3; x2 leaves 8 pixels after shaving (scored), x3 only 6 (not shaved).
TINY = ("data.patch_size=12", "data.train_length=16", "data.val_length=16", "train.batch_size=8", "train.epochs=1",
        "train.time_limit_minutes=0", "solver.params.steps=3", "solver.params.conv_channels=4",
        "solver.params.hidden_channels=4")


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _matlab_upscale_matrix(in_length: int, scale: int) -> np.ndarray:
    """imresize.m contributions() for an enlargement (no antialiasing), 1-based as in MATLAB."""
    out_length = in_length * scale
    x = np.arange(1, out_length + 1, dtype=float)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - 2)  # kernel width 4
    indices = left[:, None] + np.arange(6)[None, :]  # ceil(4) + 2 taps
    d = np.abs(u[:, None] - indices)
    weights = (1.5 * d**3 - 2.5 * d**2 + 1) * (d <= 1) + (-0.5 * d**3 + 2.5 * d**2 - 4 * d + 2) * ((d > 1) & (d <= 2))
    weights /= weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(1, in_length + 1), np.arange(in_length, 0, -1)])
    mapped = aux[np.mod(indices.astype(int) - 1, len(aux))]
    matrix = np.zeros((out_length, in_length))
    for i in range(out_length):
        for k in range(indices.shape[1]):
            matrix[i, mapped[i, k] - 1] += weights[i, k]
    return matrix


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("n", [1, 5, 9])
def test_bicubic_is_matlab_imresize(factor, n):
    np.testing.assert_allclose(upscale_matrix(n, factor).numpy(), _matlab_upscale_matrix(n, factor), atol=1e-12)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_scaled_adjoint_is_bicubic(factor):
    # f^2 A^T of the MATLAB-style downscaler is MATLAB's bicubic upscaler, borders included.
    op = SuperResolution(factor).double()
    y = torch.rand(2, 1, 7, 5, generator=torch.Generator().manual_seed(factor), dtype=torch.float64)
    torch.testing.assert_close(upsample("adjoint", y, op, factor), bicubic_matlab(y, factor), atol=1e-12, rtol=0)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upsamplers_are_aligned_with_the_operator(factor):
    # A linear ramp survives downscaling + bicubic upscaling exactly away from the border (Keys' a = -0.5
    # kernel reproduces linear functions) only if both agree on the pixel centres: LR pixel i sits at
    # HR coordinate f i + (f - 1) / 2. Nearest upsampling is then unbiased on every f x f block.
    n, margin = 12 * factor, 4 * factor
    i, j = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    x = ((0.3 * i + 0.7 * j) / n)[None, None]
    op = SuperResolution(factor).double()
    y = op.A(x)
    inner = (slice(None), slice(None), slice(margin, -margin), slice(margin, -margin))
    assert (bicubic_matlab(y, factor) - x)[inner].abs().max() < 1e-12
    block_error = F.avg_pool2d(upsample("nearest", y, op, factor) - x, factor)
    assert block_error[..., 2:-2, 2:-2].abs().max() < 1e-12
    # A half-pixel misalignment (corner-aligned grid) would not reproduce the ramp.
    shifted = F.interpolate(y, size=(n, n), mode="bicubic", align_corners=True)
    assert (shifted - x)[inner].abs().max() > 1e-3


def test_bench_end_to_end(tmp_path):
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
