"""Checkpoints as safetensors + JSON: nothing is ever unpickled, every write is atomic.

A run folder holds ``config.yaml`` (the resolved config), ``model.safetensors`` (solver weights,
all a user needs to reconstruct) and ``train_state.safetensors`` (optimiser, scheduler, RNG and
progress, for ``--resume``). Files are written to a temporary name and renamed, so a run killed
mid-write keeps its previous checkpoint intact.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

MODEL_FILE = "model.safetensors"
STATE_FILE = "train_state.safetensors"


def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the temp file over ``path`` (same folder, so atomic)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"corrupt or unreadable checkpoint {path}: {err}") from err


def save_model(model: torch.nn.Module, run_dir: str | Path) -> None:
    """Write the model weights (contiguous CPU copies) to ``run_dir/model.safetensors``."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(Path(run_dir) / MODEL_FILE, lambda tmp: save_file(tensors, tmp))


def load_model(model: torch.nn.Module, run_dir: str | Path) -> None:
    """Load ``run_dir/model.safetensors`` into ``model`` (strict: names and shapes must match)."""
    path = Path(run_dir) / MODEL_FILE
    state = _load_safetensors(path)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit the solver of the config: {err}") from err


def save_train_state(run_dir: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any, progress: dict) -> None:
    """Save optimiser tensors, scheduler, RNG and JSON-able ``progress`` to ``train_state.safetensors``."""
    opt_state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slot in opt_state["state"].items():
        for name, value in slot.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    metadata = {
        "param_groups": json.dumps(opt_state["param_groups"]),
        "optim_scalars": json.dumps(scalars),
        "scheduler": json.dumps(scheduler.state_dict() if scheduler is not None else None),
        "progress": json.dumps(progress),
    }
    atomic_write(Path(run_dir) / STATE_FILE, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_train_state(run_dir: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict:
    """Restore what :func:`save_train_state` wrote; returns the ``progress`` dict."""
    from safetensors import safe_open

    path = Path(run_dir) / STATE_FILE
    tensors = _load_safetensors(path)
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    try:
        groups = json.loads(metadata["param_groups"])
        scalars = json.loads(metadata["optim_scalars"])
        sched = json.loads(metadata["scheduler"])
        progress = json.loads(metadata["progress"])
    except (KeyError, json.JSONDecodeError) as err:
        raise ValueError(f"corrupt training state {path}: missing or bad metadata ({err})") from err
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in scalars.items():
        state.setdefault(int(idx), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    if scheduler is not None and sched is not None:
        scheduler.load_state_dict(sched)
    torch.set_rng_state(tensors["rng.torch"])
    return progress
