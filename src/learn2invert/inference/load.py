"""A trained solver back from its run folder: :func:`load_solver`.

A run folder of ``l2i train`` (or a shipped model's folder, see :mod:`learn2invert.pretrained`)
holds the resolved config and the weights (:mod:`learn2invert.checkpoint`); the solver is rebuilt
from the config and given the weights, together with the measurement the config simulates.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..checkpoint import CONFIG_FILE, load_model, weights_file
from ..data.items import item_shape
from ..operators.generator import Measurement
from ..train.config import load_config
from ..train.datasets import build_dataset
from ..train.experiment import build_solver, without_initial_weights


class NotAReconstructionRun(ValueError):
    """The run folder holds a model that does not reconstruct measurements (a flow prior)."""


def check_reconstruction_run(config: dict, run_dir: Path | str) -> None:
    """Refuse a run whose model cannot be called as ``solver(y, operator, sigma=...)``: a flow prior
    trained by likelihood (``loss.name: bits_per_dim``) only scores and samples clean images."""
    if config["loss"]["name"] == "bits_per_dim" or config["solver"]["name"] == "flow_density":
        raise NotAReconstructionRun(
            f"{run_dir} is a flow prior trained by likelihood (solver.name: {config['solver']['name']}, loss.name: "
            f"{config['loss']['name']}), not a reconstruction model: it is a prior for flow unfolding; train "
            f"projects/flow_unfolding2021/configs/flow_denoise.yaml (or flow_deblur, flow_inpaint) with --set "
            f"solver.params.pretrained={run_dir} and evaluate or reconstruct with that run (the prior's samples: {Path(run_dir) / 'samples.png'})")


def _image_shape(config: dict) -> tuple[int, ...]:
    """The shape of one validation item, without reading the user's image folder when the config fixes it.

    A run trained on a folder of images keeps only the folder's path; its patches' shape follows
    from ``data.grey`` and ``data.patch_size``, so the run still loads after the folder moved.
    """
    d = config["data"]
    if d["name"] == "image_folder" and d["patch_size"]:
        size = d["patch_size"]
        height, width = (size, size) if isinstance(size, int) else size
        return (1 if d["grey"] else 3, int(height), int(width))
    return item_shape(build_dataset(config, "val")[0])


def load_solver(run_dir: str | Path, device: str | torch.device = "cpu",
                weights: str = "best") -> tuple[torch.nn.Module, dict, Measurement, tuple]:
    """Rebuild a trained solver from its run folder: returns (solver, config, measurement, image_shape).

    ``weights="best"`` (default) loads the weights of the lowest validation loss
    (``best.safetensors``), ``"last"`` the latest checkpoint (``model.safetensors``).
    """
    run_dir = Path(run_dir)
    path = weights_file(run_dir, weights)
    config = load_config(run_dir / CONFIG_FILE, saved=True)
    check_reconstruction_run(config, run_dir)
    image_shape = _image_shape(config)
    solver = build_solver(without_initial_weights(config), image_shape)
    load_model(solver, path)
    return solver.to(device).eval(), config, Measurement(config, image_shape), image_shape


__all__ = ["NotAReconstructionRun", "check_reconstruction_run", "load_solver"]
