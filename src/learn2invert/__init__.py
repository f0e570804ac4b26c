"""learn2invert: learned iterative solvers of inverse problems in PyTorch.

The public API is six subpackages, each with a curated ``__all__``::

    from learn2invert import operators, metrics, data, solvers, train, pretrained, inference

- :mod:`~learn2invert.operators`: forward models ``y = A(x)`` with exact adjoints, masks, noise;
- :mod:`~learn2invert.metrics`: PSNR, SSIM, NMSE as ``fastmri.evaluate`` computes them;
- :mod:`~learn2invert.data`: embedded data sets (photographs, phantoms, brain) and loaders;
- :mod:`~learn2invert.solvers`: every solver, learned or classical, called
  ``solver(y, operator, x0=None, steps=None, sigma=None) -> list of estimates``;
- :mod:`~learn2invert.train`: configs, losses, optimisers and the training loop of ``l2i train``;
- :mod:`~learn2invert.inference`: a trained run folder back as a solver, ``l2i eval`` / ``l2i reconstruct``;
- :mod:`~learn2invert.pretrained`: the shipped models (``pretrained.load("mri_admm_mixed")``).

``operators`` and ``metrics`` are imported with the package; the others on first use (PEP 562),
so ``import learn2invert`` stays light and the package's layers keep pointing down
(``tests/test_layers.py``). Runnable examples: ``examples/`` in the repository.
"""
from importlib import import_module

from . import metrics, operators

__version__ = "0.1.0"

_LAZY = ("data", "nn", "solvers", "train", "inference", "pretrained")

__all__ = ["operators", "metrics", "data", "solvers", "train", "inference", "pretrained", "__version__"]


def __getattr__(name: str):
    """``learn2invert.solvers`` etc.: the higher subpackages, imported on first access."""
    if name in _LAZY:
        module = import_module(f"{__name__}.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
