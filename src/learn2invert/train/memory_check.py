"""Will a training step fit in memory? A one-sample probe before the first step.

A batch that cannot fit used to grow until the kernel killed the process, with no message. Before
training, one sample goes through the solver with autograd recording, and the bytes autograd
saves for backward (the activations, which grow with the batch; parameters excluded) are counted
with :func:`saved_tensor_bytes`. ``batch_size`` times that, with headroom for the backward pass,
is compared with the memory the device has free; a batch that cannot fit is refused with the
numbers.
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch

from ..data.items import split_item

HEADROOM = 1.5  # backward holds gradients of the activations next to the saved tensors


def saved_tensor_bytes(loss_fn: Callable[[], torch.Tensor], parameters: Iterable[torch.Tensor] = ()) -> int:
    """Run ``loss_fn()`` (which builds a graph and returns a scalar) and count what autograd saved.

    Returns the total bytes of the distinct storages packed for backward, leaving out
    ``parameters`` (their memory exists anyway). The graph is released without a backward pass.
    """
    param_ptrs = {p.untyped_storage().data_ptr() for p in parameters}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        if s.data_ptr() not in param_ptrs:
            storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_fn()
    del loss
    return sum(storages.values())


def available_bytes(device: torch.device) -> int | None:
    """Free memory of ``device`` in bytes (``MemAvailable`` on the CPU), or None where unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_batch_fits(solver: torch.nn.Module, sample: torch.Tensor, measurement, batch_size: int,
                     device: torch.device) -> None:
    """Refuse ``batch_size`` when one sample's activations times the batch exceed the free memory.

    Args:
        solver: the model to train (probed in eval mode, so no batch-norm statistic moves).
        sample: one training item ``(C, ...)``, or a measured item ``{"image", "kspace"}``
            (:mod:`learn2invert.data.items`).
        measurement: ``measurement(x, generator) -> (y, op, sigma)`` as in training.
        batch_size: samples per step on this device.
        device: where training runs.

    Raises:
        ValueError: naming ``train.batch_size``, the bytes per sample and the bytes free.
    """
    free = available_bytes(device)
    if free is None:
        return
    image, kspace = split_item(sample)
    x = image[None].to(device)
    own = {} if kspace is None else {"kspace": kspace[None].to(device)}
    per_sample = 0
    # An operator mixture: the operator whose measurement costs the most memory decides.
    for probe in getattr(measurement, "components", None) or [measurement]:
        y, op, sigma = probe(x, torch.Generator().manual_seed(0), **own)
        was_training = solver.training
        solver.eval()
        try:
            per_sample = max(per_sample, saved_tensor_bytes(lambda: solver(y, op, sigma=sigma)[-1].float().square().mean(),
                                                            solver.parameters()))
        finally:
            solver.train(was_training)
    need = HEADROOM * batch_size * per_sample
    if need > free:
        fits = max(0, int(free / (HEADROOM * per_sample)))
        raise ValueError(f"train.batch_size={batch_size} needs about {need / 2**30:.1f} GiB for activations "
                         f"({per_sample / 2**20:.1f} MiB per sample, measured on one sample), more than the "
                         f"{free / 2**30:.1f} GiB free on {device.type}; use train.batch_size <= {fits} or a "
                         "memory-saving solver mode")


__all__ = ["saved_tensor_bytes", "available_bytes", "check_batch_fits", "HEADROOM"]
