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

Finding the models and reading their cards (:func:`available`, :func:`path`, :func:`card`) is
:mod:`learn2invert.shipped`, re-exported here; loading and exporting them is this module.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..checkpoint import CorruptCheckpoint, read_safetensors, weights_file, write_safetensors
from ..inference.load import load_solver
from .. import shipped
from ..shipped import PretrainedError, available, card, card_from_comparisons, card_markdown, path

__all__ = ["PretrainedError", "available", "path", "card", "load", "load_with_config", "export", "card_from_comparisons"]


def load(name: str, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The solver of shipped model ``name`` with its weights, in eval mode.

    Raises:
        PretrainedError: naming the file, if the model is unknown, a file is missing, or the
            weights are corrupt (checksum mismatch) or do not fit the config.
    """
    return load_with_config(name, device)[0]


def load_with_config(name: str, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict]:
    """``(solver, resolved training config)`` of shipped model ``name`` (see :func:`load`)."""
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
    run_dir = Path(run_dir)
    source = weights_file(run_dir, weights)
    solver, config, _, _ = load_solver(run_dir, "cpu", weights=weights)
    history = json.loads((run_dir / "history.json").read_text())
    folder = Path(destination if destination is not None else shipped.ROOT) / name
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
