"""Training: the config of ``l2i train``, its builders by name, losses, and the loop.

- :func:`train` (``l2i train``): a YAML config (or None for the defaults) plus ``--set``-style
  overrides -> a run folder with checkpoints and history;
- :func:`load_config`, :func:`dump_config`: read / validate / write a config;
- :func:`build_solver`, :func:`build_dataset`, :func:`build_optimizer`: what a config names;
- :func:`iterate_loss` (the loss over a solver's list of estimates) and the per-image losses;
- :func:`score_dataset`: PSNR / SSIM / NMSE of a solver on a data set.
"""
from .config import ConfigError, dump_config, load_config
from .datasets import build_dataset
from .experiment import build_optimizer, build_solver
from .losses import iterate_loss, l1_loss, mse_loss, nmse_loss, ssim_loss
from .loop import DivergenceWarning, TrainingDiverged, resolve_device, train
from .validate import score_dataset

__all__ = [
    "train", "TrainingDiverged", "DivergenceWarning", "resolve_device",
    "load_config", "dump_config", "ConfigError",
    "build_solver", "build_dataset", "build_optimizer",
    "iterate_loss", "mse_loss", "l1_loss", "nmse_loss", "ssim_loss",
    "score_dataset",
]
