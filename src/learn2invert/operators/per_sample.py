"""One batch measured by several operators: each sample by its own (multi-operator training).

:func:`concat_operators` makes one operator for a batch from the per-sample ones (masks stacked
where the operators are of one kind, else a :class:`PerSampleOperators`).

A training batch drawn from an operator mixture with ``operator.per: sample`` holds samples of
different physics (e.g. Gaussian and Bernoulli projections with the same number of
measurements). :class:`PerSampleOperators` presents them to a solver as one operator: every call
splits the batch by operator, applies each operator to its samples and puts the results back in
batch order. The measurements of all samples must have one shape, so that ``y`` is one tensor.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .likelihood import back_projection, data_gradient, is_linear, normal
from .multicoil import MultiCoilMRI

__all__ = ["PerSampleOperators", "concat_operators"]


class PerSampleOperators(nn.Module):
    """Sample ``b`` of a batch of ``B`` measured by ``operators[k]`` for the ``k`` with ``b`` in ``indices[k]``.

    Args:
        operators: the distinct operators, each acting on a batch of the samples it measures
            (or a shared one acting on any batch size, as fixed operators do).
        indices: for each operator, the batch positions of its samples; together they cover
            ``0 .. B-1`` exactly once.

    ``A``: ``x (B, *image)`` -> ``y (B, *measurement)``; ``A_adjoint``: back. The per-operator
    measurement shapes (past the batch axis) must agree. The data-consistency gradient
    (:meth:`likelihood_gradient`) takes each sample's from its own operator, with its own noise
    model (Gaussian or Poisson) and variance, so linear and nonlinear operators may be mixed.
    """

    def __init__(self, operators: Sequence, indices: Sequence[Sequence[int]]) -> None:
        super().__init__()
        if len(operators) != len(indices) or not operators:
            raise ValueError(f"PerSampleOperators: {len(operators)} operators but {len(indices)} index lists; "
                             "give one list of batch positions per operator")
        flat = sorted(int(i) for group in indices for i in group)
        if flat != list(range(len(flat))):
            raise ValueError(f"PerSampleOperators: the index lists must cover the batch positions 0..B-1 exactly once, "
                             f"got {[list(g) for g in indices]}")
        # Modules (built-in operators) move with .to(); a user's plain-object operator stays as it is.
        self.ops = nn.ModuleList([op for op in operators if isinstance(op, nn.Module)])
        self._operators = list(operators)
        self.indices = [[int(i) for i in group] for group in indices]
        self.batch = len(flat)
        order = torch.tensor([i for group in self.indices for i in group])
        self._inverse = torch.argsort(order)  # row of the concatenated results for each batch position
        self.linear = all(is_linear(op) for op in self._operators)

    @property
    def operators(self) -> list:
        """The distinct operators, in the order of :attr:`indices` (``.to()`` moves the modules in place)."""
        return list(self._operators)

    def _check(self, t: torch.Tensor, name: str) -> None:
        if not isinstance(t, torch.Tensor) or t.dim() < 1 or t.shape[0] != self.batch:
            shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"PerSampleOperators: {name} must be a batch of {self.batch} samples (one per operator "
                             f"assignment), got shape {shape}")

    def _each(self, fn, *tensors: torch.Tensor) -> torch.Tensor:
        """``fn(op, *slices)`` for every operator on its samples, reassembled in batch order."""
        parts = []
        for op, group in zip(self.operators, self.indices):
            index = torch.tensor(group, device=tensors[0].device)
            parts.append(fn(op, *(t.index_select(0, index) for t in tensors)))
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) > 1:
            raise ValueError(f"PerSampleOperators: the operators give results of different shapes {sorted(shapes)}; "
                             "samples measured in one batch need measurements of one shape")
        return torch.cat(parts).index_select(0, self._inverse.to(parts[0].device))

    def A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Images ``(B, *image)`` -> measurements ``(B, *measurement)``, each sample by its operator."""
        self._check(x, "image x")
        return self._each(lambda op, xs: op.A(xs), x)

    def A_adjoint(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """Measurements ``(B, *measurement)`` -> images ``(B, *image)``; linear operators only."""
        self._check(y, "measurements y")
        if not self.linear:
            raise TypeError("PerSampleOperators: A_adjoint needs every operator linear; a nonlinear one is mixed in "
                            "(use likelihood_gradient / A_dagger)")
        return self._each(lambda op, ys: op.A_adjoint(ys), y)

    def A_adjoint_A(self, x: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """``A^T A x`` per sample ``(B, *image)``."""
        self._check(x, "image x")
        return self._each(normal, x)

    def A_dagger(self, y: torch.Tensor) -> torch.Tensor:  # noqa: N802
        """A first image estimate per sample: ``A^T y`` (linear) or the operator's ``A_dagger``."""
        self._check(y, "measurements y")
        return self._each(lambda op, ys: back_projection(op, ys), y)

    def likelihood_gradient(self, x: torch.Tensor, y: torch.Tensor, variance) -> torch.Tensor:
        """``grad_x log p(y | x)`` of each sample from its own operator; ``variance`` a float or a
        tensor with the batch first (``(B, 1, ...)``) or broadcast over it (``(1, ...)``)."""
        self._check(x, "image x")
        self._check(y, "measurements y")
        var = torch.as_tensor(variance, dtype=x.dtype, device=x.device)
        if var.dim() == 0 or var.shape[0] == 1:
            return self._each(lambda op, xs, ys: data_gradient(op, xs, ys, var), x, y)
        if var.shape[0] != self.batch:
            raise ValueError(f"PerSampleOperators: variance of shape {tuple(var.shape)} must be a number or have the "
                             f"batch ({self.batch}) or 1 first")
        return self._each(lambda op, xs, ys, vs: data_gradient(op, xs, ys, vs), x, y, var)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.A(x)

    def extra_repr(self) -> str:
        kinds = ", ".join(f"{type(op).__name__} x{len(g)}" for op, g in zip(self._operators, self.indices))
        return f"batch={self.batch}: {kinds}"


def _batch_key(op) -> tuple | None:
    """Operators with equal keys stack along the batch through their mask (and coil maps); None: they don't."""
    mask = getattr(op, "mask", None)
    if not isinstance(mask, torch.Tensor):
        return None
    if isinstance(op, MultiCoilMRI):
        return (MultiCoilMRI, op.fft_dims, tuple(mask.shape[1:]), tuple(op.sensitivities.shape[1:]))
    return (type(op), getattr(op, "fft_dims", None), tuple(mask.shape[1:]))


def _stack(ops: list):
    """Operators of one :func:`_batch_key`, one per sample, as one operator with masks stacked."""
    first = ops[0]
    masks = torch.cat([op.mask.expand(1, *op.mask.shape[1:]) for op in ops])
    if isinstance(first, MultiCoilMRI):  # per-sample masks and coil maps
        return MultiCoilMRI(masks, torch.cat([op.sensitivities.expand(1, *op.sensitivities.shape[1:]) for op in ops]),
                            fft_dims=first.fft_dims)
    if hasattr(first, "fft_dims"):  # MRI: keep the FFT model (per-slice 2-D or 3-D) of the samples
        return type(first)(masks, fft_dims=first.fft_dims)
    return type(first)(masks)


def concat_operators(ops: list):
    """One operator for a batch from the per-sample ones (sample ``k`` measured by ``ops[k]``).

    One shared operator is returned as it is; MRI and inpainting operators of one kind get their
    masks (and coil maps) stacked along the batch; anything else (the operators of an operator
    mixture drawn per sample) becomes a :class:`PerSampleOperators`
    that applies each operator to its own samples.
    """
    first = ops[0]
    if all(op is first for op in ops):
        return first
    keys = [_batch_key(op) for op in ops]
    if keys[0] is not None and all(k == keys[0] for k in keys):
        return _stack(ops)
    groups: dict = {}  # stackable kind, or the operator object itself -> batch positions
    for k, (op, key) in enumerate(zip(ops, keys)):
        groups.setdefault(key if key is not None else ("object", id(op)), []).append(k)
    combined = [_stack([ops[k] for k in group]) if key[0] != "object" else ops[group[0]] for key, group in groups.items()]
    return PerSampleOperators(combined, list(groups.values()))
