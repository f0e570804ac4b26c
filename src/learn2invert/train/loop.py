"""The training loop behind ``l2i train``.

Each epoch draws its crops, measurement physics and noise from a generator seeded by
``(seed, epoch)``, so an epoch is reproducible on its own: a run killed mid-epoch resumes with
``--resume`` from the last finished epoch and repeats exactly the epoch it lost. After every
epoch the loop validates, then writes the weights and the training state atomically.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from .checkpoint import MODEL_FILE, STATE_FILE, atomic_write_text, load_model, load_train_state, save_model, save_train_state
from .config import dump_config, load_config
from .experiment import Measurement, build_dataset, build_optimizer, build_solver
from .losses import iterate_loss
from .validate import validate

CONFIG_FILE = "config.yaml"
HISTORY_FILE = "history.json"


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError("config asks for train.device=cuda but no CUDA device is available")
    return torch.device(name)


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def _summary_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is an optional extra; training works without it
        return None
    return SummaryWriter(log_dir=str(run_dir / "tensorboard"))


def train(config_path: str | Path | None, out: str | Path, overrides: tuple[str, ...] = (), resume: bool = False,
          show_progress: bool = True) -> dict:
    """Train the solver of a config and return ``{"epochs": [...validation metrics...], "run_dir": ...}``.

    Args:
        config_path: YAML config (ignored with ``resume``: the run's saved config is used).
        out: run folder (created); holds config.yaml, model.safetensors, train_state.safetensors,
            history.json and TensorBoard events.
        overrides: ``key=value`` strings applied on top of the config (dotted keys).
        resume: continue the run in ``out`` from its last finished epoch.
    """
    run_dir = Path(out)
    if resume:
        if not (run_dir / STATE_FILE).is_file():
            raise ValueError(f"cannot resume: {run_dir / STATE_FILE} does not exist")
        config = load_config(run_dir / CONFIG_FILE, overrides)
    else:
        config = load_config(config_path, overrides)
        if (run_dir / STATE_FILE).exists():
            raise ValueError(f"{run_dir} already holds a run; pass --resume to continue it or choose another --out")
    run_dir.mkdir(parents=True, exist_ok=True)

    torch.manual_seed(config["seed"])
    device = resolve_device(config["train"]["device"])
    train_set = build_dataset(config, "train")
    val_set = build_dataset(config, "val")
    image_shape = tuple(train_set[0].shape)
    measurement = Measurement(config, image_shape)
    solver = build_solver(config, image_shape).to(device)
    optimizer, scheduler = build_optimizer(config, solver)
    atomic_write_text(run_dir / CONFIG_FILE, dump_config(config))

    epochs = config["train"]["epochs"]
    history: list[dict] = []
    start_epoch, global_step = 0, 0
    if resume:
        load_model(solver, run_dir)
        progress = load_train_state(run_dir, optimizer, scheduler)
        start_epoch, global_step, history = progress["epoch"], progress["global_step"], progress["history"]

    writer = _summary_writer(run_dir)
    loss_cfg = config["loss"]
    batch_size = config["train"]["batch_size"]
    if len(train_set) < batch_size:
        raise ValueError(f"the training set has {len(train_set)} samples, fewer than train.batch_size={batch_size}")
    budget = 60.0 * config["train"]["time_limit_minutes"]
    run_started = time.perf_counter()
    out_of_time = False
    for epoch in range(start_epoch, epochs):
        generator = _epoch_generator(config["seed"], epoch)
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(config["seed"] * 7919 + epoch))
        solver.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not show_progress, unit="batch")
        started, seen, running = time.perf_counter(), 0, 0.0
        for step, x in enumerate(bar):
            x = x.to(device)
            y, op, sigma = measurement(x, generator)
            iterates = solver(y, op, sigma=sigma)
            loss = iterate_loss(iterates, x, loss_cfg["name"], loss_cfg["weights"], loss_cfg["subsample"], generator)
            if not torch.isfinite(loss):
                raise TrainingDiverged(
                    f"loss is {loss.item()} at epoch {epoch + 1}, batch {step + 1} (global step {global_step + 1}); "
                    f"training stopped, the last good checkpoint in {run_dir} is kept")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config["train"]["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(solver.parameters(), config["train"]["grad_clip"])
            optimizer.step()
            global_step += 1
            seen += x.shape[0]
            running += loss.item()
            bar.set_postfix(loss=f"{loss.item():.4g}", img_s=f"{seen / (time.perf_counter() - started):.1f}")
            if writer is not None and global_step % config["train"]["log_every"] == 0:
                writer.add_scalar("train/loss", loss.item(), global_step)
            if budget and time.perf_counter() - run_started > budget:
                out_of_time = True  # end this epoch here: validate, save, stop
                break
        if scheduler is not None:
            scheduler.step()
        metrics = validate(solver, val_set, measurement, config, device)
        record = {"epoch": epoch + 1, "global_step": global_step, "train_loss": running / max(1, step + 1),
                  "stopped_early": out_of_time,
                  "seconds": time.perf_counter() - started, **{f"val_{k}": v for k, v in metrics.items()}}
        history.append(record)
        if writer is not None:
            for k, v in metrics.items():
                writer.add_scalar(f"val/{k}", v, global_step)
            writer.flush()
        if show_progress:
            tqdm.write(f"epoch {epoch + 1}: train loss {record['train_loss']:.4g}, "
                       + ", ".join(f"val {k} {v:.4f}" for k, v in metrics.items()))
        # Weights first, then the state that points past this epoch: a kill between the two
        # writes repeats the epoch on resume instead of skipping it.
        save_model(solver, run_dir)
        save_train_state(run_dir, optimizer, scheduler, {"epoch": epoch + 1, "global_step": global_step, "history": history})
        atomic_write_text(run_dir / HISTORY_FILE, json.dumps(history, indent=2))
        if out_of_time:
            if show_progress:
                tqdm.write(f"time limit of {config['train']['time_limit_minutes']} min reached after epoch {epoch + 1} "
                           f"(global step {global_step}); training stopped")
            break
    if writer is not None:
        writer.close()
    return {"run_dir": str(run_dir), "epochs": history}


def load_solver(run_dir: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, dict, Measurement, tuple]:
    """Rebuild a trained solver from its run folder: returns (solver, config, measurement, image_shape)."""
    run_dir = Path(run_dir)
    if not (run_dir / MODEL_FILE).is_file():
        raise ValueError(f"{run_dir} holds no trained model ({MODEL_FILE} missing)")
    config = load_config(run_dir / CONFIG_FILE)
    image_shape = tuple(build_dataset(config, "val")[0].shape)
    solver = build_solver(config, image_shape)
    load_model(solver, run_dir)
    return solver.to(device).eval(), config, Measurement(config, image_shape), image_shape


__all__ = ["train", "load_solver", "TrainingDiverged", "resolve_device"]
