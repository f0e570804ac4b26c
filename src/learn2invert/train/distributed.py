"""Data-parallel training across processes: what ``l2i train`` needs from ``torch.distributed``.

``l2i train`` runs unchanged under ``torchrun``: when the launcher's environment variables
(``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) are set and
``WORLD_SIZE > 1``, :func:`init_distributed` joins the process group, and the loop wraps the
solver in ``DistributedDataParallel``. Without them everything here is a no-op on one process.

Backends: ``gloo`` on CPU-only machines; ``cpu:gloo,cuda:nccl`` where CUDA is present, so CUDA
tensors go through NCCL and CPU tensors (a config with ``train.device: cpu``, small control
messages) through gloo.

How a global batch is split: ``train.batch_size`` is the global batch, and each rank loads
``batch_size / world_size`` samples through a ``DistributedSampler`` (``drop_last=True``,
reshuffled per epoch by ``set_epoch``). Every rank draws the same permutation of the dataset
and takes every ``world_size``-th index of it, so the ranks' k-th batches together are exactly
the k-th batch one process would see.
Measurement noise and physics are seeded per sample by ``(seed, epoch, index)`` (not by rank),
so ranks draw different noise for their different samples, and a run gives the same weights,
up to float rounding in the gradient average, on any number of processes.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass
class DistContext:
    """Where this process stands in the job: rank ``0 .. world_size - 1``, GPU index ``local_rank``.

    ``owns_group`` is true when :func:`init_distributed` created the process group (and
    :meth:`close` should destroy it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that prints, logs and reads or writes the run folder."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def device(self, device: torch.device) -> torch.device:
        """The device of this rank: ``cuda`` becomes ``cuda:<local_rank>`` in a distributed job."""
        if device.type == "cuda" and self.is_distributed:
            return torch.device("cuda", self.local_rank)
        return device

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum of ``values`` over the ranks (a new tensor; the input on one process)."""
        values = values.clone()
        if self.is_distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled over the process group, never from disk)."""
        if not self.is_distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list:
        """``[obj of rank 0, obj of rank 1, ...]`` on every rank."""
        if not self.is_distributed:
            return [obj]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.is_distributed:
            dist.barrier()

    def close(self) -> None:
        """Leave the process group if this context created it."""
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
            self.owns_group = False


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={raw!r} must be an integer (set by torchrun)") from err


def init_distributed() -> DistContext:
    """Join the ``torchrun`` job described by the environment, or return a one-process context.

    Raises:
        ValueError: if ``WORLD_SIZE > 1`` but ``RANK`` is missing or the ranks are inconsistent.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    if world_size <= 1:
        return DistContext()
    if "RANK" not in os.environ:
        raise ValueError(f"WORLD_SIZE={world_size} but RANK is not set: launch with torchrun")
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} is outside 0..WORLD_SIZE-1={world_size - 1}")
    if dist.is_initialized():  # someone (a notebook, a test harness) already joined: use it
        return DistContext(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=False)
    if torch.cuda.is_available():
        if local_rank < torch.cuda.device_count():
            torch.cuda.set_device(local_rank)
        backend = "cpu:gloo,cuda:nccl"
    else:
        backend = "gloo"
    dist.init_process_group(backend=backend)
    return DistContext(rank, world_size, local_rank, owns_group=True)


_PURPOSES = {"sample": 1, "rank": 2, "batch": 3}


def seed_from(seed: int, epoch: int, purpose: str, index: int = 0) -> int:
    """A 63-bit seed that is a pure function of ``(seed, epoch, purpose, index)`` (well mixed).

    ``purpose`` is ``"sample"`` (the measurement of sample ``index``), ``"rank"`` (the global
    torch RNG of rank ``index``, used by whatever in a model draws from it, such as dropout) or
    ``"batch"`` (what global batch ``index`` draws as a whole: an operator mixture's operator).
    """
    state = np.random.SeedSequence([int(seed), int(epoch), _PURPOSES[purpose], int(index)]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


__all__ = ["DistContext", "init_distributed", "seed_from"]
