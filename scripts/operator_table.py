"""Score trained runs on every operator of a config: the short tables of multi-operator training.

Each run (``NAME=RUN_DIR``) reconstructs the same held-out images under each operator of
``--operators`` (an operator mixture, or a single-operator config), with the same simulated
noise for every run (``l2i eval``'s fixed seed); a run trained on one operator is thereby also
scored on the others. Writes ``STEM.md`` (mean PSNR / SSIM per operator and their mean) and
``STEM.json`` (the per-sample numbers too).

    python scripts/operator_table.py --operators configs/rim_3task.yaml \\
        rim_3task=runs/rim_3task gaussian_only=runs/fig2_gaussian_p2_rim --samples 1024 --out docs/benchmarks/rim_3task

Operator settings can be overridden as in ``l2i train`` (``--set KEY=VALUE``), e.g. fixed noise
levels for a denoiser trained over a range::

    python scripts/operator_table.py --operators configs/pretrained/denoise_rim.yaml --set operator.name=mixture \\
        --set 'operator.mixture=[{label: s15, name: denoising, noise_sigma: 0.0588235}, {label: s25, name: denoising, noise_sigma: 0.0980392}, {label: s50, name: denoising, noise_sigma: 0.1960784}]' \\
        one_rim=runs/pretrained/denoise_rim --out docs/benchmarks/rim_denoise_sigma15_50
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from learn2invert.train.config import load_config
from learn2invert.train.datasets import build_dataset
from learn2invert.operators.generator import Measurement
from learn2invert.inference import load_solver
from learn2invert.train.validate import score_dataset


def operator_table(operators_config: str | Path, runs: dict[str, str | Path], overrides: tuple[str, ...] = (),
                   samples: int | None = None, split: str = "test", batch_size: int = 16) -> dict:
    """``{"operators": [labels], "split", "samples", "rows": {name: {label: {"psnr", "ssim"} (means),
    "mean": {"psnr", "ssim"}, "per_sample": {label: {"psnr": [...], "ssim": [...]}}}}}``; the row
    ``"adjoint A^T y"`` scores the back-projection (the same for every run)."""
    config = load_config(operators_config, overrides)
    if samples is not None:
        config["data"]["val_length"] = int(samples)
    dataset = build_dataset(config, split)
    if len(dataset) == 0:
        raise ValueError(f"the {split} split of {operators_config} is empty")
    shape = tuple(dataset[0].shape)
    measurement = Measurement(config, shape)
    components = getattr(measurement, "components", None) or [measurement]
    labels = getattr(measurement, "labels", None) or [config["operator"]["name"]]
    data_range = config["data"]["data_range"]
    rows: dict[str, dict] = {}
    adjoint: dict[str, dict] = {}
    for name, run_dir in runs.items():
        solver, _, _, run_shape = load_solver(run_dir)
        if tuple(run_shape) != shape:
            raise ValueError(f"{name}={run_dir} was trained on images of shape {tuple(run_shape)}; the images of "
                             f"{operators_config} have shape {shape}")
        row: dict = {"per_sample": {}}
        for label, component in zip(labels, components):
            scores = score_dataset(solver, dataset, component, torch.device("cpu"), batch_size=batch_size,
                                   data_range=data_range)
            row[label] = {k: float(scores["last"][k].mean()) for k in ("psnr", "ssim")}
            row["per_sample"][label] = {k: scores["last"][k].tolist() for k in ("psnr", "ssim")}
            adjoint[label] = {k: float(scores["adjoint"][k].mean()) for k in ("psnr", "ssim")}
        rows[name] = row
    rows["adjoint A^T y"] = dict(adjoint)
    for row in rows.values():
        row["mean"] = {k: sum(row[label][k] for label in labels) / len(labels) for k in ("psnr", "ssim")}
    return {"operators": labels, "split": split, "samples": len(dataset), "config": str(operators_config),
            "overrides": list(overrides), "rows": rows}


def markdown(result: dict) -> str:
    labels = result["operators"]
    lines = [f"Mean PSNR (dB) / SSIM on {result['samples']} {result['split']} images of `{result['config']}`"
             + (f" with {' '.join(result['overrides'])}" if result["overrides"] else "")
             + "; every row sees the same images and noise.", "",
             "| model | " + " | ".join(labels) + " | mean |", "|---|" + "---:|" * (len(labels) + 1)]
    for name, row in result["rows"].items():
        cells = [f"{row[label]['psnr']:.2f} / {row[label]['ssim']:.4f}" for label in labels + ["mean"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", metavar="NAME=RUN_DIR", help="trained run folders to score")
    parser.add_argument("--operators", required=True, help="config whose operator(s) and data to score on")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a key of --operators (repeatable)")
    parser.add_argument("--samples", type=int, default=None, help="held-out images (default: data.val_length)")
    parser.add_argument("--split", default="test", choices=("test", "val"))
    parser.add_argument("--out", required=True, help="output stem: STEM.md and STEM.json")
    args = parser.parse_args(argv)
    runs = {}
    for item in args.runs:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            parser.error(f"runs are given as NAME=RUN_DIR, got {item!r}")
        runs[name] = path
    result = operator_table(args.operators, runs, tuple(args.overrides), args.samples, args.split)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(markdown(result))
    sys.stdout.write(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
