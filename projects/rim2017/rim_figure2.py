"""RIM paper Figure 2 at laptop scale: PSNR of every iterate for RIM, FFN and GDN.

Reads run folders written by ``l2i train`` and scored by ``l2i eval RUN --steps 40 --out RUN/eval_T40.json``
and writes a JSON file, a Markdown table and a PSNR-vs-iteration figure::

    python projects/rim2017/rim_figure2.py --runs runs/fig2_gaussian_p2_rim runs/fig2_gaussian_p2_ffn \\
        runs/fig2_gaussian_p2_gdn --out projects/rim2017/results/rim_figure2

For each run it takes the solver variant (``solver.params.variant``), the training horizon T
(``solver.params.steps``) and the task (random-projection ensemble, reduction p, noise) from
``config.yaml``; the per-iterate mean PSNR and the back-projection ``A^T y`` from the eval JSON;
the training time from ``history.json`` (sum of the per-epoch training loops) and, if the run
folder holds one, from ``wall.json`` (``{"train_command", "train_wall_s", "eval_command",
"eval_wall_s"}``, written by ``projects/rim2017/run.py``), the wall time of the whole
``l2i train`` process and the exact commands. Runs of different tasks (ensemble / p) get one
table and one panel each.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
from pathlib import Path

import yaml

REPORT_STEPS = (1, 5, 10, 20, 30, 40)
VARIANT_ORDER = {"rim": 0, "ffn": 1, "gdn": 2}
COLORS = {"rim": "tab:blue", "ffn": "tab:orange", "gdn": "tab:green"}


def _task(config: dict) -> tuple[str, str]:
    """(key, human-readable label) of a run's measurement task."""
    op = config["operator"]
    params = op.get("params", {})
    kind = params.get("kind", "gaussian")
    reduction = params.get("reduction")
    if reduction is None and "m" in params:
        reduction = f"n/{params['m']}"
    sigma = op["noise_sigma"]
    noise = f"sigma={sigma:.4g}"
    if params.get("normalize") and reduction is not None and not isinstance(reduction, str):
        channels = 1 if config["data"].get("grey", True) else 3
        m = round(channels * config["data"]["patch_size"] ** 2 / float(reduction))
        if isinstance(sigma, float) and abs(sigma * math.sqrt(m) - 1) < 1e-6:
            noise = f"sigma=1/sqrt(m)=1/sqrt({m}) (normalised A; the paper's sigma=1)"
        else:
            noise += " (normalised A)"
    label = f"{kind}, p={reduction}, {noise}"
    return f"{kind}_p{reduction}", label


def _param_count(run_dir: Path) -> int | None:
    path = run_dir / "model.safetensors"
    if not path.is_file():
        return None
    from safetensors import safe_open

    total = 0
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            if key.endswith(("running_mean", "running_var", "num_batches_tracked")) or key.startswith("operator"):
                continue
            total += math.prod(f.get_slice(key).get_shape())
    return total


def load_run(run_dir: str | Path, eval_name: str = "eval_T40.json") -> dict:
    """Everything the report needs from one run folder."""
    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    evaluation = json.loads((run_dir / eval_name).read_text())
    if "per_iterate" not in evaluation:
        raise ValueError(f"{run_dir / eval_name} has no per-iterate scores: run `l2i eval {run_dir} --steps 40 --out ...`")
    history = json.loads((run_dir / "history.json").read_text())
    wall = json.loads((run_dir / "wall.json").read_text()) if (run_dir / "wall.json").is_file() else {}
    solver = config["solver"]["params"]
    key, label = _task(config)
    curve = evaluation["per_iterate"]["psnr"]
    return {
        "run_dir": str(run_dir),
        "variant": solver.get("variant", "rim"),
        "task": key,
        "task_label": label,
        "train_steps_T": int(solver.get("steps", 20)),
        "solver_params": solver,
        "parameters": _param_count(run_dir),
        "train": {
            "epochs": len(history),
            "optimizer_steps": history[-1]["global_step"] if history else 0,
            "patches_seen": len(history) * config["data"]["train_length"] // config["train"]["batch_size"]
            * config["train"]["batch_size"],
            "batch_size": config["train"]["batch_size"],
            "lr": config["train"]["optimizer"].get("lr"),
            "loop_s": sum(h["seconds"] for h in history),
            "wall_s": wall.get("train_wall_s"),
            "command": wall.get("train_command"),
            "final_val_psnr": history[-1]["val_psnr"] if history else None,
        },
        "eval": {
            "split": evaluation["split"],
            "samples": evaluation["samples"],
            "file": str(run_dir / eval_name),
            "command": wall.get("eval_command"),
            "wall_s": wall.get("eval_wall_s"),
            "psnr_per_iterate": curve,
            "psnr_last_std": evaluation["psnr"]["std"],
            "ssim_per_iterate": evaluation["per_iterate"]["ssim"],
            "adjoint_psnr": evaluation["adjoint"]["psnr"]["mean"],
            "adjoint_psnr_std": evaluation["adjoint"]["psnr"]["std"],
        },
    }


def tikhonov_baseline(run_dir: str | Path, samples: int, split: str = "test", batch_size: int = 16,
                      lams: tuple[float, ...] = (1e-3, 1e-2, 3e-2, 1e-1, 3e-1, 1.0, 3.0, 10.0, 30.0, 100.0),
                      iterations: int = 100) -> dict:
    """Classical reference: smoothness-regularised least squares ``argmin ||A x - y||^2 + lam ||grad x||^2``.

    ``lam`` is picked on the run's validation patches (crops of the training photographs); the
    score is on exactly the measurements ``l2i eval`` used (same patches, batches and noise: the
    evaluation generator is replayed), checked by reproducing its back-projection PSNR.
    """
    import torch

    from learn2invert.solvers.classical import tikhonov
    from learn2invert.train.datasets import build_dataset
    from learn2invert.inference import load_solver
    from learn2invert.train.validate import EVAL_SEED, score_batch
    from torch.utils.data import DataLoader

    _, config, measurement, _ = load_solver(run_dir)
    data_range = config["data"]["data_range"]

    def scores(dataset, lam_values):
        generator = torch.Generator().manual_seed(EVAL_SEED)
        out = {lam: [] for lam in lam_values}
        adjoint = []
        for x in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            y, op, _ = measurement(x, generator)
            adjoint.append(score_batch(op.A_adjoint(y), x, data_range)["psnr"])
            for lam in lam_values:
                estimate = tikhonov(op, y, lam, "gradient", iterations=iterations)
                out[lam].append(score_batch(estimate, x, data_range)["psnr"])
        return {lam: torch.cat(v) for lam, v in out.items()}, torch.cat(adjoint)

    with torch.no_grad():
        val, _ = scores(build_dataset(config, "val"), lams)
        best = max(lams, key=lambda lam: float(val[lam].mean()))
        config["data"]["val_length"] = samples
        test, adjoint = scores(build_dataset(config, split), (best,))
    return {"lam": best, "iterations": iterations, "val_psnr": {str(k): float(v.mean()) for k, v in val.items()},
            "psnr": float(test[best].mean()), "psnr_std": float(test[best].std(unbiased=False)),
            "adjoint_psnr_check": float(adjoint.mean())}


def _at(curve: list[float], step: int) -> float | None:
    return curve[step - 1] if step <= len(curve) else None


def summarize(runs: list[dict], baselines: dict[str, dict] | None = None) -> dict:
    tasks: dict[str, dict] = {}
    for run in sorted(runs, key=lambda r: (r["task"], VARIANT_ORDER.get(r["variant"], 9))):
        task = tasks.setdefault(run["task"], {"label": run["task_label"], "models": {}, "adjoint_psnr": None})
        curve = run["eval"]["psnr_per_iterate"]
        best = max(range(len(curve)), key=lambda i: curve[i])
        T = run["train_steps_T"]
        task["models"][run["variant"]] = {
            **run,
            "psnr_at": {str(s): _at(curve, s) for s in REPORT_STEPS},
            "best": {"step": best + 1, "psnr": curve[best]},
            "change_after_T": (curve[-1] - curve[T - 1]) if len(curve) >= T else None,
        }
        # The back-projection does not depend on the model: every run of a task sees the same
        # test patches and noise (fixed evaluation seed), so they agree; keep the first.
        if task["adjoint_psnr"] is None:
            task["adjoint_psnr"] = run["eval"]["adjoint_psnr"]
            task["adjoint_psnr_std"] = run["eval"]["adjoint_psnr_std"]
    for key, baseline in (baselines or {}).items():
        tasks[key]["tikhonov"] = baseline
    return {
        "description": "RIM paper (Putzky & Welling 2017) Figure 2 at laptop scale: mean PSNR (dB) of every "
                       "iterate on held-out 32x32 grey patches of the test photographs",
        "report_steps": list(REPORT_STEPS),
        "machine": f"{platform.machine()} CPU, {platform.python_implementation()} {platform.python_version()}",
        "tasks": tasks,
    }


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def markdown(summary: dict) -> str:
    lines = ["# RIM paper Figure 2 at laptop scale", "",
             "Mean PSNR (dB) of iterate t on held-out patches of the test photographs, "
             "generated by `python projects/rim2017/rim_figure2.py` from the runs below.", ""]
    for task in summary["tasks"].values():
        models = task["models"]
        first = next(iter(models.values()))
        T = first["train_steps_T"]
        lines += [f"## {task['label']}", "",
                  f"{first['eval']['samples']} test patches ({first['eval']['split']} split), "
                  f"models trained with T = {T} iterations.", "",
                  "| method | " + " | ".join(f"t={s}" for s in REPORT_STEPS) + " | best (t) | t=40 minus t=T |",
                  "|---|" + "---:|" * (len(REPORT_STEPS) + 2)]
        for variant, m in models.items():
            cells = [_fmt(m["psnr_at"][str(s)]) for s in REPORT_STEPS]
            lines.append(f"| {variant.upper()} | " + " | ".join(cells)
                         + f" | {m['best']['psnr']:.2f} ({m['best']['step']}) | {_fmt(m['change_after_T'], 2)} |")
        adj = task["adjoint_psnr"]
        lines.append("| back-projection A^T y | " + " | ".join(_fmt(adj) for _ in REPORT_STEPS) + " | – | – |")
        if "tikhonov" in task:
            tk = task["tikhonov"]
            lines.append(f"| Tikhonov, lam={tk['lam']:g} (not iterative) | "
                         + " | ".join(_fmt(tk["psnr"]) for _ in REPORT_STEPS) + " | – | – |")
        lines += ["", "| model | parameters | epochs x patches | optimiser steps | lr | training wall time | "
                      "training loop | val PSNR after training |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for variant, m in models.items():
            t = m["train"]
            wall = "–" if t["wall_s"] is None else f"{t['wall_s'] / 60:.1f} min ({t['wall_s']:.0f} s)"
            lines.append(f"| {variant.upper()} | {m['parameters'] or '–'} | {t['epochs']} x "
                         f"{t['patches_seen'] // max(1, t['epochs'])} | {t['optimizer_steps']} | {t['lr']} | {wall} | "
                         f"{t['loop_s']:.0f} s | {_fmt(t['final_val_psnr'])} |")
        commands = [m["train"]["command"] for m in models.values() if m["train"]["command"]]
        commands += [m["eval"]["command"] for m in models.values() if m["eval"]["command"]]
        if commands:
            lines += ["", "Commands (run from the repository root, one after another):", "", "```bash", *commands, "```"]
        lines.append("")
    if summary.get("command"):
        lines += ["Report:", "", "```bash", summary["command"], "```", ""]
    if summary.get("notes"):
        lines += [summary["notes"].rstrip(), ""]
    return "\n".join(lines)


def figure(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary["tasks"].values())
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.6 * len(tasks), 4.4), squeeze=False)
    for ax, task in zip(axes[0], tasks):
        T = None
        lowest = min(min(m["eval"]["psnr_per_iterate"]) for m in task["models"].values())
        for variant, m in task["models"].items():
            curve = m["eval"]["psnr_per_iterate"]
            ax.plot(range(1, len(curve) + 1), curve, marker=".", markersize=4, color=COLORS.get(variant),
                    label=variant.upper())
            T = m["train_steps_T"]
        if "tikhonov" in task:
            lowest = min(lowest, task["tikhonov"]["psnr"])
        bottom = math.floor(lowest) - 2
        if task["adjoint_psnr"] >= bottom:
            ax.axhline(task["adjoint_psnr"], color="gray", linestyle=":", label="back-projection $A^T y$")
        else:  # far below the curves: named, not drawn, so the axis keeps the curves readable
            ax.plot([], [], " ", label=f"back-projection $A^T y$: {task['adjoint_psnr']:.1f} dB (off axis)")
        ax.set_ylim(bottom=bottom)
        if "tikhonov" in task:
            ax.axhline(task["tikhonov"]["psnr"], color="tab:red", linestyle="-.", linewidth=1,
                       label=f"Tikhonov, lam={task['tikhonov']['lam']:g} (val.-chosen)")
        if T is not None:
            ax.axvline(T, color="black", linestyle="--", linewidth=1, label=f"training horizon T={T}")
        ax.set_title(task["label"].replace(" (normalised", "\n(normalised"), fontsize=8)
        ax.set_xlabel("iteration t")
        ax.set_ylabel("mean PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", nargs="+", required=True, help="run folders (RIM, FFN, GDN; any number of tasks)")
    parser.add_argument("--eval-name", default="eval_T40.json", help="eval JSON inside each run folder")
    parser.add_argument("--out", default="runs/bench/rim_figure2",
                        help="output stem: writes STEM.json, STEM.md and STEM.png (the README's table: --out projects/rim2017/results/rim_figure2)")
    parser.add_argument("--notes", help="Markdown file appended to STEM.md (setup and discussion)")
    parser.add_argument("--tikhonov", action="store_true",
                        help="also score smoothness-regularised least squares on the same test measurements")
    args = parser.parse_args(argv)
    runs = [load_run(r, args.eval_name) for r in args.runs]
    baselines = {}
    if args.tikhonov:
        for run in runs:
            if run["task"] not in baselines:
                baselines[run["task"]] = tikhonov_baseline(run["run_dir"], run["eval"]["samples"], run["eval"]["split"])
    summary = summarize(runs, baselines)
    summary["command"] = "python projects/rim2017/rim_figure2.py --runs " + " ".join(args.runs) + (
        f" --eval-name {args.eval_name}" if args.eval_name != "eval_T40.json" else "") + f" --out {args.out}" + (
        f" --notes {args.notes}" if args.notes else "") + (" --tikhonov" if args.tikhonov else "")
    if args.notes:
        summary["notes"] = Path(args.notes).read_text()
    stem = Path(args.out)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(summary))
    figure(summary, stem.with_suffix(".png"))
    print(markdown(summary))


if __name__ == "__main__":
    main()
