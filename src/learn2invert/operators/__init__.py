"""Forward operators: the physics ``y = A x`` of each inverse problem, with exact adjoints.

Every operator is an ``nn.Module`` with ``A(x)``, ``A_adjoint(y)`` and ``A_adjoint_A(x)``.
"""
from . import masks
from .base import LinearOperator, adjoint_mismatch, check_tensor
from .likelihood import likelihood_gradient
from .noise import add_gaussian_noise, quantize
