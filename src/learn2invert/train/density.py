"""Likelihood training of a flow prior: what ``l2i train`` runs when ``loss.name`` is ``bits_per_dim``.

There is no measurement: the model (``solver.name: flow_density``) sees clean images and
minimises their bits per dimension. Each epoch validates (mean validation bits/dim), writes the
weights and training state like the reconstruction loop does (so ``--resume`` and the time limit
work the same way), and the run ends with a grid of samples from the prior, ``samples.png``.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..checkpoint import atomic_write_text, load_model, load_train_state, save_model, save_train_state
from ..operators.generator import uses_own_coils
from .config import ConfigError
from .datasets import build_dataset, empty_validation_message
from .experiment import build_optimizer, build_solver

SAMPLES_FILE = "samples.png"


def save_sample_grid(model, path: str | Path, n: int = 16, temperature: float = 0.7, seed: int = 0) -> None:
    """Write an ``n``-image grid of samples from ``model.sample`` (images clipped to [0, 1])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    torch.manual_seed(seed)
    images = model.sample(n, temperature).clamp(0, 1).cpu()
    cols = int(n ** 0.5)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.2 * cols, 1.2 * rows))
    for ax in axes.flat:
        ax.axis("off")
    for ax, img in zip(axes.flat, images):
        ax.imshow(img.permute(1, 2, 0).numpy() if img.shape[0] == 3 else img[0].numpy(), cmap="gray", vmin=0, vmax=1)
    fig.suptitle(f"samples, temperature {temperature}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@torch.no_grad()
def validation_bits_per_dim(model, dataset, batch_size: int, device: torch.device, seed: int) -> float:
    """Mean bits/dim over ``dataset`` with a fixed dequantisation noise (comparable across epochs)."""
    model.eval()
    generator = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    for x in DataLoader(dataset, batch_size=batch_size, shuffle=False):
        total += float(model.bits_per_dim(x.to(device), generator=generator)) * x.shape[0]
        count += x.shape[0]
    model.train()
    return total / max(count, 1)


def train_density(config: dict, run_dir: Path, device: torch.device, resume: bool, show_progress: bool,
                  history_file: str, config_file: str) -> dict:
    """Train ``config``'s flow by maximum likelihood into ``run_dir``; returns ``{"run_dir", "epochs"}``."""
    from .config import dump_config

    if uses_own_coils(config):
        # Own-coils items are {image, kspace} for a measurement to undersample; a flow prior has no
        # measurement and learns images alone, which the same files give without own_coils.
        raise ConfigError("config keys 'data.params.own_coils' and 'loss.name: bits_per_dim': a flow prior learns "
                          "the density of clean images and measures nothing, so the files' own coil k-space has no "
                          "use; leave data.params.own_coils out (the items are then the coil-combined images)")
    train_set, val_set = build_dataset(config, "train"), build_dataset(config, "val")
    empty = empty_validation_message(config, val_set)
    if empty:  # every epoch ends with a validation: refuse now, not after the first epoch
        raise ConfigError(empty)
    model = build_solver(config, tuple(train_set[0].shape)).to(device)
    if not hasattr(model, "bits_per_dim"):
        raise ValueError(f"loss.name=bits_per_dim needs a density model (solver.name: flow_density), "
                         f"got {type(model).__name__}")
    optimizer, scheduler = build_optimizer(config, model)
    atomic_write_text(run_dir / config_file, dump_config(config))
    history: list[dict] = []
    start_epoch, global_step = 0, 0
    if resume:
        load_model(model, run_dir)
        progress = load_train_state(run_dir, optimizer, scheduler)
        start_epoch, global_step, history = progress["epoch"], progress["global_step"], progress["history"]

    t = config["train"]
    budget = 60.0 * t["time_limit_minutes"]
    started = time.perf_counter()
    out_of_time = False
    for epoch in range(start_epoch, t["epochs"]):
        if hasattr(train_set, "set_epoch"):
            train_set.set_epoch(epoch)
        generator = torch.Generator().manual_seed(config["seed"] * 1_000_003 + epoch)
        loader = DataLoader(train_set, batch_size=t["batch_size"], shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(config["seed"] * 7919 + epoch))
        model.train()
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{t['epochs']}", disable=not show_progress, unit="batch")
        running, steps = 0.0, 0
        for x in bar:
            loss = model.bits_per_dim(x.to(device), generator=generator)
            if not torch.isfinite(loss):
                raise ValueError(f"bits/dim is {loss.item()} at epoch {epoch + 1}, step {global_step + 1}; "
                                 f"training stopped, the last good checkpoint in {run_dir} is kept")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if t["grad_clip"] > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), t["grad_clip"])
            optimizer.step()
            global_step += 1
            steps += 1
            running += loss.item()
            bar.set_postfix(bits_per_dim=f"{loss.item():.3f}")
            if budget and time.perf_counter() - started > budget:
                out_of_time = True
                break
        if scheduler is not None:
            scheduler.step()
        val = validation_bits_per_dim(model, val_set, t["val_batch_size"], device, config["seed"] + 1)
        history.append({"epoch": epoch + 1, "global_step": global_step, "train_bits_per_dim": running / max(steps, 1),
                        "val_bits_per_dim": val, "stopped_early": out_of_time})
        if show_progress:
            tqdm.write(f"epoch {epoch + 1}: train {history[-1]['train_bits_per_dim']:.3f} bits/dim, val {val:.3f} bits/dim")
        save_model(model, run_dir)
        save_train_state(run_dir, optimizer, scheduler, {"epoch": epoch + 1, "global_step": global_step, "history": history})
        atomic_write_text(run_dir / history_file, json.dumps(history, indent=2))
        if out_of_time:
            break
    save_sample_grid(model, run_dir / SAMPLES_FILE)
    if show_progress:
        tqdm.write(f"samples from the prior: {run_dir / SAMPLES_FILE}")
    return {"run_dir": str(run_dir), "epochs": history}


__all__ = ["train_density", "save_sample_grid", "validation_bits_per_dim"]
