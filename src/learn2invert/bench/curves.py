"""Training curves of runs: validation PSNR against optimiser steps, ``l2i bench curves``.

Reads each run's ``history.json`` (one record per validation) and writes ``OUT.png`` (one line per
run, the best step marked), ``OUT.md`` (steps, validation PSNR / SSIM / loss at every validation)
and ``OUT.json``. Nothing is recomputed: these are the numbers the training loop logged.

    l2i bench curves irim=runs/pretrained/mri_irim rim=runs/pretrained/mri_rim --out docs/benchmarks/pretrained/curves
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def read_curves(runs: dict[str, str | Path]) -> dict[str, list[dict]]:
    """``{name: [{"step", "psnr", "ssim", "loss", "best_step"}, ...]}`` from each run's history."""
    curves = {}
    for name, run_dir in runs.items():
        path = Path(run_dir) / "history.json"
        if not path.is_file():
            raise ValueError(f"{path} does not exist: is {run_dir} a run folder of l2i train?")
        history = json.loads(path.read_text())
        if not history:
            raise ValueError(f"{path} holds no validation yet")
        curves[name] = [{"step": r["global_step"], "psnr": r.get("val_psnr"), "ssim": r.get("val_ssim"),
                         "loss": r.get("val_loss"), "best_step": r.get("best_step")} for r in history]
    return curves


def markdown_table(curves: dict[str, list[dict]]) -> str:
    lines = []
    for name, records in curves.items():
        best = records[-1]["best_step"]
        lines += [f"**{name}** (best validation loss at step {best}):", "", "| step | val PSNR (dB) | val SSIM | val loss |",
                  "|---:|---:|---:|---:|"]
        for r in records:
            mark = " (best)" if r["step"] == best else ""
            loss = f"{r['loss']:.5f}" if r["loss"] is not None else "–"
            lines.append(f"| {r['step']}{mark} | {r['psnr']:.2f} | {r['ssim']:.4f} | {loss} |")
        lines.append("")
    return "\n".join(lines)


def plot(curves: dict[str, list[dict]], path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for name, records in curves.items():
        line, = ax.plot([r["step"] for r in records], [r["psnr"] for r in records], "-o", markersize=3, label=name)
        best = [r for r in records if r["step"] == records[-1]["best_step"]]
        if best:
            ax.plot(best[0]["step"], best[0]["psnr"], "*", markersize=12, color=line.get_color())
    ax.set_xlabel("optimiser step")
    ax.set_ylabel("validation PSNR (dB)")
    ax.set_title(title or "validation PSNR during training (star: best validation loss)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    from .compare import named_runs

    parser = argparse.ArgumentParser(prog="l2i bench curves", description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR", help="runs to plot, e.g. irim=runs/pretrained/mri_irim")
    parser.add_argument("--out", required=True, help="output path without suffix (writes .png, .md, .json)")
    parser.add_argument("--title", default="", help="figure title")
    args = parser.parse_args(argv)
    runs = named_runs(args.runs)
    curves = read_curves(runs)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(curves, indent=1))
    out.with_suffix(".md").write_text(markdown_table(curves))
    plot(curves, out.with_suffix(".png"), args.title)
    print(markdown_table(curves))
    print(f"wrote {out.with_suffix('.png')} and its .md / .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
