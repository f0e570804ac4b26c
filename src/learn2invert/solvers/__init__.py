"""Solvers of inverse problems, learned and classical, all with one call (:class:`Solver`)::

    estimates = solver(y, operator, x0=None, steps=None, sigma=None)   # list; the last is the result

Learned: :class:`RIM` (RIM / GDN / FFN), :class:`IRIM` (invertible, memory independent of depth),
:class:`UNet`, :class:`ADMMNet`, :class:`UnrolledProximalGradient` (with a prox from
:mod:`learn2invert.nn.prox`: ResNet, U-Net, DnCNN, GLOW, LUSER; :func:`unrolled_solver` builds one
by name) and :class:`DEQ4IP`. Classical: :class:`Adjoint`, :class:`TikhonovSolver`,
:class:`TVSolver`, and the functions :func:`tikhonov`, :func:`nonlinear_tikhonov`, :func:`tv_reconstruct`,
:func:`conjugate_gradient`, :func:`choose_tv_weight`.
"""
from .base import Solver
from .classical import (Adjoint, TikhonovSolver, conjugate_gradient, nonlinear_tikhonov, normal_operator_norm,
                        tikhonov)
from .tv import TVSolver, choose_tv_weight, total_variation, tv_prox, tv_reconstruct
from .rim import RIM
from .irim import IRIM
from .unet import UNet
from .admm import ADMMNet
from .unrolled import UnrolledProximalGradient, load_pretrained_prox, unrolled_solver
from .deq4ip import DEQ4IP

__all__ = [
    "Solver",
    # learned
    "RIM", "IRIM", "UNet", "ADMMNet", "UnrolledProximalGradient", "unrolled_solver", "load_pretrained_prox", "DEQ4IP",
    # classical
    "Adjoint", "TikhonovSolver", "TVSolver", "tikhonov", "nonlinear_tikhonov", "tv_reconstruct", "tv_prox", "total_variation",
    "choose_tv_weight", "conjugate_gradient", "normal_operator_norm",
]
