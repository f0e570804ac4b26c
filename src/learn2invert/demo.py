"""The main demo (``make demo`` / ``l2i demo``): learned MRI reconstruction with the shipped models.

No training against a clock, so the numbers do not depend on how busy the machine is:

1. the shipped single-coil MRI models (:mod:`learn2invert.pretrained`, trained over 2x-8x) and
   the zero-filled and TV baselines reconstruct the held-out test slices of the embedded MNI152
   brain at 4x and 8x, on identical measurements (TV weight chosen on validation slices);
2. the same at 4x on a real MR scan nobody here made (pydicom's ``MR_small.dcm``, several masks
   and noise draws), with the TV weight of the validation slices: an out-of-distribution check;
3. one shipped model is fine-tuned for a fixed number of optimiser steps (``--steps``) to show
   training, and the training memory of one step of each model is measured.

Writes ``report.md``, ``metrics.json`` (``{test: {method: {"psnr", "ssim", "nmse"}}}``),
``reconstructions.png``, ``real_mr.png`` and ``psnr_vs_iteration.png`` into the output folder.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

# TV weight candidates around the weights chosen on this problem (5e-4 at 4x, 2e-3 at 8x with 200 FISTA
# iterations on 23 validation slices, docs/BENCHMARKS.md), scored on 8 validation slices to
# keep the demo's evaluation to about a minute.
TV_GRID = [2.5e-4, 5e-4, 1e-3, 2e-3]
TV_ITERATIONS = 100
TV_VALIDATION_SLICES = 8
REAL_MR = ["data.name=dicom", "data.root=pydicom:MR_small.dcm", "data.params={repeats: 8}"]
# Tests: (name, operator overrides (validation and test), overrides of the scored data only).
TESTS = (("test slices 4x", ["operator.acceleration=4"], []),
         ("test slices 8x", ["operator.acceleration=8"], []),
         ("real MR 4x", ["operator.acceleration=4"], REAL_MR))


def shipped_mri_models() -> dict[str, Path]:
    """``{short name: folder}`` of the shipped single-coil MRI models (``mri_irim`` -> ``irim``,
    ``mri_admm_mixed`` -> ``admm_mixed``): one entry per model, also for two of one solver."""
    from . import pretrained

    models = {}
    for name in pretrained.available():
        if pretrained.card(name).get("operator") == "mri":
            models[name.removeprefix("mri_")] = pretrained.path(name)
    if not models:
        raise ValueError("this installation ships no MRI models (learn2invert/pretrained is empty); reinstall learn2invert")
    return models


def _memory_records(threads: int) -> list[dict]:
    """Peak memory of one training step of the RIM and the i-RIM (fresh subprocesses, batch 4, 64x64)."""
    from .bench.memory import run_grid

    base = {"dims": 2, "batch": 4, "image_size": 64, "depth": 1, "state_channels": 32, "hidden_channels": 32,
            "threads": threads, "steps": 8}
    specs = [{**base, "model": "rim", "memory_mode": "autograd", "layers": 5},
             {**base, "model": "irim", "memory_mode": "autograd", "layers": 6},
             {**base, "model": "irim", "memory_mode": "invertible", "layers": 6}]
    return run_grid(specs, show_progress=False)


def _at_acceleration(folder: Path, acceleration: float, split: str):
    """``(solver, config, dataset, measurement)`` of a run, its ``split`` measured at ``acceleration``."""
    from .bench.compare import with_overrides
    from .data.items import item_shape
    from .train.datasets import build_dataset
    from .operators.generator import Measurement
    from .inference import load_solver

    solver, config, _, _ = load_solver(folder)
    config = with_overrides(config, [f"operator.acceleration={acceleration}"])
    dataset = build_dataset(config, split)
    return solver, config, dataset, Measurement(config, item_shape(dataset[0]))


def _psnr_curves(runs: dict[str, Path], acceleration: float) -> dict[str, list[float]]:
    from .train.validate import score_dataset

    curves = {}
    for name, run_dir in runs.items():
        if name == "unet":  # one step: no curve
            continue
        solver, config, test, measurement = _at_acceleration(run_dir, acceleration, "test")
        # Batches of 8, as in the comparison, so both see the same masks and noise.
        scores = score_dataset(solver, test, measurement, torch.device("cpu"), batch_size=8, every_iterate=True,
                               data_range=config["data"]["data_range"])
        curves[name] = scores["iterates"]["psnr"].mean(dim=1).tolist()
    return curves


def _plot_curves(curves: dict[str, list[float]], baselines: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, "-o", label=name)
    for (name, value), style in zip(baselines.items(), (":", "--", "-.")):
        ax.axhline(value, linestyle=style, color="grey", label=name)
    ax.set_xlabel("iteration t")
    ax.set_ylabel("mean PSNR on test slices (dB)")
    ax.set_title("4x single-coil MRI, embedded brain slices")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _report(results: dict[str, dict], curves: dict, memory: list[dict], cards: dict, fine_tune: dict,
            seconds: float) -> str:
    from .bench.compare import markdown_table
    from .bench.memory import markdown_table as memory_table

    lines = [
        "# learn2invert demo: single-coil MRI with the shipped models",
        "",
        f"Command: `l2i demo --steps {fine_tune['steps']}` ({seconds / 60:.1f} min wall time on this machine, "
        f"torch {torch.__version__}, torch threads: {torch.get_num_threads()}). Every quality and memory number below is "
        "independent of the machine's load (no step of this demo runs against a clock); only the times are not.",
        "",
        "Data: 64x64 complex slices of the MNI152 template (nilearn) with random smooth phase, held-out "
        "test slab; and pydicom's real MR slice `MR_small.dcm` (magnitude, scaled to [0, 1]), never "
        "trained on. Physics: random 1D Cartesian masks (8% centre at 4x, 4% at 8x), a new mask per "
        "slice, complex Gaussian k-space noise sigma 0.005.",
        "",
        "## Shipped models",
        "",
        "| model | parameters | optimiser steps | trained on |",
        "|---|---:|---:|---|",
    ]
    for name, info in cards.items():
        lines.append(f"| {name} | {info['parameters']:,} | {info['optimiser_steps']} | {info.get('data', '')} |")
    for test, result in results.items():
        lines += ["", f"## {test}", "", markdown_table(result), "",
                  f"TV weight {result['tv_weight']:.3g}, chosen on the validation slices; {result['samples']} "
                  "reconstructions scored. PSNR/SSIM use each image's maximum as peak (fastMRI convention), "
                  "on magnitude images."]
    lines += ["", "![reconstructions](reconstructions.png)", "", "![real MR](real_mr.png)", "",
              "## PSNR vs iteration (test slices, 4x)", "", "![psnr vs iteration](psnr_vs_iteration.png)", "",
              "| t | " + " | ".join(curves) + " |", "|---|" + "---:|" * len(curves)]
    for t in range(max((len(v) for v in curves.values()), default=0)):
        lines.append(f"| {t + 1} | " + " | ".join(f"{v[t]:.2f}" if t < len(v) else "" for v in curves.values()) + " |")
    lines += ["", f"## Fine-tuning {fine_tune['model']} for {fine_tune['steps']} steps (4x)", "",
              f"Validation PSNR {fine_tune['val_psnr_before']:.2f} dB before, {fine_tune['val_psnr_after']:.2f} dB after; "
              f"{fine_tune['seconds']:.0f} s. Command: `{fine_tune['command']}`.", "",
              "## Training memory of one step (batch 4, 64x64, T = 8)", "", memory_table(memory), "",
              "Peak = resident memory above the level before the step, measured in a fresh process "
              "(`learn2invert.bench.memory`); saved = bytes autograd kept for the backward pass.", ""]
    return "\n".join(lines)


def _fine_tune(model: str, folder: Path, out: Path, steps: int, seed: int, show_progress: bool) -> dict:
    """Train a shipped model further at 4x for a fixed number of steps; returns what the report shows."""
    from .train.loop import train

    run_dir = out / f"fine_tune_{model}"
    if (run_dir / "train_state.safetensors").exists():
        raise ValueError(f"{run_dir} already holds a run; remove {out} or pass another --out")
    overrides = (f"seed={seed}", f"train.init_weights={folder}", f"train.max_steps={steps}", f"train.val_every={steps}",
                 "train.schedule={name: none}", "train.optimizer={name: adam, lr: 0.0001}", "operator.acceleration=4")
    started = time.perf_counter()
    result = train(folder / "config.yaml", run_dir, overrides=overrides, show_progress=show_progress)
    return {"model": model, "steps": steps, "seconds": time.perf_counter() - started,
            "val_psnr_after": result["epochs"][-1]["val_psnr"],
            "command": f"l2i train {folder / 'config.yaml'} --out {run_dir} " + " ".join(f"--set '{o}'" for o in overrides)}


def run_demo(out: str | Path = "runs/demo", steps: int = 20, seed: int = 0, show_progress: bool = True) -> dict:
    """Evaluate the shipped models, fine-tune one, report; returns ``{"metrics", "report", "seconds"}``."""
    from . import pretrained
    from .bench.compare import compare, plot_example

    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = shipped_mri_models()
    cards = {model: pretrained.card(folder.name) for model, folder in runs.items()}
    results = {}
    for test, overrides, test_overrides in TESTS:
        if test_overrides and not _has_pydicom():
            print(f"skipping '{test}': pydicom is not installed (pip install 'learn2invert[dicom]')")
            continue
        if show_progress:
            print(f"{test}: zero-filled, TV and {', '.join(runs)} ...", flush=True)
        results[test] = compare(runs, tv_iterations=TV_ITERATIONS, tv_grid=TV_GRID, show_progress=show_progress,
                                tv_validation_samples=TV_VALIDATION_SLICES, overrides=overrides,
                                test_overrides=test_overrides)
    plot_example(results["test slices 4x"], out / "reconstructions.png")
    if "real MR 4x" in results:
        plot_example(results["real MR 4x"], out / "real_mr.png")
    curves = _psnr_curves(runs, 4.0)
    baselines = {m: results["test slices 4x"]["methods"][m]["psnr"]["mean"] for m in ("zero-filled", "tv")}
    _plot_curves(curves, baselines, out / "psnr_vs_iteration.png")
    model = "irim" if "irim" in runs else next(iter(runs))
    if show_progress:
        print(f"fine-tuning {model} for {steps} steps ...", flush=True)
    fine_tune = _fine_tune(model, runs[model], out, steps, seed, show_progress)
    fine_tune["val_psnr_before"] = _validation_psnr(runs[model], 4.0)
    if show_progress:
        print("measuring training memory ...", flush=True)
    memory = _memory_records(torch.get_num_threads())
    metrics = {test: {m: {k: v["mean"] for k, v in s.items()} for m, s in r["methods"].items()}
               for test, r in results.items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    seconds = time.perf_counter() - started
    report = out / "report.md"
    report.write_text(_report(results, curves, memory, cards, fine_tune, seconds))
    return {"metrics": metrics, "report": str(report), "seconds": seconds}


def _has_pydicom() -> bool:
    try:
        import pydicom  # noqa: F401
    except ImportError:
        return False
    return True


def _validation_psnr(folder: Path, acceleration: float) -> float:
    """Mean validation PSNR of a run's best weights at ``acceleration`` (what fine-tuning starts from)."""
    from .train.validate import validate

    solver, config, val, measurement = _at_acceleration(folder, acceleration, "val")
    return validate(solver, val, measurement, config, torch.device("cpu"))["psnr"]


def main_summary(result: dict) -> str:
    """The last lines `l2i demo` prints: the headline numbers per test and where the report is."""
    lines = []
    for test, methods in result["metrics"].items():
        lines.append(f"{test}:")
        lines += [f"{m:>14}: PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f}, NMSE {s['nmse']:.4f}" for m, s in methods.items()]
    return "\n".join(lines + [f"report: {result['report']} ({result['seconds'] / 60:.1f} min)"])


__all__ = ["run_demo", "main_summary", "shipped_mri_models"]
