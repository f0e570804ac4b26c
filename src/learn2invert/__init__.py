"""learn2invert: learned iterative solvers of inverse problems in PyTorch."""
from . import metrics, operators

__version__ = "0.1.0"

__all__ = ["metrics", "operators", "__version__"]
