"""The main demo (``make demo`` / ``l2i demo``): learned MRI reconstruction on embedded brain slices.

In a fixed CPU budget it trains the i-RIM, the RIM and a U-Net for 4x single-coil MRI on the
MNI152 brain slices that ship with nilearn (no download), from the configs
``configs/mri_{irim,rim,unet}_4x.yaml`` with a time limit per model; scores them on the held-out
test slices against zero-filled and TV reconstructions (TV weight chosen on the validation
slices); measures the training memory of one step of each model; and writes into the output
folder ``report.md``, ``metrics.json`` (``{method: {"psnr", "ssim", "nmse"}}``),
``reconstructions.png``, ``psnr_vs_iteration.png`` and the trained runs.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MODELS = ("irim", "rim", "unet")
# Share of the training budget per model; the rest of --minutes goes to evaluation and memory.
TRAIN_SHARE = {"irim": 0.35, "rim": 0.30, "unet": 0.10}
# TV weight candidates around the weight a 7-value grid picked on this problem (3.2e-3), scored on
# 8 validation slices to keep the demo's evaluation to about a minute.
TV_GRID = [3e-4, 1e-3, 3e-3, 1e-2, 3e-2]
TV_ITERATIONS = 100
TV_VALIDATION_SLICES = 8


def _config(model: str) -> Path:
    path = CONFIGS / f"mri_{model}_4x.yaml"
    if not path.is_file():
        raise ValueError(f"{path} not found: the demo runs from a source checkout (pip install -e .)")
    return path


def _memory_records(threads: int) -> list[dict]:
    """Peak memory of one training step of each demo model (fresh subprocesses, batch 4, 64x64)."""
    from .bench.memory import run_grid

    base = {"dims": 2, "batch": 4, "image_size": 64, "depth": 1, "state_channels": 32, "hidden_channels": 32,
            "threads": threads, "steps": 8}
    specs = [{**base, "model": "rim", "memory_mode": "autograd", "layers": 5},
             {**base, "model": "irim", "memory_mode": "autograd", "layers": 6},
             {**base, "model": "irim", "memory_mode": "invertible", "layers": 6}]
    return run_grid(specs, show_progress=False)


def _psnr_curves(runs: dict[str, Path]) -> dict[str, list[float]]:
    from .train.experiment import build_dataset
    from .train.loop import load_solver
    from .train.validate import score_dataset

    curves = {}
    for name, run_dir in runs.items():
        solver, config, measurement, _ = load_solver(run_dir)
        if name == "unet":
            continue
        # Batches of 8, as in the comparison, so both see the same masks and noise.
        scores = score_dataset(solver, build_dataset(config, "test"), measurement, torch.device("cpu"), batch_size=8,
                               every_iterate=True, data_range=config["data"]["data_range"])
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


def _report(result: dict, curves: dict, memory: list[dict], train_info: dict, minutes: float, seconds: float) -> str:
    from .bench.compare import markdown_table
    from .bench.memory import markdown_table as memory_table

    lines = [
        "# learn2invert demo: 4x single-coil MRI on embedded brain slices",
        "",
        f"Command: `l2i demo --minutes {minutes:g}` ({seconds / 60:.1f} min wall time on this machine, "
        f"torch {torch.__version__}, torch threads: {torch.get_num_threads()}).",
        "",
        "Data: MNI152 template slices (nilearn), 64x64 complex images with random smooth phase; "
        f"{result['samples']} held-out test slices. Physics: random 1D Cartesian masks, 4x, 8% centre, "
        "a new mask per slice, complex Gaussian k-space noise sigma 0.005.",
        "",
        "## Reconstruction quality (test slices)",
        "",
        markdown_table(result),
        "",
        f"TV weight {result['tv_weight']:.3g}, chosen on the validation slices. PSNR/SSIM use each slice's "
        "maximum as peak (fastMRI convention), on magnitude images.",
        "",
        "![reconstructions](reconstructions.png)",
        "",
        "## Training",
        "",
        "| model | parameters | epochs | optimisation steps | training time (s) | last validation PSNR (dB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, info in train_info.items():
        lines.append(f"| {name} | {info['parameters']:,} | {info['epochs']} | {info['steps']} | {info['seconds']:.0f} | "
                     f"{info['val_psnr']:.2f} |")
    lines += ["", "## PSNR vs iteration", "", "![psnr vs iteration](psnr_vs_iteration.png)", "",
              "| t | " + " | ".join(curves) + " |", "|---|" + "---:|" * len(curves)]
    for t in range(max(len(v) for v in curves.values())):
        lines.append(f"| {t + 1} | " + " | ".join(f"{v[t]:.2f}" if t < len(v) else "" for v in curves.values()) + " |")
    lines += ["", "## Training memory of one step (batch 4, 64x64, T = 8)", "", memory_table(memory), "",
              "Peak = resident memory above the level before the step, measured in a fresh process "
              "(`learn2invert.bench.memory`); saved = bytes autograd kept for the backward pass.", ""]
    return "\n".join(lines)


def run_demo(out: str | Path = "runs/demo", minutes: float = 10.0, seed: int = 0, models: tuple[str, ...] = MODELS,
             show_progress: bool = True) -> dict:
    """Train, evaluate and report; returns ``{"metrics": {...}, "report": path}``. See the module docstring."""
    from .bench.compare import compare, plot_example
    from .train.loop import train

    if minutes <= 0:
        raise ValueError(f"--minutes must be > 0, got {minutes}")
    unknown = set(models) - set(MODELS)
    if unknown:
        raise ValueError(f"unknown demo models {sorted(unknown)} (choose from {', '.join(MODELS)})")
    started = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs, train_info = {}, {}
    for name in models:
        run_dir = out / name
        if (run_dir / "train_state.safetensors").exists():
            raise ValueError(f"{run_dir} already holds a run; remove {out} or pass another --out")
        limit = TRAIN_SHARE[name] * minutes
        if show_progress:
            print(f"training {name} for {limit:.1f} min ...", flush=True)
        result = train(_config(name), run_dir, overrides=(f"seed={seed}", "train.epochs=1000",
                                                          f"train.time_limit_minutes={limit}"),
                       show_progress=show_progress)
        history = result["epochs"]
        from .train.loop import load_solver

        solver = load_solver(run_dir)[0]
        train_info[name] = {"parameters": sum(p.numel() for p in solver.parameters()), "epochs": len(history),
                            "steps": history[-1]["global_step"], "seconds": sum(e["seconds"] for e in history),
                            "val_psnr": history[-1]["val_psnr"]}
        runs[name] = run_dir
    if show_progress:
        print("evaluating on the test slices (zero-filled, TV, learned) ...", flush=True)
    result = compare(runs, tv_iterations=TV_ITERATIONS, tv_grid=TV_GRID, show_progress=show_progress,
                     tv_validation_samples=TV_VALIDATION_SLICES)
    plot_example(result, out / "reconstructions.png")
    curves = _psnr_curves(runs)
    baselines = {m: result["methods"][m]["psnr"]["mean"] for m in ("zero-filled", "tv") if m in result["methods"]}
    if "unet" in result["methods"]:
        baselines["unet"] = result["methods"]["unet"]["psnr"]["mean"]
    _plot_curves(curves, baselines, out / "psnr_vs_iteration.png")
    if show_progress:
        print("measuring training memory ...", flush=True)
    memory = _memory_records(torch.get_num_threads())
    metrics = {m: {k: v["mean"] for k, v in s.items()} for m, s in result["methods"].items()}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    seconds = time.perf_counter() - started
    report = out / "report.md"
    report.write_text(_report(result, curves, memory, train_info, minutes, seconds))
    return {"metrics": metrics, "report": str(report), "seconds": seconds}


def main_summary(result: dict) -> str:
    """The last lines `l2i demo` prints: where the report is and the headline numbers."""
    lines = [f"{m:>12}: PSNR {s['psnr']:.2f} dB, SSIM {s['ssim']:.4f}, NMSE {s['nmse']:.4f}" for m, s in result["metrics"].items()]
    return "\n".join(lines + [f"report: {result['report']} ({result['seconds'] / 60:.1f} min)"])


__all__ = ["run_demo", "main_summary"]
