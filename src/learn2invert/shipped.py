"""Where the shipped models are and what their cards say: names, folders, cards (no loading).

The shipped models are the folders of the ``pretrained/`` package (:mod:`learn2invert.pretrained`,
which loads and exports them). This module is its low-level half: it imports nothing of the
package, so the lower layers can find a shipped model's folder without importing the loader:
training (``train.init_weights: pretrained:NAME``) and evaluation (a shipped model's results are
not written into the installed package).
"""
from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent / "pretrained"  # one folder per shipped model
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


__all__ = ["ROOT", "PretrainedError", "available", "path", "card", "card_from_comparisons", "card_markdown"]
