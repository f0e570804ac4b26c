"""Trained solvers that ship inside the package, for reconstruction offline without training.

Each model is a folder next to this file, laid out like a run folder of ``l2i train`` so that
everything that takes a run folder takes it too (``l2i eval``, ``l2i reconstruct``,
``l2i bench compare``):

- ``config.yaml``: the resolved training config;
- ``model.safetensors``: the weights of the lowest validation loss (checksummed);
- ``card.json``: what the model is for, the exact training command, its optimiser steps, whether
  early stopping ended it, its parameter count and its measured metrics;
- ``README.md``: the same card for people.

Usage::

    from learn2invert import pretrained
    pretrained.available()                      # ['mri_irim', ...]
    solver = pretrained.load("mri_irim")         # an nn.Module in eval mode
    estimates = solver(y, operator, sigma=sigma)

From the shell: ``l2i pretrained list`` and ``l2i reconstruct --pretrained NAME INPUT OUTPUT``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

__all__ = ["PretrainedError", "available", "path", "card", "load", "load_with_config", "export", "card_from_comparisons"]

ROOT = Path(__file__).resolve().parent
REQUIRED = ("config.yaml", "model.safetensors", "card.json")


class PretrainedError(ValueError):
    """A shipped model is unknown, incomplete or corrupt; the message names the model and the file."""


def available() -> list[str]:
    """Names of the shipped models, sorted."""
    return sorted(p.name for p in ROOT.iterdir() if p.is_dir() and (p / "card.json").is_file())


def path(name: str) -> Path:
    """The folder of shipped model ``name`` (a run folder), after checking its files are there."""
    folder = ROOT / name
    if not name or "/" in name or not folder.is_dir():
        raise PretrainedError(f"no shipped model named {name!r}; available: {', '.join(available()) or 'none'}")
    for file in REQUIRED:
        if not (folder / file).is_file():
            raise PretrainedError(f"shipped model {name!r} is incomplete: {folder / file} is missing "
                                  "(reinstall learn2invert)")
    return folder


def card(name: str) -> dict:
    """The model card of ``name``: task, command, steps, parameters and metrics (see :func:`export`)."""
    file = path(name) / "card.json"
    try:
        return json.loads(file.read_text())
    except json.JSONDecodeError as err:
        raise PretrainedError(f"shipped model {name!r}: {file} is not valid JSON ({err})") from err


def load(name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The solver of shipped model ``name`` with its weights, in eval mode.

    Raises:
        PretrainedError: naming the file, if the model is unknown, a file is missing, or the
            weights are corrupt (checksum mismatch) or do not fit the config.
    """
    return load_with_config(name, device)[0]


def load_with_config(name: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """``(solver, resolved training config)`` of shipped model ``name`` (see :func:`load`)."""
    from ..checkpoint import CorruptCheckpoint
    from ..train.loop import load_solver

    folder = path(name)
    try:
        solver, config, _, _ = load_solver(folder, device, weights="last")
    except CorruptCheckpoint as err:
        raise PretrainedError(f"shipped model {name!r} has corrupt weights: {err} (reinstall learn2invert)") from err
    return solver, config


def export(run_dir: str | Path, name: str, info: dict, destination: str | Path | None = None,
           weights: str = "best") -> Path:
    """Copy a finished run's best (or last) weights and config into ``destination/name`` with its card.

    Args:
        run_dir: a run folder of ``l2i train`` (its ``best.safetensors`` is shipped when present).
        name: the model's name (a folder name).
        info: the card: at least ``task``, ``command`` and ``metrics``; the number of parameters,
            optimiser steps, best step and how training ended are read from the run and added.
        destination: where the model folders live (None: the package's own folder).
        weights: ``"best"`` (lowest validation loss) or ``"last"`` (the final step; for a model
            meant for data unlike its validation set, where that loss is the wrong guide).

    Returns:
        The model folder.
    """
    from ..checkpoint import read_safetensors, write_safetensors
    from ..train.loop import load_solver, weights_file

    run_dir = Path(run_dir)
    source = weights_file(run_dir, weights)
    solver, config, _, _ = load_solver(run_dir, "cpu", weights=weights)
    history = json.loads((run_dir / "history.json").read_text())
    folder = Path(destination if destination is not None else ROOT) / name
    folder.mkdir(parents=True, exist_ok=True)
    tensors, metadata = read_safetensors(source)
    metadata.pop("sha256", None)
    write_safetensors(folder / "model.safetensors", tensors, metadata)
    shutil.copyfile(run_dir / "config.yaml", folder / "config.yaml")
    last = history[-1] if history else {}
    full = {"name": name, "solver": config["solver"]["name"], "operator": config["operator"]["name"], **info,
            "parameters": sum(p.numel() for p in solver.parameters()),
            "optimiser_steps": last.get("global_step"), "best_step": last.get("best_step"),
            "stopped_early": bool(last.get("stopped_early")), "weights": weights,
            "validation_curve": [[r["global_step"], r.get("val_psnr")] for r in history]}
    (folder / "card.json").write_text(json.dumps(full, indent=1) + "\n")
    (folder / "README.md").write_text(card_markdown(full))
    return folder


def card_from_comparisons(method: str, comparisons: list[str], **info) -> dict:
    """A card's ``info`` with ``metrics`` read from ``l2i bench compare`` JSON files.

    ``comparisons`` are ``"LABEL=PATH"`` strings; each contributes the PSNR / SSIM / NMSE means of
    ``method`` and of the classical baselines in that file (zero-filled, adjoint, FBP, TV), and
    the TV weight used goes to ``tv_weights[LABEL]``.
    """
    metrics, tv_weights = {}, {}
    for item in comparisons:
        label, sep, file = item.partition("=")
        if not sep:
            raise ValueError(f"metrics are given as LABEL=COMPARE_JSON, got {item!r}")
        result = json.loads(Path(file).read_text())
        if method not in result["methods"]:
            raise ValueError(f"{file} has no results for {method!r} (it has {', '.join(result['methods'])})")
        keep = [m for m in result["methods"] if m in ("zero-filled", "adjoint", "fbp", "tv")] + [method]
        metrics[label] = {m: {k: result["methods"][m][k]["mean"] for k in ("psnr", "ssim", "nmse")} for m in keep}
        tv_weights[label] = result.get("tv_weight")
    return {**info, "metrics": metrics, "tv_weights": tv_weights}


def card_markdown(info: dict) -> str:
    """The model card as Markdown."""
    lines = [f"# {info['name']}", "", info.get("task", ""), "", "Trained with:", "", "```bash", info.get("command", ""), "```", "",
             f"- parameters: {info.get('parameters')}",
             f"- optimiser steps: {info.get('optimiser_steps')} (best validation loss at step {info.get('best_step')}; "
             f"{'stopped early' if info.get('stopped_early') else 'ran to its step count'}; shipped weights: "
             f"{'the last step' if info.get('weights') == 'last' else 'the best validation loss'})",
             f"- data: {info.get('data', '')}", ""]
    metrics = info.get("metrics", {})
    if metrics:
        lines += ["| test | method | PSNR (dB) | SSIM |", "|---|---|---:|---:|"]
        for test, methods in metrics.items():
            for method, m in methods.items():
                lines.append(f"| {test} | {method} | {m['psnr']:.2f} | {m['ssim']:.4f} |")
        lines.append("")
    return "\n".join(lines)
