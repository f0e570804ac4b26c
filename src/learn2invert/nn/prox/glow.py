"""A GLOW flow as a prior: density pre-training (:class:`FlowDensity`) and latent shrinkage prox (:class:`GlowProx`).

The flow-unfolding paper (Wei et al., Sec. III) first trains a GLOW flow on clean images by
maximum likelihood, then puts one copy of it in every fold of an unrolled proximal gradient
solver, where the prox shrinks in the latent space::

    z~ = f_k(x~),   z = z~ / (1 + lambda_k),   x = g_k(z) = f_k^-1(z)

and fine-tunes everything end to end. ``f`` and ``g`` run through the invertible engine
(``memory="invertible"``), so the folds' flows train without storing their activations.

Both classes see images in ``[0, 1]`` and feed the flow ``x - 0.5`` (centred data, as GLOW
expects); :data:`OFFSET` is that shift, shared so a pre-trained flow and its prox agree.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..flows import Glow, dequantize
from .base import Prox, inverse_softplus

OFFSET = 0.5  # images in [0, 1] enter the flow as x - OFFSET


def _flow(channels: int, image_size: int, levels: int, depth: int, hidden: int, memory: str, coupling: str) -> Glow:
    return Glow(channels, image_size, levels=levels, depth=depth, hidden=hidden, memory=memory, coupling=coupling)


class FlowDensity(nn.Module):
    """A GLOW density model of images in ``[0, 1]``, trained by ``l2i train`` with ``loss.name: bits_per_dim``.

    Args:
        channels, dims: image channels; dims must be 2.
        image_size, levels, depth, hidden, memory, coupling: of the :class:`~learn2invert.nn.flows.Glow`.

    :meth:`bits_per_dim` of clean 8-bit images (dequantised here) is the training loss; the
    run's weights initialise :class:`GlowProx` (``pretrained: RUN_DIR``).
    """

    def __init__(self, channels: int, dims: int = 2, image_size: int = 32, levels: int = 3, depth: int = 8,
                 hidden: int = 64, memory: str = "invertible", coupling: str = "affine") -> None:
        super().__init__()
        if dims != 2:
            raise ValueError(f"the GLOW flow works on 2D images, got dims={dims}")
        self.flow = _flow(channels, image_size, levels, depth, hidden, memory, coupling)

    def bits_per_dim(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Mean bits per dimension of 8-bit images ``x`` ``(B, C, H, W)`` in ``[0, 1]`` (scalar)."""
        return self.flow.bits_per_dim(dequantize(x, generator=generator) - OFFSET)

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 0.7) -> torch.Tensor:
        """``n`` images ``(n, C, H, W)`` in image units (about ``[0, 1]``)."""
        return self.flow.sample(n, temperature) + OFFSET

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bits_per_dim(x)


class GlowProx(Prox):
    """Latent-space shrinkage through a GLOW flow: ``x -> g(f(x - 0.5) / (1 + lambda)) + 0.5``.

    Args:
        channels, dims: image channels; dims must be 2.
        image_size, levels, depth, hidden, memory, coupling: of the flow (must match a pre-trained run).
        shrink_init: initial ``lambda`` (> 0; trained, kept positive by a softplus).

    ``(B, C, H, W) -> (B, C, H, W)``. :meth:`initial_guess` is the flow's most likely image
    ``g(0)`` (paper Sec. III-C); :meth:`scalar_parameters` lists ``lambda`` for its own
    learning rate.
    """

    def __init__(self, channels: int, dims: int = 2, image_size: int = 32, levels: int = 3, depth: int = 8,
                 hidden: int = 64, memory: str = "invertible", coupling: str = "affine", shrink_init: float = 0.05) -> None:
        super().__init__()
        if dims != 2:
            raise ValueError(f"the GLOW prox works on 2D images, got dims={dims}")
        if not shrink_init > 0:
            raise ValueError(f"shrink_init must be > 0, got {shrink_init}")
        self.flow = _flow(channels, image_size, levels, depth, hidden, memory, coupling)
        self.shrink_raw = nn.Parameter(torch.tensor(inverse_softplus(float(shrink_init))))

    def shrinkage(self) -> torch.Tensor:
        return F.softplus(self.shrink_raw)

    def scalar_parameters(self) -> list[nn.Parameter]:
        return [self.shrink_raw]

    def _check_size(self, x: torch.Tensor) -> None:
        # The flow's own check does not say who refused the image; inside an unrolled solver that matters.
        k = 2**self.flow.levels
        if x.dim() != 4 or x.shape[-2] % k or x.shape[-1] % k or 0 in x.shape[-2:]:
            raise ValueError(f"GlowProx: images must have shape (B, C, H, W) with H and W positive multiples of "
                             f"2**levels = {k}, got shape {tuple(x.shape)}")

    def initial_guess(self, like: torch.Tensor) -> torch.Tensor:
        """The most likely image ``g(0)`` with the batch size and image shape of ``like``."""
        self._check_size(like)
        if like.shape[0] == 0:  # the flow's invertible layers reject an empty batch (as the i-RIM's do)
            return torch.zeros_like(like)
        z = torch.zeros(like.shape[0], like.shape[1:].numel(), dtype=like.dtype, device=like.device)
        return self.flow.decode(z, image_size=tuple(like.shape[-2:])) + OFFSET

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_size(x)
        if x.shape[0] == 0:  # nothing to shrink; the flow's layers reject an empty batch
            return x.clone()
        z, _ = self.flow.encode(x - OFFSET)
        return self.flow.decode(z / (1 + self.shrinkage()), image_size=tuple(x.shape[-2:])) + OFFSET


__all__ = ["FlowDensity", "GlowProx", "OFFSET"]
