"""Inference with trained solvers: rebuild one from its run folder, score it, reconstruct files.

- :mod:`.load`: :func:`load_solver` (run folder -> solver, config, measurement, image shape);
- :mod:`.evaluate`: ``l2i eval``, metrics of a run on a data split (:func:`evaluate_run`);
- :mod:`.reconstruct`: ``l2i reconstruct``, a trained solver applied to your files
  (:func:`reconstruct.reconstruct`).

This package sits above ``train`` (it rebuilds solvers with the training config's builders) and
below ``pretrained`` (whose models it loads like any run folder).
"""
from .load import NotAReconstructionRun, load_solver
from .evaluate import evaluate_run
from . import reconstruct  # the module; its function is reconstruct.reconstruct

__all__ = ["load_solver", "NotAReconstructionRun", "evaluate_run", "reconstruct"]
