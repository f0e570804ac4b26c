"""The demo's report and summary from synthetic results (the full job is run by `make demo`)."""
import pytest

from learn2invert import demo, pretrained


def _result(tv_weight=0.003):
    methods = {m: {"psnr": {"mean": p, "std": 1.0}, "ssim": {"mean": 0.5, "std": 0.1}, "nmse": {"mean": 0.02, "std": 0.0}}
               for m, p in (("zero-filled", 19.0), ("tv", 23.8), ("irim", 26.5))}
    return {"methods": methods, "seconds_per_sample": {m: 0.1 for m in methods}, "tv_weight": tv_weight, "samples": 24}


def test_report_has_every_section_and_number():
    memory = [{"model": "irim", "memory_mode": "invertible", "dims": 2, "steps": 8, "layers": 48,
               "image_size": [64, 64], "batch": 4, "peak_bytes": 46 * 2**20, "saved_bytes": 2 * 2**20, "step_seconds": 1.2}]
    cards = {"irim": {"parameters": 970753, "optimiser_steps": 2400, "data": "BrainSliceMix"}}
    fine_tune = {"model": "irim", "steps": 30, "seconds": 41.0, "val_psnr_before": 27.1, "val_psnr_after": 27.2,
                 "command": "l2i train x.yaml --out y"}
    results = {"test slices 4x": _result(), "real MR 4x": _result(0.01)}
    text = demo._report(results, {"irim": [18.8, 23.2]}, memory, cards, fine_tune, seconds=200)
    for needle in ("l2i demo --steps 30", "## test slices 4x", "## real MR 4x", "| irim | 26.50 ± 1.00", "TV weight 0.003",
                   "TV weight 0.01", "| irim | 970,753 | 2400 | BrainSliceMix |", "| 2 | 23.20 |",
                   "| irim | invertible | 2D | 8 | 48 | 64x64 | 46.0 |", "27.10 dB before, 27.20 dB after",
                   "reconstructions.png", "real_mr.png"):
        assert needle in text, needle


def test_summary_and_bad_arguments(tmp_path, monkeypatch):
    metrics = {"test slices 4x": {m: {k: v["mean"] for k, v in s.items()} for m, s in _result()["methods"].items()}}
    lines = demo.main_summary({"metrics": metrics, "report": "runs/demo/report.md", "seconds": 180}).splitlines()
    assert lines[0] == "test slices 4x:" and "tv: PSNR 23.80 dB" in lines[2]
    assert lines[-1] == "report: runs/demo/report.md (3.0 min)"
    with pytest.raises(ValueError, match="steps"):
        demo.run_demo(tmp_path / "unused", steps=0)
    monkeypatch.setattr(pretrained.shipped, "ROOT", tmp_path)
    with pytest.raises(ValueError, match="ships no MRI models"):
        demo.run_demo(tmp_path / "unused")


def test_two_shipped_models_of_one_solver_are_both_in_the_demo(monkeypatch):
    from pathlib import Path

    monkeypatch.setattr(pretrained, "available", lambda: ["denoise_rim", "mri_admm", "mri_admm_mixed"])
    monkeypatch.setattr(pretrained, "card", lambda name: {"solver": name.split("_")[1],
                                                          "operator": "mri" if name.startswith("mri") else "denoising"})
    monkeypatch.setattr(pretrained, "path", lambda name: Path("/models") / name)
    assert demo.shipped_mri_models() == {"admm": Path("/models/mri_admm"), "admm_mixed": Path("/models/mri_admm_mixed")}
