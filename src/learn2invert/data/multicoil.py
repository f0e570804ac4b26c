"""Multi-coil training pairs: complex images with simulated receive-coil sensitivities.

:class:`MultiCoilSlices` wraps any dataset of complex images ``(2, H, W)`` (typically
:class:`~learn2invert.data.brain.BrainSlices`) and returns ``(image, sensitivities)``: the image
unchanged and analytic coil maps ``(2, C, H, W)`` from
:func:`~learn2invert.operators.multicoil.simulated_coil_maps` (``sum_c |S_c|^2 = 1`` at every
pixel). The measurement is simulated in the training loop, where the mask is drawn; one operator
per batch, since the maps differ per sample when randomised::

    from torch.utils.data import DataLoader
    from learn2invert.data import BrainSlices, MultiCoilSlices
    from learn2invert.operators import MultiCoilMRI, masks

    data = MultiCoilSlices(BrainSlices("train", size=128, scale=0.7), n_coils=8, randomize=True)
    for x, maps in DataLoader(data, batch_size=4, shuffle=True):   # (B, 2, H, W), (B, 2, C, H, W)
        op = MultiCoilMRI(masks.random_mask((128,), 4, 0.08), maps)
        y = op(x)                                                    # (B, 2, C, H, W) k-space
        y = y + sigma * torch.randn_like(y)  # noise off the mask is ignored: A_adjoint masks y
        x_hat = model(y, op)                                         # loss against x

With ``maps`` replaced by :func:`~learn2invert.operators.multicoil.estimate_sensitivities`
``(y, mask)`` a model trains on estimated rather than true maps, as it would meet them on real
scans; the estimate carries the object's low-resolution phase, so compare magnitudes then.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch.utils.data import Dataset

from ..operators.multicoil import simulated_coil_maps

__all__ = ["MultiCoilSlices"]


class MultiCoilSlices(Dataset):
    """A dataset of ``(image (2, H, W), sensitivities (2, C, H, W))`` float32 pairs.

    Args:
        images: a dataset whose items are complex images ``(2, H, W)`` (real, imaginary), e.g.
            :class:`~learn2invert.data.brain.BrainSlices`. ``set_epoch`` is passed on to it.
        n_coils: number of coils ``C`` (8-15 for typical head arrays).
        ring_radius, coil_radius: coil geometry in half fields of view (see
            :func:`~learn2invert.operators.multicoil.simulated_coil_maps`).
        randomize: ``False``: the same maps for every item (one coil array, cached per image
            size). ``True``: each item draws a rotation of the array and a random smooth extra
            phase per coil (up to ``phase_amplitude`` radians) from ``(seed, index, epoch)``, so an
            item is reproducible in any order and DataLoader worker, and the model does not learn
            one fixed coil geometry.
        phase_amplitude: extra per-coil phase amplitude with ``randomize``.
        seed: seed of the random draws.
    """

    def __init__(
        self,
        images: Dataset,
        n_coils: int = 8,
        *,
        ring_radius: float = 1.5,
        coil_radius: float = 0.6,
        randomize: bool = False,
        phase_amplitude: float = math.pi / 4,
        seed: int = 0,
    ) -> None:
        if isinstance(n_coils, bool) or not isinstance(n_coils, (int, np.integer)) or n_coils < 1:
            raise ValueError(f"MultiCoilSlices: n_coils must be a positive int, got {n_coils!r}")
        # Fail here, not in a DataLoader worker: draw a tiny map set with the same geometry.
        simulated_coil_maps(int(n_coils), (1, 1), ring_radius=ring_radius, coil_radius=coil_radius,
                            phase_amplitude=phase_amplitude)
        self.images = images
        self.n_coils = int(n_coils)
        self.ring_radius = float(ring_radius)
        self.coil_radius = float(coil_radius)
        self.randomize = bool(randomize)
        self.phase_amplitude = float(phase_amplitude)
        self.seed = int(seed)
        self.epoch = 0
        self._fixed: dict[tuple[int, int], torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random maps (with ``randomize``) and pass the epoch to ``images``."""
        self.epoch = int(epoch)
        if hasattr(self.images, "set_epoch"):
            self.images.set_epoch(epoch)

    def maps(self, index: int, shape: tuple[int, int]) -> torch.Tensor:
        """The coil maps of item ``index`` for images of ``shape`` ``(H, W)``: float32 ``(2, C, H, W)``."""
        kwargs = dict(ring_radius=self.ring_radius, coil_radius=self.coil_radius)
        if not self.randomize:
            if shape not in self._fixed:
                self._fixed[shape] = simulated_coil_maps(self.n_coils, shape, **kwargs)
            return self._fixed[shape].clone()  # callers may modify their copy in place
        index = index % len(self)  # a negative index draws the same maps as its positive twin
        entropy = [self.seed, int(index)] + ([self.epoch] if self.epoch else [])
        state = np.random.SeedSequence(entropy).generate_state(2)
        gen = torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))
        return simulated_coil_maps(self.n_coils, shape, phase_amplitude=self.phase_amplitude, generator=gen, **kwargs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.images[index]
        if not isinstance(image, torch.Tensor) or image.dim() != 3 or image.shape[0] != 2:
            got = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
            raise ValueError(f"MultiCoilSlices: image items must be complex images (2, H, W) tensors, got {got}")
        return image, self.maps(index, tuple(int(s) for s in image.shape[-2:]))
