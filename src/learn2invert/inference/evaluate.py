"""``l2i eval``: score a trained run on held-out data and write JSON, Markdown and figures."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .. import shipped
from ..checkpoint import atomic_write_text
from ..data.items import split_item, stack_items
from ..operators.likelihood import back_projection
from ..outputs import OutputPathError, check_output_file
from ..train.datasets import build_dataset
from ..train.validate import EVAL_SEED, magnitude, score_dataset
from .load import load_solver

METRICS = ("psnr", "ssim", "nmse")


def _stats(values: torch.Tensor) -> dict:
    return {"mean": float(values.mean()), "std": float(values.std(unbiased=False)), "per_sample": values.tolist()}


def _is_shipped(run_dir: Path) -> bool:
    return shipped.ROOT in run_dir.resolve().parents


def evaluate_run(run_dir: str | Path, split: str = "test", steps: int | None = None, out: str | Path | None = None,
                 batch_size: int = 16, length: int | None = None) -> dict:
    """Evaluate the run's solver on ``split`` and write ``eval.json``, ``eval.md`` and figures.

    Args:
        run_dir: a folder written by ``l2i train``.
        split: data split to score ("test" by default; "val" also works).
        steps: number of solver iterations (default: the solver's training setting); with a
            value, every iterate is scored and a PSNR-vs-iteration curve is drawn.
        out: JSON path (default ``run_dir/eval.json``); the Markdown and PNGs go beside it.
        length: number of test samples (default: ``data.val_length`` of the config).

    Returns the JSON content: ``{"psnr": {"mean", "std", "per_sample"}, "ssim": ..., "nmse": ...,
    "adjoint": {...}, "per_iterate": {"psnr": [...], ...} (with steps)}``; datasets of volumes
    (fastMRI) add ``"per_volume": {"psnr": {"mean", "std", "per_sample"}, ..., "adjoint": {...},
    "volumes": count}``, fastMRI's volume-wise metrics (one peak per volume). An operator mixture
    (``operator.mixture``) scores the images under each of its operators: ``"per_operator":
    {label: {"psnr": ..., "adjoint": ..., "per_iterate": ... (with steps)}}``, and the top-level
    blocks pool all operators' samples (so their means are the plain means over the operators).
    """
    run_dir = Path(run_dir)
    if length is not None and length < 1:
        raise ValueError(f"--samples must be >= 1, got {length}")
    if out is None and _is_shipped(run_dir):
        raise OutputPathError(f"{run_dir} is a shipped model inside the installed package; say where the scores go "
                              "with --out, e.g. --out eval/model.json")
    out_json = Path(out) if out is not None else run_dir / "eval.json"
    if run_dir.is_dir():  # a missing run folder is load_solver's to report
        # Before scoring: a folder given as --out, or a read-only folder, fails now in one line.
        check_output_file(out_json, "--out file" if out is not None else "output file", example="eval.json")
    solver, config, measurement, _ = load_solver(run_dir)
    if length is not None:
        config["data"]["val_length"] = length
    dataset = build_dataset(config, split)
    if len(dataset) == 0:
        raise ValueError(f"the {split} split of data.name={config['data']['name']} is empty (data.root="
                         f"{config['data']['root']!r}); nothing to score")
    components = getattr(measurement, "components", None)
    if components:  # an operator mixture: every operator scores the same images
        per_operator = {label: score_dataset(solver, dataset, component, torch.device("cpu"), batch_size=batch_size,
                                             steps=steps, every_iterate=steps is not None,
                                             data_range=config["data"]["data_range"])
                        for label, component in zip(measurement.labels, components)}
        scores = _pooled(list(per_operator.values()))
    else:
        scores = score_dataset(solver, dataset, measurement, torch.device("cpu"), batch_size=batch_size, steps=steps,
                               every_iterate=steps is not None, data_range=config["data"]["data_range"],
                               volume_ids=getattr(dataset, "volume_ids", None))
    result: dict = {k: _stats(scores["last"][k]) for k in METRICS}
    result["adjoint"] = {k: _stats(scores["adjoint"][k]) for k in METRICS}
    result["split"], result["samples"] = split, len(dataset)
    if components:
        # Per operator, then (above) all operators' samples pooled: with the same images for each,
        # the pooled mean is the plain mean of the operators' means.
        result["per_operator"] = {label: {**{k: _stats(sc["last"][k]) for k in METRICS},
                                          "adjoint": {k: _stats(sc["adjoint"][k]) for k in METRICS},
                                          **({"per_iterate": {k: sc["iterates"][k].mean(dim=1).tolist() for k in METRICS}}
                                             if steps is not None else {})}
                                  for label, sc in per_operator.items()}
    if "volumes" in scores:
        volumes = scores["volumes"]
        result["per_volume"] = {**{k: _stats(volumes["last"][k]) for k in METRICS},
                                "adjoint": {k: _stats(volumes["adjoint"][k]) for k in METRICS},
                                "volumes": len(volumes["ids"])}
    if steps is not None:
        result["per_iterate"] = {k: scores["iterates"][k].mean(dim=1).tolist() for k in METRICS}
    atomic_write_text(out_json, json.dumps(result, indent=2))
    atomic_write_text(out_json.with_suffix(".md"), markdown_table(result, config))
    # The figures of a mixture show its first operator.
    _figures(solver, dataset, components[0] if components else measurement, result, out_json.with_suffix(""), steps)
    return result


def _pooled(scores: list[dict]) -> dict:
    """The :func:`score_dataset` results of several operators on the same images, samples pooled."""
    keys = ("last", "adjoint")
    out = {name: {k: torch.cat([s[name][k] for s in scores]) for k in METRICS} for name in keys}
    if "iterates" in scores[0]:
        out["iterates"] = {k: torch.cat([s["iterates"][k] for s in scores], dim=1) for k in METRICS}
    return out


def markdown_table(result: dict, config: dict) -> str:
    lines = [
        f"Solver `{config['solver']['name']}` on `{config['data']['name']}` / `{config['operator']['name']}`, "
        f"split {result['split']}, {result['samples']} samples (mean ± std).",
        "",
        "| method | PSNR (dB) | SSIM | NMSE |",
        "|---|---:|---:|---:|",
    ]
    rows = [("adjoint A^T y", result["adjoint"]), (config["solver"]["name"], result)]
    for label, block in result.get("per_operator", {}).items():
        rows += [(f"adjoint A^T y, {label}", block["adjoint"]), (f"{config['solver']['name']}, {label}", block)]
    if "per_volume" in result:
        volume = result["per_volume"]
        rows += [(f"adjoint A^T y, per volume ({volume['volumes']})", volume["adjoint"]),
                 (f"{config['solver']['name']}, per volume ({volume['volumes']})", volume)]
    for name, block in rows:
        lines.append(f"| {name} | {block['psnr']['mean']:.2f} ± {block['psnr']['std']:.2f} | "
                     f"{block['ssim']['mean']:.4f} ± {block['ssim']['std']:.4f} | "
                     f"{block['nmse']['mean']:.4f} ± {block['nmse']['std']:.4f} |")
    if "per_operator" in result:
        labels = ", ".join(result["per_operator"])
        lines += ["", f"Operator mixture ({labels}): every operator measures the same images; the first two rows pool "
                  "all operators' samples (their mean is the plain mean over the operators)."]
    if "per_volume" in result:
        lines += ["", "Per volume: fastMRI's volume-wise metrics (PSNR and SSIM with the volume's peak, NMSE over "
                  "the volume) over each volume's scored slices."]
    return "\n".join(lines) + "\n"


@torch.no_grad()
def _figures(solver, dataset, measurement, result: dict, stem: Path, steps: int | None, n_show: int = 4) -> None:
    """``<stem>_grid.png`` (input / adjoint / estimate / truth / error) and ``<stem>_psnr.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n_show, len(dataset))
    x, kspace = split_item(stack_items([dataset[i] for i in range(n)]))
    own = {} if kspace is None else {"kspace": kspace}  # the items' own coil k-space (data.params.own_coils)
    y, op, sigma = measurement(x, torch.Generator().manual_seed(EVAL_SEED), **own)
    estimate = solver(y, op, sigma=sigma, steps=steps)[-1]
    adjoint = back_projection(op, y)  # A^T y; A_dagger(y) for nonlinear operators
    columns = [("adjoint A^T y", adjoint), ("estimate", estimate), ("truth", x)]
    if y.shape == x.shape:
        columns.insert(0, ("input y", y))

    def show(ax, img, title, **kw):
        img = magnitude(img)
        if img.dim() == 4 and img.shape[1] == 3:
            ax.imshow(img.permute(0, 2, 3, 1)[0].clamp(0, 1).numpy())
        else:
            plane = img[0, 0] if img.dim() == 4 else img[0, 0, img.shape[2] // 2]
            ax.imshow(plane.numpy(), cmap=kw.get("cmap", "gray"), vmin=kw.get("vmin"), vmax=kw.get("vmax"))
        ax.set_title(title, fontsize=8)
        ax.axis("off")

    fig, axes = plt.subplots(n, len(columns) + 1, figsize=(2 * (len(columns) + 1), 2 * n), squeeze=False)
    for i in range(n):
        for j, (title, img) in enumerate(columns):
            show(axes[i, j], img[i : i + 1], title if i == 0 else "")
        err = (magnitude(estimate[i : i + 1]) - magnitude(x[i : i + 1])).abs().mean(dim=1, keepdim=True)
        show(axes[i, -1], err, "|estimate - truth|" if i == 0 else "", cmap="magma", vmin=0, vmax=0.2)
    fig.tight_layout()
    fig.savefig(f"{stem}_grid.png", dpi=100)
    plt.close(fig)

    if "per_iterate" in result:
        fig, ax = plt.subplots(figsize=(4.5, 3))
        curve = result["per_iterate"]["psnr"]
        ax.plot(range(1, len(curve) + 1), curve, marker=".")
        ax.axhline(result["adjoint"]["psnr"]["mean"], color="gray", linestyle="--", label="adjoint")
        ax.set_xlabel("iteration")
        ax.set_ylabel("PSNR (dB)")
        ax.legend()
        fig.tight_layout()
        fig.savefig(f"{stem}_psnr.png", dpi=100)
        plt.close(fig)
