"""Learned proximal maps for the unrolled solvers, one file each, all subclasses of :class:`Prox` (base.py).

- :class:`DnCNN` (dncnn.py): DnCNN, residual; spectrally normalised it is DEQ4IP's prox;
- :class:`ResNetProx` (resnet.py): the ResNet prox of Mardani et al. (2018);
- :class:`UNetProx` (unet.py): the library's U-Net (:mod:`learn2invert.nn.unet`) as a prox;
- :class:`GlowProx` (glow.py): latent shrinkage through a GLOW flow, with its density model
  :class:`FlowDensity` (flow unfolding, Wei et al. 2022);
- :class:`ShallowEquilibriumProx` (luser.py): LUSER's shallow deep-equilibrium regulariser.

Each is registered by name in :data:`learn2invert.registry.PROXES` (``solver.params.prox``).
"""
from .base import Prox
from .dncnn import DnCNN
from .glow import FlowDensity, GlowProx
from .luser import ShallowEquilibriumProx
from .resnet import ResNetProx
from .unet import UNetProx

__all__ = ["DnCNN", "FlowDensity", "GlowProx", "Prox", "ResNetProx", "ShallowEquilibriumProx", "UNetProx"]
