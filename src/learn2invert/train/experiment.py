"""Build the trainable parts of an experiment from a resolved config: the solver, the optimiser and its schedule.

The data and the measurements come from :mod:`.datasets` and :mod:`learn2invert.operators.generator`;
every name a config can use is registered in :mod:`learn2invert.registry`.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import torch

from ..registry import OPTIMIZERS, SCHEDULES, SOLVERS, ConfigError, build
from ..solvers.base import Solver


# ---------------------------------------------------------------------------------------- solver

def build_solver(config: dict, image_shape: tuple[int, ...]) -> torch.nn.Module:
    """The solver named by ``config['solver']`` for images of ``image_shape`` ((C, H, W) or (C, D, H, W))."""
    s = config["solver"]
    dims = {"channels": image_shape[0], "dims": len(image_shape) - 1}
    return build(SOLVERS.get(s["name"]), {**dims, **dict(s["params"])}, "solver.params")


def without_initial_weights(config: dict) -> dict:
    """``config`` without the run folder its prox started from (``solver.params.pretrained``).

    A run's own checkpoint holds every weight, so a trained run loads and resumes even after
    the prior it started from has moved or been deleted.
    """
    config = copy.deepcopy(config)
    config["solver"]["params"].pop("pretrained", None)
    return config


# ----------------------------------------------------------------------------- optimiser, schedule

def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                  final_lr_fraction: float = 0.01) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate rising linearly over ``warmup_steps`` optimiser steps, then a cosine down to
    ``final_lr_fraction`` of the peak at ``total_steps``; stepped once per optimiser step."""
    if warmup_steps < 0 or total_steps < 1 or not 0.0 <= final_lr_fraction <= 1.0:
        raise ConfigError(f"config key 'train.schedule': warmup_cosine needs warmup_steps >= 0, total steps >= 1 and "
                          f"0 <= final_lr_fraction <= 1; got {warmup_steps}, {total_steps}, {final_lr_fraction}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_lr_fraction + (1.0 - final_lr_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# Schedules stepped after every optimiser step rather than after every epoch.
PER_STEP_SCHEDULES = ("warmup_cosine",)


# The schedules a config names (registry.SCHEDULES): ``builder(optimizer, params, train, total_steps)``
# with ``params`` the keyword arguments of ``train.schedule`` and ``train`` the config's train section.

def constant_schedule(optimizer: torch.optim.Optimizer, params: dict, train: dict, total_steps: int | None) -> None:
    return None


def cosine_schedule(optimizer: torch.optim.Optimizer, params: dict, train: dict, total_steps: int | None):
    return build(torch.optim.lr_scheduler.CosineAnnealingLR, {"T_max": max(1, train["epochs"]), **params},
                 "train.schedule", optimizer)


def step_schedule(optimizer: torch.optim.Optimizer, params: dict, train: dict, total_steps: int | None):
    return build(torch.optim.lr_scheduler.StepLR, params, "train.schedule", optimizer)


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, params: dict, train: dict, total_steps: int | None):
    total = total_steps or train["max_steps"]
    if not total:
        raise ConfigError("config key 'train.schedule': warmup_cosine needs train.max_steps (its length in steps)")
    return build(warmup_cosine, params, "train.schedule", optimizer, int(total))


def build_optimizer(config: dict, model: torch.nn.Module, total_steps: int | None = None) -> tuple[torch.optim.Optimizer, Any]:
    """The optimiser and learning-rate schedule of ``config['train']`` (names in :mod:`learn2invert.registry`).

    ``total_steps`` (optimiser steps of the whole run) sizes the per-step ``warmup_cosine``
    schedule; it defaults to ``train.max_steps``.
    """
    t = config["train"]
    opt = dict(t["optimizer"])
    optimizer_class = OPTIMIZERS.get(opt.pop("name", "adam"))
    # Solvers give their groups (unrolled step sizes train at their own rate); a density model has none.
    groups = model.parameter_groups(opt.get("lr", 1e-3)) if isinstance(model, Solver) else None
    optimizer = build(optimizer_class, opt, "train.optimizer", groups if groups else model.parameters())
    params = dict(t["schedule"])
    schedule = SCHEDULES.get(params.pop("name", "none"))
    return optimizer, schedule(optimizer, params, t, total_steps)
