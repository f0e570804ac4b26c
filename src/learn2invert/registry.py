"""Every name a config or the command line can use, in one place: ``SOLVERS.get("rim")``.

One :class:`Registry` per kind of building block (solvers, proxes of the unrolled solver,
forward operators, datasets, losses, optimisers, learning-rate schedules, benchmarks). An entry is
a name, a one-line description and a target written as ``"package.module:attribute"``; the target
is imported on first use, so this module imports nothing of the package (it sits below every
layer and can be read without importing torch), and listing names never loads a solver.

Config validation, the "unknown name" errors (which list the valid names), the generated
configuration reference (``docs/configuration.md``, :func:`reference_markdown`) and the CLI help
are all produced from these tables. To add a building block, write it and add one line here.
"""
from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass
from typing import Any, Iterator


class ConfigError(ValueError):
    """A config is wrong; the message names the dotted key."""


class UnknownName(ConfigError):
    """A name that is not in its registry; the message names the config key and the valid names."""


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:attribute"
    help: str


class Registry:
    """Names of one kind of building block, each bound to an importable target.

    Args:
        kind: what the entries are, for messages ("solver", "dataset", ...).
        key: where a user writes the name ("solver.name", "l2i bench NAME", ...).
        hint: what else the key accepts, appended to the list of names in errors.
    """

    def __init__(self, kind: str, key: str, hint: str = "") -> None:
        self.kind, self.key, self.hint = kind, key, hint
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: str, help: str) -> None:
        """Add ``name`` -> ``target`` ("package.module:attribute"); a name is registered once."""
        if name in self._entries:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        if target.count(":") != 1:
            raise ValueError(f"the target of {self.kind} {name!r} must be 'package.module:attribute', got {target!r}")
        self._entries[name] = Entry(name, target, help)

    def get(self, name: str) -> Any:
        """The object registered as ``name`` (imported now); :class:`UnknownName` lists the valid names."""
        entry = self.entry(name)
        module, attribute = entry.target.split(":")
        return getattr(importlib.import_module(module), attribute)

    def entry(self, name: str) -> Entry:
        if not isinstance(name, str) or name not in self._entries:
            listed = ", ".join(self) + (f", {self.hint}" if self.hint else "")
            raise UnknownName(f"config key '{self.key}': unknown {self.kind} {name!r} (choose from {listed})")
        return self._entries[name]

    def help(self, name: str) -> str:
        return self.entry(name).help

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


SOLVERS = Registry("solver", "solver.name")
SOLVERS.register("rim", "learn2invert.solvers.rim:RIM", "recurrent inference machine (Putzky & Welling 2017); architecture strided or mri")
SOLVERS.register("irim", "learn2invert.solvers.irim:IRIM", "invertible RIM trained with O(1) activation memory (Putzky & Welling 2019)")
SOLVERS.register("unet", "learn2invert.solvers.unet:UNet", "U-Net post-processing of the adjoint / zero-filled image (baseline)")
SOLVERS.register("admm", "learn2invert.solvers.admm:ADMMNet", "unrolled ADMM with CNN proxes and conjugate-gradient data consistency")
SOLVERS.register("unrolled", "learn2invert.solvers.unrolled:unrolled_solver",
                 "unrolled proximal gradient with a learned prox (solver.params.prox); LUSER with prox: luser")
SOLVERS.register("deq4ip", "learn2invert.solvers.deq4ip:DEQ4IP", "deep equilibrium proximal gradient (Gilton et al. 2021), LUSER's baseline")
SOLVERS.register("flow_density", "learn2invert.nn.prox.glow:FlowDensity",
                 "GLOW density model trained by maximum likelihood: the prior of prox: flow (not a reconstruction solver)")

PROXES = Registry("prox", "solver.params.prox")
PROXES.register("resnet", "learn2invert.nn.prox.resnet:ResNetProx", "residual CNN prox")
PROXES.register("dncnn", "learn2invert.nn.prox.dncnn:DnCNN", "DnCNN prox (LU-DnCNN, LUSER's baseline)")
PROXES.register("unet", "learn2invert.nn.prox.unet:UNetProx", "U-Net prox")
PROXES.register("luser", "learn2invert.nn.prox.luser:ShallowEquilibriumProx", "LUSER's shallow deep-equilibrium regulariser")
PROXES.register("glow", "learn2invert.nn.prox.glow:GlowProx", "proximal step in the latent space of a trained GLOW prior")

DATASETS = Registry("dataset", "data.name")
DATASETS.register("natural_patches", "learn2invert.train.datasets:natural_patches",
                  "patches of scikit-image's photographs (train/test split by image)")
DATASETS.register("brain_slices", "learn2invert.train.datasets:brain_slices",
                  "axial slices of the MNI152 brain template as complex MRI images (disjoint train/val/test slabs)")
DATASETS.register("brain_mix", "learn2invert.train.datasets:brain_mix",
                  "augmented slices of all three orientations of the template (+ photographs with params.natural, "
                  "synthetic dead-leaves images with params.dead_leaves); "
                  "validation/test: brain_slices")
DATASETS.register("brain_patches3d", "learn2invert.train.datasets:brain_patches3d", "3-D complex patches of the template (params.patch: [D, H, W])")
DATASETS.register("ellipses", "learn2invert.train.datasets:ellipses", "random ellipse phantoms (dival's splits)")
DATASETS.register("image_folder", "learn2invert.train.datasets:image_folder", "your own images: a folder (data.root) of PNG/JPEG/TIFF/.npy")
DATASETS.register("dicom", "learn2invert.train.datasets:dicom", "DICOM images (data.root; pydicom:NAME for pydicom's test files)")
DATASETS.register("nifti", "learn2invert.train.datasets:nifti", "slices of a NIfTI volume (data.root)")
DATASETS.register("fastmri", "learn2invert.train.datasets:fastmri",
                  "fastMRI HDF5 files, single-coil or multi-coil (data.params.train_root/val_root/test_root; "
                  "data.params.own_coils: multi-coil files' own coil k-space, undersampled, instead of simulated)")

OPERATORS = Registry("operator", "operator.name", hint="or name your own class as package.module:Class")
OPERATORS.register("denoising", "learn2invert.operators.generator:denoising", "identity: y = x + noise")
OPERATORS.register("gaussian_blur", "learn2invert.operators.generator:gaussian_blur", "convolution with a Gaussian kernel")
OPERATORS.register("inpainting", "learn2invert.operators.generator:inpainting", "random pixel mask per sample (operator.keep_fraction) or a centred hole")
OPERATORS.register("super_resolution", "learn2invert.operators.generator:super_resolution", "box-filter down-sampling by params.factor")
OPERATORS.register("random_projection", "learn2invert.operators.generator:random_projection", "dense Gaussian/Bernoulli/Fourier projection to m values")
OPERATORS.register("mri", "learn2invert.operators.generator:mri",
                   "Cartesian MRI, one random mask per sample; single-coil, or SENSE multi-coil with params.coils")
OPERATORS.register("ct", "learn2invert.operators.generator:ct", "parallel-beam CT (Radon transform)")
OPERATORS.register("phase_retrieval", "learn2invert.operators.generator:phase_retrieval", "nonlinear: |F x| (Fourier magnitude)")
OPERATORS.register("beer_lambert_ct", "learn2invert.operators.generator:beer_lambert_ct", "nonlinear: exp(-R x) with Poisson counts")

LOSSES = Registry("loss", "loss.name")
LOSSES.register("mse", "learn2invert.train.losses:mse_loss", "mean squared error")
LOSSES.register("l1", "learn2invert.train.losses:l1_loss", "mean absolute error")
LOSSES.register("nmse", "learn2invert.train.losses:nmse_loss", "squared error normalised by the target's energy, per image")
LOSSES.register("psnr", "learn2invert.train.losses:psnr_loss", "minus the mean per-image PSNR (dB), up to a constant")
LOSSES.register("ssim", "learn2invert.train.losses:ssim_loss", "1 - SSIM of the magnitude images")
LOSSES.register("bits_per_dim", "learn2invert.train.density:train_density",
                "likelihood training of a density model (solver flow_density, no measurements): a flow prior")

OPTIMIZERS = Registry("optimiser", "train.optimizer.name")
OPTIMIZERS.register("adam", "torch.optim:Adam", "Adam")
OPTIMIZERS.register("adamw", "torch.optim:AdamW", "Adam with decoupled weight decay")
OPTIMIZERS.register("sgd", "torch.optim:SGD", "stochastic gradient descent (momentum in train.optimizer)")

SCHEDULES = Registry("schedule", "train.schedule.name")
SCHEDULES.register("none", "learn2invert.train.experiment:constant_schedule", "constant learning rate")
SCHEDULES.register("cosine", "learn2invert.train.experiment:cosine_schedule", "cosine annealing over the epochs")
SCHEDULES.register("step", "learn2invert.train.experiment:step_schedule", "StepLR (step_size, gamma) per epoch")
SCHEDULES.register("warmup_cosine", "learn2invert.train.experiment:warmup_cosine_schedule",
                   "linear warm-up, then cosine to final_lr_fraction at train.max_steps (per optimiser step)")

BENCHMARKS = Registry("benchmark", "l2i bench NAME")
BENCHMARKS.register("memory", "learn2invert.bench.memory:main", "training memory vs depth for RIM and i-RIM, or of any config (--configs)")
BENCHMARKS.register("speed", "learn2invert.bench.speed:main",
                    "training steps/s, FLOPs and GFLOP/s against a convolution's, inference time, per solver")
BENCHMARKS.register("operators", "learn2invert.bench.operator_speed:main", "forward/adjoint time of every operator")
BENCHMARKS.register("compare", "learn2invert.bench.compare:main", "trained runs vs zero-filled/adjoint, FBP and TV on the same test data")
BENCHMARKS.register("precision", "learn2invert.bench.precision_speed:main", "training step time of a config in fp32 vs bf16 / fp16 autocast")
BENCHMARKS.register("curves", "learn2invert.bench.curves:main", "validation PSNR against optimiser steps of trained runs (history.json)")


def build(factory, params: dict, key: str, *args):
    """Call ``factory(*args, **params)`` from config values; a wrong keyword becomes a ConfigError naming the config key."""
    try:
        inspect.signature(factory).bind(*args, **params)
    except TypeError as err:
        raise ConfigError(f"config key '{key}': {err} (for {getattr(factory, '__name__', factory)})") from err
    return factory(*args, **params)


ALL = (SOLVERS, PROXES, DATASETS, OPERATORS, LOSSES, OPTIMIZERS, SCHEDULES, BENCHMARKS)


def check_config_names(config: dict) -> None:
    """Raise :class:`UnknownName` for the first name in a resolved config that no registry knows.

    Operators named ``package.module:Class`` (a user's class) and operator mixtures are checked
    where they are built, as are the names inside ``operator.mixture``.
    """
    solver = config["solver"]
    checks = [(DATASETS, config["data"]["name"]), (SOLVERS, solver["name"]), (LOSSES, config["loss"]["name"]),
              (OPTIMIZERS, config["train"]["optimizer"].get("name", "adam")),
              (SCHEDULES, config["train"]["schedule"].get("name", "none"))]
    if solver["name"] == "unrolled" and "prox" in solver["params"]:
        checks.append((PROXES, solver["params"]["prox"]))
    operator = config["operator"]["name"]
    if not (isinstance(operator, str) and (":" in operator or operator == "mixture")):
        checks.append((OPERATORS, operator))
    for registry, name in checks:
        registry.entry(name)


def reference_markdown() -> str:
    """The names part of ``docs/configuration.md``: one table per registry."""
    lines = []
    for registry in ALL:
        lines += [f"### `{registry.key}`: {registry.kind}s", "", "| name | what it is |", "|---|---|"]
        lines += [f"| `{name}` | {registry.help(name)} |" for name in registry]
        lines.append("")
    return "\n".join(lines)


__all__ = ["Registry", "Entry", "ConfigError", "UnknownName", "build", "SOLVERS", "PROXES", "DATASETS", "OPERATORS", "LOSSES", "OPTIMIZERS",
           "SCHEDULES", "BENCHMARKS", "ALL", "check_config_names", "reference_markdown"]
