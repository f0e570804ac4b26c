"""Checkpoints as safetensors + JSON: nothing is unpickled, every write is atomic and checksummed.

A run folder holds ``config.yaml`` (the resolved config), ``model.safetensors`` (solver weights,
all a user needs to reconstruct), ``best.safetensors`` (the weights of the lowest validation loss)
and ``train_state.safetensors`` (optimiser, scheduler, gradient scaler, RNG and progress, for
``--resume``). This module only reads and writes files (it imports nothing of the package), so
every layer can load weights: the unrolled solver's pre-trained prox (:func:`read_weights`), the
training loop, inference and the shipped models.

Integrity:

- Every file is written to a temporary name and renamed, so a run killed mid-write never
  leaves a half-written file under a checkpoint's name.
- Each safetensors file carries a SHA-256 of its content (every tensor's name, dtype, shape and
  bytes, and the other metadata) in its metadata under ``sha256``; reading recomputes it, so a
  truncated or bit-flipped file is reported by name (:class:`CorruptCheckpoint`) instead of
  loading garbage. ``train_state`` also records the checksum of the weights it belongs to
  (``model_sha256``), which ties the two files of a checkpoint together.
- Before a new checkpoint is written the current pair is renamed to ``model.prev.safetensors`` /
  ``train_state.prev.safetensors``. Whatever instant a run dies at, some matching pair survives;
  :func:`find_resume_point` picks the newest one that verifies and says what it skipped.

Pickles are refused: a ``torch.save`` file (zip or legacy pickle, whatever its extension) is
never loaded unless the caller passes ``allow_pickle=True``, which then uses
``torch.load(weights_only=True)`` (tensors and plain containers only).
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
BEST_FILE = "best.safetensors"  # the weights of the lowest validation loss so far
STATE_FILE = "train_state.safetensors"
MODEL_PREV = "model.prev.safetensors"
STATE_PREV = "train_state.prev.safetensors"
CHECKSUM_KEY = "sha256"
CORRUPT_SUFFIX = ".corrupt"


class CorruptCheckpoint(ValueError):
    """A checkpoint file is truncated, damaged or not a safetensors file; the message names it."""


class UnsafeCheckpoint(ValueError):
    """A checkpoint is a pickle (``torch.save`` output) and ``allow_pickle`` was not given."""


# ------------------------------------------------------------------------------------ writing

def atomic_write(path: str | Path, write) -> None:
    """Call ``write(tmp_path)`` then rename the temp file over ``path`` (same folder, so atomic)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:  # the data is on disk before the name points at it
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def remove_stale_temporaries(run_dir: str | Path) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files a killed :func:`atomic_write` left behind; returns them."""
    stale = [p for p in Path(run_dir).glob(".*.tmp") if p.is_file()]
    for p in stale:
        p.unlink()
    return stale


def content_checksum(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 (hex) of every tensor (name, dtype, shape, bytes, in name order) and the metadata.

    The ``sha256`` metadata entry itself is left out, so the result can be stored in the file.
    """
    digest = hashlib.sha256()
    for key in sorted(metadata):
        if key != CHECKSUM_KEY:
            digest.update(json.dumps([key, metadata[key]]).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> str:
    """Atomically write ``tensors`` (CPU, contiguous copies) with their checksum; returns the checksum."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    metadata = dict(metadata or {})
    metadata[CHECKSUM_KEY] = content_checksum(tensors, metadata)
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    return metadata[CHECKSUM_KEY]


# ------------------------------------------------------------------------------------ reading

def sniff_format(path: str | Path) -> str:
    """``"safetensors"``, ``"pickle"`` (a ``torch.save`` zip or a raw pickle) or ``"unknown"``."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(9)
    # safetensors: an 8-byte little-endian header length, then the JSON header. Checked first: the
    # length's low byte may well be 0x80, a pickle's first byte.
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") <= path.stat().st_size - 8:
        return "safetensors"
    if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        return "pickle"
    return "unknown"


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read and verify a checkpoint file: returns ``(tensors, metadata)``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        UnsafeCheckpoint: if the file is a pickle.
        CorruptCheckpoint: naming ``path``, if it is truncated, damaged, or its checksum does not
            match (files written before checksums existed are accepted without one).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if sniff_format(path) == "pickle":
        raise UnsafeCheckpoint(f"{path} is a pickle (torch.save output), not safetensors; loading it could run "
                               "arbitrary code, so it is refused. Pass allow_pickle=True to load_model only for a "
                               "file you trust (it then uses torch.load(weights_only=True)).")
    try:
        tensors = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise CorruptCheckpoint(f"corrupt or unreadable checkpoint {path}: {err}") from err
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and content_checksum(tensors, metadata) != expected:
        raise CorruptCheckpoint(f"corrupt checkpoint {path}: its content does not match the SHA-256 stored in it")
    return tensors, metadata


def read_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The verified tensors (a state dict) of a safetensors weights file (see :func:`read_safetensors`)."""
    return read_safetensors(path)[0]


def _load_pickled_state(path: Path) -> dict[str, torch.Tensor]:
    obj = torch.load(str(path), map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):  # common wrappers of a state dict
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors")
    return obj


# ------------------------------------------------------------------------------------- model

def weights_file(run_dir: str | Path, weights: str = "best") -> Path:
    """The weights file of a run: ``best`` (lowest validation loss; the last weights for runs that
    have no best file) or ``last`` (the latest checkpoint)."""
    run_dir = Path(run_dir)
    if weights not in ("best", "last"):
        raise ValueError(f"weights must be 'best' or 'last', got {weights!r}")
    if weights == "best" and (run_dir / BEST_FILE).is_file():
        return run_dir / BEST_FILE
    if not (run_dir / MODEL_FILE).is_file():
        raise ValueError(f"{run_dir} holds no trained model ({MODEL_FILE} missing)")
    return run_dir / MODEL_FILE


def save_model(model: torch.nn.Module, run_dir: str | Path, metadata: dict[str, str] | None = None,
               name: str = MODEL_FILE) -> str:
    """Write the model weights to ``run_dir/model.safetensors``; returns the file's checksum."""
    return write_safetensors(Path(run_dir) / name, model.state_dict(), metadata)


def load_model(model: torch.nn.Module, path: str | Path, allow_pickle: bool = False,
               new_zero_ok: bool = False) -> None:
    """Load weights into ``model`` (strict: names and shapes must match).

    Args:
        model: the module to fill.
        path: a run folder (its ``model.safetensors`` is read) or a weights file.
        allow_pickle: also accept a ``torch.save`` file, read with ``torch.load(weights_only=True)``.
            Only for files you trust; without it such a file raises :class:`UnsafeCheckpoint`.
        new_zero_ok: fine-tuning: ``model`` may have tensors the file lacks if each is all zeros
            (a zero-initialised addition such as the RIM's ``sigma_input``, which leaves the loaded
            model's function unchanged); they keep their zeros. Every tensor of the file must fit.
    """
    path = Path(path)
    if path.is_dir():
        path = path / MODEL_FILE
    if allow_pickle and path.is_file() and sniff_format(path) == "pickle":
        state = _load_pickled_state(path)
    else:
        try:
            state = read_weights(path)
        except CorruptCheckpoint as err:
            prev = path.with_name(MODEL_PREV)
            hint = f" (the previous checkpoint {prev} may still be good)" if path.name == MODEL_FILE and prev.is_file() else ""
            raise CorruptCheckpoint(f"{err}{hint}") from err
    own = model.state_dict()
    added = [k for k in own if k not in state and not bool(own[k].any())] if new_zero_ok else []
    try:
        model.load_state_dict({**state, **{k: own[k] for k in added}}, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{path} does not fit the solver of the config: {err}") from err


# ---------------------------------------------------------------------------- training state

def save_train_state(run_dir: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any, progress: dict,
                     model_sha256: str | None = None, scaler: torch.amp.GradScaler | None = None,
                     name: str = STATE_FILE) -> str:
    """Save optimiser tensors, scheduler, scaler, RNG and JSON-able ``progress``; returns the checksum.

    ``model_sha256`` is the checksum of the weights saved with this state (see :func:`save_checkpoint`).
    """
    opt_state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.torch": torch.get_rng_state()}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, slot in opt_state["state"].items():
        for key, value in slot.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars.setdefault(str(idx), {})[key] = value
    metadata = {
        "param_groups": json.dumps(opt_state["param_groups"]),
        "optim_scalars": json.dumps(scalars),
        "scheduler": json.dumps(scheduler.state_dict() if scheduler is not None else None),
        "scaler": json.dumps(scaler.state_dict() if scaler is not None and scaler.is_enabled() else None),
        "progress": json.dumps(progress),
    }
    if model_sha256 is not None:
        metadata["model_sha256"] = model_sha256
    return write_safetensors(Path(run_dir) / name, tensors, metadata)


def read_train_state(path: str | Path) -> dict:
    """Read a training state file: ``{"optimizer", "scheduler", "scaler", "progress", "rng", "model_sha256"}``.

    ``optimizer`` is a state dict for ``Optimizer.load_state_dict`` (CPU tensors); ``scheduler`` and
    ``scaler`` are state dicts or None; ``model_sha256`` is None for files written before it existed.
    """
    path = Path(path)
    tensors, metadata = read_safetensors(path)
    try:
        groups = json.loads(metadata["param_groups"])
        scalars = json.loads(metadata["optim_scalars"])
        sched = json.loads(metadata["scheduler"])
        scaler = json.loads(metadata.get("scaler", "null"))
        progress = json.loads(metadata["progress"])
    except (KeyError, json.JSONDecodeError) as err:
        raise CorruptCheckpoint(f"corrupt training state {path}: missing or bad metadata ({err})") from err
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, values in scalars.items():
        state.setdefault(int(idx), {}).update(values)
    return {"optimizer": {"state": state, "param_groups": groups}, "scheduler": sched, "scaler": scaler,
            "progress": progress, "rng": tensors.get("rng.torch"), "model_sha256": metadata.get("model_sha256")}


def peak_lr(group: dict) -> float:
    """The peak learning rate of an optimiser parameter group: the rate a schedule scales
    (``initial_lr``, set by PyTorch's schedulers), or the group's rate without a schedule."""
    return group.get("initial_lr", group["lr"])


def apply_train_state(saved: dict, optimizer: torch.optim.Optimizer, scheduler: Any,
                      scaler: torch.amp.GradScaler | None = None) -> dict:
    """Put what :func:`read_train_state` returned into the optimiser, scheduler and scaler; returns ``progress``.

    The peak learning rates stay those the optimiser was built with (the config's
    ``train.optimizer.lr``), not the saved ones: a run resumed with a lower ``lr`` trains at it,
    at the point of its schedule where the run stopped. Loading the state dicts alone would bring
    the old rate back, because both the optimiser and the scheduler save it.
    """
    peak_lrs = [peak_lr(group) for group in optimizer.param_groups]
    optimizer.load_state_dict(saved["optimizer"])
    if scheduler is not None and saved["scheduler"] is not None:
        scheduler.load_state_dict(saved["scheduler"])
    for group, peak in zip(optimizer.param_groups, peak_lrs):
        saved_peak = peak_lr(group)
        if saved_peak != peak:
            group["lr"] *= peak / saved_peak  # the schedules are multiplicative in the peak rate
            if "initial_lr" in group:
                group["initial_lr"] = peak
    if scheduler is not None and hasattr(scheduler, "base_lrs"):
        scheduler.base_lrs = peak_lrs
    if scaler is not None and scaler.is_enabled() and saved.get("scaler") is not None:
        scaler.load_state_dict(saved["scaler"])
    return saved["progress"]


def load_train_state(run_dir: str | Path, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict:
    """Restore ``run_dir/train_state.safetensors`` (optimiser, scheduler, torch RNG); returns ``progress``."""
    saved = read_train_state(Path(run_dir) / STATE_FILE)
    progress = apply_train_state(saved, optimizer, scheduler)
    if saved["rng"] is not None:
        torch.set_rng_state(saved["rng"])
    return progress


# ------------------------------------------------------------------------- checkpoint pairs

def save_checkpoint(run_dir: str | Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                    progress: dict, scaler: torch.amp.GradScaler | None = None) -> None:
    """Write a new (weights, training state) pair, keeping the current one as ``*.prev.safetensors``.

    Order: rename the current pair to ``.prev``, write the weights, then the state that names the
    weights' checksum. At every instant one matching pair is on disk (see :func:`find_resume_point`).
    """
    run_dir = Path(run_dir)
    if (run_dir / MODEL_FILE).is_file() and (run_dir / STATE_FILE).is_file():
        os.replace(run_dir / MODEL_FILE, run_dir / MODEL_PREV)
        os.replace(run_dir / STATE_FILE, run_dir / STATE_PREV)
    model_sha = save_model(model, run_dir, metadata={"epoch": str(progress.get("epoch", ""))})
    save_train_state(run_dir, optimizer, scheduler, progress, model_sha256=model_sha, scaler=scaler)


@dataclass
class ResumePoint:
    """A verified checkpoint pair: the weights and training state read from ``model_path`` / ``state_path``."""

    model_path: Path
    state_path: Path
    model: dict[str, torch.Tensor]
    state: dict
    problems: list[str] = field(default_factory=list)  # what was skipped, and why
    corrupt: list[Path] = field(default_factory=list)  # files that failed to verify

    @property
    def is_latest(self) -> bool:
        return self.model_path.name == MODEL_FILE and self.state_path.name == STATE_FILE


def has_checkpoint(run_dir: str | Path) -> bool:
    run_dir = Path(run_dir)
    return any((run_dir / name).exists() for name in (STATE_FILE, STATE_PREV))


def find_resume_point(run_dir: str | Path) -> ResumePoint:
    """The newest checkpoint pair in ``run_dir`` whose two files verify and belong together.

    Tries ``train_state.safetensors`` then ``train_state.prev.safetensors``; for each, the weights
    file (latest or previous) whose checksum the state names. Files that fail to verify are
    listed in ``problems`` by name.

    Raises:
        CorruptCheckpoint: if no pair verifies (the message lists every file and its problem).
        ValueError: if the folder holds no checkpoint at all.
    """
    run_dir = Path(run_dir)
    if not has_checkpoint(run_dir):
        raise ValueError(f"cannot resume: {run_dir / STATE_FILE} does not exist")
    problems: list[str] = []
    corrupt: list[Path] = []
    models: dict[str, tuple[Path, dict]] = {}  # checksum and file name -> (path, tensors)
    for name in (MODEL_FILE, MODEL_PREV):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            tensors, metadata = read_safetensors(path)
        except (CorruptCheckpoint, UnsafeCheckpoint) as err:
            problems.append(str(err))
            corrupt.append(path)
            continue
        models[name] = (path, tensors)
        if metadata.get(CHECKSUM_KEY):
            models.setdefault(metadata[CHECKSUM_KEY], (path, tensors))
    for name in (STATE_FILE, STATE_PREV):
        path = run_dir / name
        if not path.is_file():
            continue
        try:
            state = read_train_state(path)
        except (CorruptCheckpoint, UnsafeCheckpoint) as err:
            problems.append(str(err))
            corrupt.append(path)
            continue
        wanted = state["model_sha256"]
        if wanted is None:  # a state that names no weights (older runs): pair it by file name
            wanted = MODEL_FILE if name == STATE_FILE else MODEL_PREV
        if wanted in models:
            model_path, tensors = models[wanted]
            return ResumePoint(model_path, path, tensors, state, problems, corrupt)
        problems.append(f"{path} belongs to weights that are missing or corrupt")
    raise CorruptCheckpoint(f"no usable checkpoint in {run_dir}: " + "; ".join(problems))


def adopt_resume_point(run_dir: str | Path, point: ResumePoint) -> None:
    """Make the chosen pair the latest again before training goes on.

    Files that failed to verify are renamed to ``<name>.corrupt`` (kept for inspection, out of the
    way of the next rotation); a ``.prev`` pair that was chosen is renamed to the latest names.
    """
    run_dir = Path(run_dir)
    for path in point.corrupt:
        if path.is_file():
            os.replace(path, path.with_name(path.name + CORRUPT_SUFFIX))
    if point.model_path.name != MODEL_FILE:
        os.replace(point.model_path, run_dir / MODEL_FILE)
        point.model_path = run_dir / MODEL_FILE
    if point.state_path.name != STATE_FILE:
        os.replace(point.state_path, run_dir / STATE_FILE)
        point.state_path = run_dir / STATE_FILE
    if point.problems:
        warnings.warn("resuming from an older checkpoint: " + "; ".join(point.problems), RuntimeWarning, stacklevel=2)


__all__ = [
    "CONFIG_FILE", "MODEL_FILE", "BEST_FILE", "STATE_FILE", "MODEL_PREV", "STATE_PREV", "CorruptCheckpoint", "UnsafeCheckpoint",
    "atomic_write", "atomic_write_text", "remove_stale_temporaries", "content_checksum", "write_safetensors",
    "sniff_format", "read_safetensors", "read_weights", "weights_file", "save_model", "load_model", "save_train_state", "read_train_state",
    "apply_train_state", "peak_lr", "load_train_state", "save_checkpoint", "ResumePoint", "has_checkpoint",
    "find_resume_point", "adopt_resume_point",
]
