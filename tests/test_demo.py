"""The demo's report and summary from synthetic results (the full job is run by `make demo`)."""
import pytest

from learn2invert import demo


def _result():
    methods = {m: {"psnr": {"mean": p, "std": 1.0}, "ssim": {"mean": 0.5, "std": 0.1}, "nmse": {"mean": 0.02, "std": 0.0}}
               for m, p in (("zero-filled", 19.0), ("tv", 23.8), ("irim", 23.5))}
    return {"methods": methods, "seconds_per_sample": {m: 0.1 for m in methods}, "tv_weight": 0.003, "samples": 24}


def test_report_has_every_section_and_number():
    memory = [{"model": "irim", "memory_mode": "invertible", "dims": 2, "steps": 8, "layers": 48,
               "image_size": [64, 64], "batch": 4, "peak_bytes": 46 * 2**20, "saved_bytes": 2 * 2**20, "step_seconds": 1.2}]
    train_info = {"irim": {"parameters": 970753, "epochs": 8, "steps": 147, "seconds": 212.0, "val_psnr": 21.82}}
    text = demo._report(_result(), {"irim": [18.8, 23.2]}, memory, train_info, minutes=10, seconds=534)
    for needle in ("l2i demo --minutes 10", "| tv | 23.80 ± 1.00", "TV weight 0.003", "| irim | 970,753 | 8 | 147 | 212 | 21.82 |",
                   "| 2 | 23.20 |", "| irim | invertible | 2D | 8 | 48 | 64x64 | 46.0 |", "reconstructions.png"):
        assert needle in text, needle


def test_summary_and_bad_arguments():
    metrics = {m: {k: v["mean"] for k, v in s.items()} for m, s in _result()["methods"].items()}
    lines = demo.main_summary({"metrics": metrics, "report": "runs/demo/report.md", "seconds": 534}).splitlines()
    assert lines[-1] == "report: runs/demo/report.md (8.9 min)" and "tv: PSNR 23.80 dB" in lines[1]
    with pytest.raises(ValueError, match="minutes"):
        demo.run_demo("unused", minutes=0)
    with pytest.raises(ValueError, match="unknown demo models"):
        demo.run_demo("unused", models=("glow",))
