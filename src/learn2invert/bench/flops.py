"""Count the floating-point operations a piece of PyTorch code performs: :class:`FlopCount`.

Counts at the level of ATen operators with PyTorch's own per-operator formulas
(``torch.utils.flop_counter.flop_registry``: convolutions, their backward, matrix products,
attention), so it sees exactly what runs, recomputations included: the invertible engine's
reconstruction of activations during backward, implicit differentiation's fixed-point
iterations. Element-wise operations count 0, as in ``FlopCounterMode``; on the CPU they are
memory-bound anyway. One multiply-add counts as 2 operations.

``torch.utils.flop_counter.FlopCounterMode`` itself cannot be used for the solvers: its
per-module tracking installs backward hooks that fail inside a custom autograd Function that
calls ``torch.autograd.grad`` (the invertible engine does), so this is a plain dispatch mode
without module tracking.
"""
from __future__ import annotations

from collections import Counter

import torch
import torch.utils._pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry


def _shape(value):
    return value.shape if isinstance(value, torch.Tensor) else value


class FlopCount(TorchDispatchMode):
    """Context manager that adds up the FLOPs of every ATen operator run inside it.

    ``with FlopCount() as count: step()`` then ``count.total`` (FLOPs) and ``count.by_operator``
    (``{"aten.convolution": flops, ...}``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.by_operator: Counter[str] = Counter()

    @property
    def total(self) -> int:
        return sum(self.by_operator.values())

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            flops = formula(*pytree.tree_map(_shape, args), **pytree.tree_map(_shape, kwargs),
                            out_val=pytree.tree_map(_shape, out))
            self.by_operator[str(func._overloadpacket)] += int(flops)
        return out


def count_flops(fn) -> FlopCount:
    """Run ``fn()`` once and return its :class:`FlopCount`."""
    with FlopCount() as count:
        fn()
    return count


__all__ = ["FlopCount", "count_flops"]
