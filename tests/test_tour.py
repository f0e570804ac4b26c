"""``l2i tour``: every operator simulated on embedded data and reconstructed by classical baselines."""
import json

from learn2invert.cli import main


def test_tour_writes_report_and_tikhonov_beats_the_adjoint(tmp_path):
    assert main(["tour", "--out", str(tmp_path), "--size", "32"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics) == 9
    for task in ("denoising (sigma=0.1)", "compressed sensing (Gaussian, m=n/4)", "inpainting (50% pixels)"):
        methods = metrics[task]
        assert methods["tikhonov"]["psnr"] > list(methods.values())[0]["psnr"] + 3.0, task
    # The nonlinear operators: their first baseline is A_dagger(y); the regularised Poisson fit of
    # Beer-Lambert CT beats log + FBP.
    assert list(metrics["phase retrieval (Fourier magnitude, 2x oversampled)"]) == ["zero-phase A_dagger(y)", "tikhonov"]
    ct = metrics["Beer-Lambert CT (60 angles, Poisson)"]
    assert ct["tikhonov"]["psnr"] > ct["log + FBP"]["psnr"] + 1.0
    assert (tmp_path / "report.md").read_text().startswith("#")
    assert (tmp_path / "reconstructions.png").stat().st_size > 10_000
