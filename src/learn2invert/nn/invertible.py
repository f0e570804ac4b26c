"""Invertible learning: back-propagation through a stack of invertible layers without storing activations.

Gomez et al. (2017), as used by the i-RIM (Putzky & Welling 2019, Sec. 1.2, 2.1): the forward
pass runs without an autograd graph and keeps only its output. The backward pass walks the
layers in reverse; each layer rebuilds its input from its output by inversion and
back-propagates the incoming gradient through itself alone. Activation memory is therefore one
layer's worth, whatever the depth.

A layer takes part by implementing the :class:`InvertibleLayer` protocol:

- ``forward(x) -> y`` and ``inverse(y) -> x`` (exact inverses of each other);
- ``invert_and_backward(y, grad_y) -> (x, grad_x, param_grads)``: rebuild the input and back-propagate
  ``grad_y`` through the layer; ``param_grads`` follows ``trainable_parameters()`` (None where a
  parameter got no gradient). :class:`InvertibleModule` gives a generic ``invert_and_backward`` (inversion
  plus one re-run of ``forward`` under autograd). Additive couplings override it so that the
  single evaluation of the coupling function serves both the inversion and the local backward;
- ``trainable_parameters() -> list[Tensor]``.

Parameter gradients are handed to autograd layer by layer during the backward pass (a
re-entrant ``torch.autograd.backward`` on the parameters, as reentrant checkpointing does):
they are accumulated into ``.grad`` and fire the usual hooks (DistributedDataParallel's
bucketing among them), and no more than one layer's gradients exist outside ``.grad`` at a
time, so peak memory does not grow with the number of parameters either. Consequences: train
with ``loss.backward()``; ``torch.autograd.grad(loss, parameters)`` does not see these
parameters (their gradients go to ``.grad``); a parameter shared by several layers receives one
accumulation per layer.

Layers may hold per-call context (a measurement ``y`` and its operator, for instance) as plain
attributes of small objects built for that call; nothing is captured globally, so the engine
can be used several times in one forward pass. The context is treated as constant: no gradient
flows to it.

Floating-point drift: inversion is exact in exact arithmetic only. In float32 the rebuilt
inputs drift slowly with depth (bounded in the tests for 400 layers). ``anchor_every=k`` stores
every k-th activation in the forward pass and restarts the reverse walk from it, trading
``L / k`` stored activations for a bounded drift.
"""
from __future__ import annotations

import contextlib
from typing import Protocol, Sequence, runtime_checkable

import torch
from torch import nn


@runtime_checkable
class InvertibleLayer(Protocol):
    """What the engine needs from a layer (see the module docstring)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor: ...

    def inverse(self, y: torch.Tensor) -> torch.Tensor: ...

    def invert_and_backward(self, y: torch.Tensor, grad_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]: ...

    def trainable_parameters(self) -> list[torch.Tensor]: ...


def local_backward(outputs: torch.Tensor, inputs: Sequence[torch.Tensor], grad_outputs: torch.Tensor) -> list:
    """``torch.autograd.grad`` that tolerates inputs the outputs do not depend on (their gradient is None)."""
    if not outputs.requires_grad:
        return [None] * len(inputs)
    return list(torch.autograd.grad(outputs, list(inputs), grad_outputs, allow_unused=True))


class InvertibleModule(nn.Module):
    """Base class of invertible ``nn.Module`` layers. Subclasses define ``forward`` and ``inverse``.

    The default :meth:`invert_and_backward` inverts under ``no_grad`` and then re-runs ``forward`` on the
    rebuilt input under autograd: two evaluations of the layer. Override it where a cheaper
    route exists (additive couplings).
    """

    def inverse(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - defined by subclasses
        raise NotImplementedError(f"{type(self).__name__} must define inverse()")

    def trainable_parameters(self) -> list[torch.Tensor]:
        return [p for p in self.parameters() if p.requires_grad]

    def invert_and_backward(self, y: torch.Tensor, grad_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
        with torch.no_grad():
            x = self.inverse(y)
        with torch.enable_grad():
            x_leaf = x.detach().requires_grad_(True)
            out = self.forward(x_leaf)
            grads = local_backward(out, [x_leaf, *self.trainable_parameters()], grad_y)
        return x, grads[0], grads[1:]


class AdditiveCoupling(InvertibleModule):
    """``y1 = x1, y2 = x2 + G(x1)`` with the channels split as ``x1 = x[:, :split]`` (Dinh et al. 2014).

    :meth:`invert_and_backward` evaluates ``G`` once: its output gives ``x2 = y2 - G(y1)`` and its graph the
    local backward.

    Args:
        function: ``G``, mapping ``(B, split, *S)`` to ``(B, C - split, *S)``.
        split: number of channels passed through unchanged.
    """

    def __init__(self, function: nn.Module, split: int) -> None:
        super().__init__()
        self.function = function
        self.split = split

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, : self.split], x[:, self.split :]
        return torch.cat([x1, x2 + self.function(x1)], dim=1)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        y1, y2 = y[:, : self.split], y[:, self.split :]
        return torch.cat([y1, y2 - self.function(y1)], dim=1)

    def invert_and_backward(self, y: torch.Tensor, grad_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list]:
        y1, y2 = y[:, : self.split], y[:, self.split :]
        g1, g2 = grad_y[:, : self.split], grad_y[:, self.split :]
        with torch.enable_grad():
            x1 = y1.detach().requires_grad_(True)
            f = self.function(x1)
            grads = local_backward(f, [x1, *self.trainable_parameters()], g2)
        x = torch.cat([y1, y2 - f.detach()], dim=1)
        grad_x1 = g1 if grads[0] is None else g1 + grads[0]
        return x, torch.cat([grad_x1, g2], dim=1), grads[1:]


class _InvertibleSequence(torch.autograd.Function):
    """Forward without a graph, backward by layer-wise inversion (see the module docstring)."""

    @staticmethod
    def forward(ctx, x, grad_anchor, layers, anchor_every):
        anchors = {}
        with torch.no_grad():
            h = x
            for i, layer in enumerate(layers):
                if anchor_every and i and i % anchor_every == 0:
                    anchors[i] = h
                h = layer.forward(h)
        if h is x:  # an empty stack: autograd needs a distinct output
            h = x.clone()
        ctx.layers, ctx.anchors = layers, anchors
        # The backward re-runs the layers: under the same autocast state as the forward (mixed
        # precision), as torch.utils.checkpoint does, or the rebuilt inputs would not match.
        ctx.autocast = [(kind, torch.get_autocast_dtype(kind)) for kind in ("cpu", "cuda") if torch.is_autocast_enabled(kind)]
        ctx.save_for_backward(h)
        return h

    @staticmethod
    def backward(ctx, grad_y):
        with contextlib.ExitStack() as stack:
            for kind, dtype in ctx.autocast:
                stack.enter_context(torch.autocast(kind, dtype=dtype))
            return _InvertibleSequence._reverse_walk(ctx, grad_y)

    @staticmethod
    def _reverse_walk(ctx, grad_y):
        (h,) = ctx.saved_tensors
        h = h.detach()
        grad = grad_y
        for i in range(len(ctx.layers) - 1, -1, -1):
            layer = ctx.layers[i]
            h, grad, grads = layer.invert_and_backward(h, grad)
            pairs = [(p, g) for p, g in zip(layer.trainable_parameters(), grads) if g is not None]
            if pairs:
                # Hand this layer's parameter gradients to autograd now (a re-entrant backward on the
                # leaves, as reentrant checkpointing does): they are accumulated into .grad, with
                # every gradient hook firing, and freed before the next layer is reversed.
                torch.autograd.backward([p for p, _ in pairs], [g for _, g in pairs])
            h = ctx.anchors.get(i, h)  # restart from the stored activation, dropping accumulated drift
        ctx.layers = ctx.anchors = None  # free the references held by the graph
        return grad, None, None, None


def invertible_sequence(layers: Sequence[InvertibleLayer], x: torch.Tensor, anchor_every: int = 0) -> torch.Tensor:
    """Apply ``layers`` in order to ``x``; train them with O(1) activation memory.

    Args:
        layers: objects following :class:`InvertibleLayer` (e.g. :class:`InvertibleModule`).
        x: input of the first layer, any shape the layers accept, e.g. ``(B, C, H, W)``.
        anchor_every: 0 (store nothing but the output) or k > 0 (also store every k-th
            activation to bound floating-point drift in very deep stacks).

    Returns:
        The last layer's output. When autograd is off, or nothing requires a gradient, the layers
        simply run in order.
    """
    if anchor_every < 0:
        raise ValueError(f"anchor_every must be >= 0, got {anchor_every}")
    for layer in layers:
        if not isinstance(layer, InvertibleLayer):
            raise TypeError(f"{type(layer).__name__} does not implement forward/inverse/invert_and_backward/trainable_parameters")
    trainable = any(layer.trainable_parameters() for layer in layers)
    if not torch.is_grad_enabled() or not (x.requires_grad or trainable):
        with torch.no_grad():
            for layer in layers:
                x = layer.forward(x)
        return x
    # The parameters are not inputs of the autograd function (their gradients are delivered layer
    # by layer in backward); this empty tensor makes the output require a gradient regardless.
    grad_anchor = torch.empty(0, device=x.device, requires_grad=True)
    return _InvertibleSequence.apply(x, grad_anchor, list(layers), anchor_every)


__all__ = ["InvertibleLayer", "InvertibleModule", "AdditiveCoupling", "invertible_sequence", "local_backward"]
