"""Build the parts of an experiment from a resolved config: data, measurements, solver, optimiser.

A :class:`Measurement` turns a batch of ground-truth images into ``(y, operator, sigma)``.
Operators whose physics is drawn per sample (MRI masks with random acceleration, inpainting
masks) get a batched buffer, so one operator call serves the whole batch and the solver never
knows the difference.
"""
from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from .. import operators
from ..solvers.base import Solver
from .config import ConfigError

VALIDATION_SEED_OFFSET = 10_007  # validation crops/noise never coincide with training ones


def _call(factory, params: dict, key: str, *args):
    """Call ``factory(*args, **params)``; a wrong keyword becomes a ConfigError naming the config key."""
    try:
        inspect.signature(factory).bind(*args, **params)
    except TypeError as err:
        raise ConfigError(f"config key '{key}': {err} (for {getattr(factory, '__name__', factory)})") from err
    return factory(*args, **params)


# ---------------------------------------------------------------------------------------- data

def build_dataset(config: dict, split: str) -> Dataset:
    """The dataset of ``split`` ("train", "val" or "test") named by ``config['data']``.

    Items are ground-truth images ``(C, H, W)`` (or ``(C, D, H, W)`` for 3D data).
    """
    from .. import data

    d = config["data"]
    seed = config["seed"] + (VALIDATION_SEED_OFFSET if split == "val" else 0)
    length = d["train_length"] if split == "train" else d["val_length"]
    name, params = d["name"], dict(d["params"])
    if name == "natural_patches":
        # The natural set has a train/test split by image; validation crops come from the
        # training images at other positions so the test images stay unseen until `l2i eval`.
        source = "test" if split == "test" else "train"
        return _call(data.NaturalPatches, {"split": source, "patch_size": d["patch_size"], "grey": d["grey"],
                                          "length": length, "seed": seed, **params}, "data.params")
    if name == "brain_slices":
        return _call(data.BrainSlices, {"split": split, "size": d["patch_size"], "seed": seed, **params}, "data.params")
    if name == "brain_mix":
        # Training items drawn on the fly from three orientations with random geometry and
        # contrast; validation and test are the plain axial slabs at the same base scale.
        if split == "train":
            return _call(data.BrainSliceMix, {"size": d["patch_size"], "length": length, "seed": seed, **params},
                         "data.params")
        return data.BrainSlices(split=split, size=d["patch_size"], seed=seed, scale=float(params.get("scale", 0.35)))
    if name == "dicom":
        # Real scans for out-of-distribution scoring (the same files for every split).
        if not d["root"]:
            raise ConfigError("config key 'data.root' must name DICOM files for data.name=dicom (e.g. pydicom:MR_small.dcm)")
        return _call(data.DicomImages, {"root": d["root"], "size": d["patch_size"],
                                       "complex": config["operator"]["name"] == "mri", **params}, "data.params")
    if name == "brain_patches3d":
        # 3D complex patches (2, D, H, W); the patch shape comes from data.params.patch (D, H, W).
        return _call(data.BrainPatches3D, {"split": split, "seed": seed, **params}, "data.params")
    if name == "ellipses":
        # The ellipses set names its splits as dival does.
        ellipses_split = {"val": "validation"}.get(split, split)
        return _call(data.EllipsesDataset, {"size": d["patch_size"], "length": length, "seed": seed, "split": ellipses_split,
                                           **params}, "data.params")
    if name == "image_folder":
        if not d["root"]:
            raise ConfigError("config key 'data.root' must name a folder for data.name=image_folder")
        return _call(data.ImageFolder, {"root": d["root"], "grey": d["grey"], "patch_size": d["patch_size"],
                                       "seed": seed, **params}, "data.params")
    if name == "fastmri":
        return _fastmri_dataset(d, params, split)
    raise ConfigError(f"config key 'data.name': unknown dataset {name!r} "
                      "(choose from natural_patches, brain_slices, brain_mix, brain_patches3d, ellipses, image_folder, "
                      "dicom, fastmri)")


FASTMRI_ROOT_KEYS = {"train": "train_root", "val": "val_root", "test": "test_root"}


def fastmri_split_root(d: dict, split: str) -> str:
    """The folder (or file) of fastMRI ``split``: ``data.params.<split>_root`` if given, else
    ``data.root`` with ``{split}`` replaced by ``train`` / ``val`` / ``test``."""
    own = d["params"].get(FASTMRI_ROOT_KEYS[split])
    if own:
        return str(own)
    root = d["root"]
    if not root:
        raise ConfigError(f"data.name=fastmri needs 'data.root' with a {{split}} placeholder (e.g. "
                          f"data/fastmri/knee_singlecoil_{{split}}) or 'data.params.{FASTMRI_ROOT_KEYS[split]}'")
    if "{split}" not in str(root):
        raise ConfigError(f"config key 'data.root': {root!r} has no {{split}} placeholder; write e.g. "
                          "data/fastmri/knee_singlecoil_{split}, or give data.params.train_root / val_root / test_root")
    return str(root).replace("{split}", split)


def _fastmri_dataset(d: dict, params: dict, split: str) -> Dataset:
    """Fully sampled fastMRI files of ``split`` as ground-truth complex images (2, h, w); validation
    and test keep ``data.val_length`` slices spread evenly over the volumes (all of them when
    there are fewer); training uses every slice (``data.train_length`` does not apply)."""
    from pathlib import Path

    from ..data.fastmri import FastMRIImages

    root = fastmri_split_root(d, split)
    if not Path(root).exists():
        raise ConfigError(f"data.name=fastmri: the {split} folder {root} does not exist (data.root={d['root']!r}); "
                          "see configs/fastmri/README.md for the expected layout")
    params = {k: v for k, v in params.items() if k not in FASTMRI_ROOT_KEYS.values()}
    if "crop" in params and params["crop"] is not None:
        params["crop"] = tuple(params["crop"]) if isinstance(params["crop"], list) else params["crop"]
    max_items = None if split == "train" else d["val_length"]
    try:
        return _call(FastMRIImages, {"root_or_files": root, "max_items": max_items,
                                     "skip_bad_files": d["skip_bad_files"], **params}, "data.params")
    except ConfigError:
        raise
    except ValueError as err:  # a bad file or folder: the message names it
        raise ValueError(f"data.name=fastmri, {split} split: {err}") from None


def empty_validation_message(config: dict, val_set: Dataset) -> str | None:
    """What to tell a user whose validation set has no samples (None if it has some)."""
    if len(val_set) > 0:
        return None
    d = config["data"]
    if d["val_length"] == 0:
        return "config key 'data.val_length' must be >= 1: training validates (and keeps the best weights) on that many samples"
    return (f"the validation set of data.name={d['name']} is empty (data.root={d['root']!r}, data.params={d['params']}); "
            "training needs validation samples to score and keep the best weights")


# ---------------------------------------------------------------------------------- measurement

def _uniform(value, batch: int, generator: torch.Generator) -> torch.Tensor:
    """A float -> (batch,) constant; [low, high] -> (batch,) uniform draws."""
    if isinstance(value, list):
        low, high = value
        return low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)
    return torch.full((batch,), float(value), dtype=torch.float64)


class Measurement:
    """Simulates ``y = A x + n`` for a batch, drawing per-sample physics where the config asks.

    Args:
        config: the resolved config (its ``operator`` section is used).
        image_shape: ``(C, H, W)`` or ``(C, D, H, W)`` of one ground-truth item.
    """

    OPERATORS = ("denoising", "gaussian_blur", "inpainting", "super_resolution", "random_projection", "mri", "ct",
                 "phase_retrieval", "beer_lambert_ct")

    def __new__(cls, config: dict, image_shape: tuple[int, ...]):
        # A config listing several operators (operator.mixture) gets an OperatorMixture.
        if cls is Measurement and config["operator"].get("mixture"):
            return super().__new__(OperatorMixture)
        return super().__new__(cls)

    def __init__(self, config: dict, image_shape: tuple[int, ...]):
        self.cfg = config["operator"]
        self.image_shape = tuple(image_shape)
        name = self.cfg["name"]
        # "package.module:Class" names a user's operator class, built from operator.params.
        self.user_class = user_operator_class(name) if isinstance(name, str) and ":" in name else None
        if self.user_class is None and name not in self.OPERATORS:
            raise ConfigError(f"config key 'operator.name': unknown operator {name!r} (choose from {', '.join(self.OPERATORS)}, "
                              "or name your own class as package.module:Class)")
        if name == "mri" and image_shape[0] != 2:
            raise ConfigError(f"operator.name=mri needs complex images with 2 channels, the data gives shape {image_shape}")
        if name == "mri" and self.cfg["mask"] not in ("random", "equispaced", "gaussian"):
            raise ConfigError(f"config key 'operator.mask' must be random, equispaced or gaussian for MRI, got {self.cfg['mask']!r}")
        if name == "mri":
            self._check_coil_params(dict(self.cfg["params"]))
        self.name = name
        # Operators without per-sample randomness are built once.
        self.fixed = None if name in ("mri", "inpainting") else self._fixed_operator(config["seed"])
        if self.user_class is not None:
            self._check_gradient(self.fixed)

    # operator.params of operator.name=mri: multi-coil (SENSE) simulation with analytic coil maps.
    MRI_COIL_PARAMS = ("coils", "maps", "ring_radius", "coil_radius", "phase_amplitude")

    def _check_coil_params(self, params: dict) -> None:
        """``operator.params`` of MRI: ``coils`` (number of receive coils; absent or 0: single-coil),
        ``maps`` (``true``: the solver gets the simulated maps; ``estimated``: maps estimated from
        the measured calibration region), the geometry of
        :func:`~learn2invert.operators.multicoil.simulated_coil_maps`, and ``fft_dims`` (volumes
        ``(2, D, H, W)``: ``2`` measures each slice's 2-D k-space, as multi-slice 2-D acquisitions
        do; ``3`` or absent: the 3-D FFT). Other keys are ignored, as they always were for MRI
        (runs whose config kept another operator's params still load)."""
        fft_dims = params.get("fft_dims")
        if fft_dims is not None and (isinstance(fft_dims, bool) or fft_dims not in (2, 3)):
            raise ConfigError(f"config key 'operator.params.fft_dims' must be 2 (per-slice 2-D FFT) or 3 (3-D FFT of "
                              f"volumes), or left out; got {fft_dims!r}")
        if fft_dims == 3 and len(self.image_shape) != 4:
            raise ConfigError(f"config key 'operator.params.fft_dims': 3 (a 3-D FFT) needs volumes (2, D, H, W), the "
                              f"data gives shape {self.image_shape}")
        coils = params.get("coils", 0)
        if isinstance(coils, bool) or not isinstance(coils, int) or coils < 0:
            raise ConfigError(f"config key 'operator.params.coils' must be an integer >= 0 (0: single-coil), got {coils!r}")
        if params.get("maps", "true") not in ("true", "estimated", True):
            raise ConfigError(f"config key 'operator.params.maps' must be true or estimated, got {params['maps']!r}")
        if coils and len(self.image_shape) != 3:
            raise ConfigError(f"operator.params.coils simulates 2D multi-coil MRI; the data gives shape {self.image_shape}")
        if not coils and set(params) & set(self.MRI_COIL_PARAMS[1:]):
            raise ConfigError(f"config key 'operator.params': {', '.join(sorted(set(params) & set(self.MRI_COIL_PARAMS[1:])))} "
                              "need operator.params.coils (the number of coils)")

    def _check_gradient(self, op) -> None:
        """Take the data-consistency gradient once on a random image, so that an operator offering
        no way to take it fails here, naming its class, rather than at the first training step."""
        x = torch.rand((1, *self.image_shape), generator=torch.Generator().manual_seed(0))
        try:
            with torch.no_grad():
                operators.data_gradient(op, x, op.A(x))
        except operators.NoGradientError as err:
            raise ConfigError(f"config key 'operator.name': {err}") from None

    def _fixed_operator(self, seed: int) -> operators.LinearOperator:
        params = dict(self.cfg["params"])
        key = "operator.params"
        if self.user_class is not None:
            # The image shape is passed to classes that ask for it (a parameter named image_shape).
            if "image_shape" in inspect.signature(self.user_class).parameters and "image_shape" not in params:
                params["image_shape"] = self.image_shape
            return _call(self.user_class, params, key)
        if self.name == "phase_retrieval":
            return _call(operators.PhaseRetrieval, params, key)
        if self.name == "denoising":
            return _call(operators.Denoising, params, key)
        if self.name == "gaussian_blur":
            return _call(operators.GaussianBlur, {"kernel_size": 9, "sigma": 2.0, **params}, key)
        if self.name == "super_resolution":
            return _call(operators.SuperResolution, {"factor": 2, **params}, key)
        if self.name == "random_projection":
            n = int(np.prod(self.image_shape))
            reduction = params.pop("reduction", None)
            if "m" not in params:
                if reduction is None:
                    raise ConfigError("operator.name=random_projection needs operator.params.m or operator.params.reduction")
                params["m"] = int(round(n / float(reduction)))
            # The dense matrix grows as n^2: a large data.patch_size asks for terabytes. Refuse
            # before drawing it, naming the keys that set its size.
            from ..operators.random_projection import MatrixTooLarge, check_build_memory

            m = params["m"]
            if isinstance(m, int) and not isinstance(m, bool) and m >= 1:  # other values: the constructor's message
                try:
                    check_build_memory(m, n, params.get("kind", "gaussian"), bool(params.get("normalize", False)))
                except MatrixTooLarge as err:
                    how = "operator.params.m" if reduction is None else "operator.params.reduction"
                    raise ConfigError(f"config keys 'data.patch_size' and '{how}': operator.name=random_projection on "
                                      f"images of shape {self.image_shape} with m = {m}: {err}") from None
            return _call(operators.RandomProjection, {"n": n, "seed": seed, "image_shape": self.image_shape, **params}, key)
        if self.name == "ct":
            if self.image_shape[-1] != self.image_shape[-2]:
                raise ConfigError(f"operator.name=ct needs square images, the data gives shape {self.image_shape}")
            return _call(operators.ParallelBeamCT, {"image_size": self.image_shape[-1], "n_angles": 60, **params}, key)
        if self.name == "beer_lambert_ct":
            if self.image_shape[-1] != self.image_shape[-2]:
                raise ConfigError(f"operator.name=beer_lambert_ct needs square images, the data gives shape {self.image_shape}")
            return _call(operators.BeerLambertCT, {"image_size": self.image_shape[-1], "n_angles": 60, **params}, key)
        raise AssertionError(self.name)

    def _batched_operator(self, batch: int, generator: torch.Generator) -> operators.LinearOperator:
        h, w = self.image_shape[-2:]
        if self.name == "inpainting":
            hole = self.cfg["params"].get("hole")
            if hole is not None:  # a centred square hole of side `hole` pixels (flow-unfolding paper)
                return operators.Inpainting(operators.centered_hole_mask(h, w, int(hole)).reshape(1, 1, h, w))
            keep = self.cfg["keep_fraction"]
            mask = torch.rand((batch, 1, h, w), generator=generator) < keep
            return operators.Inpainting(mask)
        # MRI: one mask per sample, acceleration fixed or drawn per sample.
        accelerations = _uniform(self.cfg["acceleration"], batch, generator)
        masks = []
        for acc in accelerations.tolist():
            seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
            if self.cfg["mask"] == "gaussian":
                masks.append(operators.masks.gaussian_mask((h, w), acc, seed=seed).reshape(1, h, w))
            else:
                fn = operators.masks.random_mask if self.cfg["mask"] == "random" else operators.masks.equispaced_mask
                center = self.cfg["center_fraction"]
                center = 0.32 / acc if center == "fastmri" else center  # fastMRI's pairs: 4x/8%, 8x/4%
                masks.append(fn((w,), acc, center, seed=seed).reshape(1, 1, w).expand(1, h, w))
        mask = torch.stack(masks)  # (B, 1, H, W)
        if len(self.image_shape) == 4:
            # 3D volumes: the same 2D pattern on every slice, as multi-slice 2-D acquisitions repeat
            # one phase-encoding schedule for all slices (fastMRI stores one mask per volume).
            mask = mask.unsqueeze(2)
        params = self.cfg["params"]
        if params.get("coils"):
            # SENSE: each sample's coil array is rotated at random (and gets a random smooth extra
            # phase per coil with phase_amplitude), so the model does not learn one coil geometry.
            from ..operators.multicoil import simulated_coil_maps

            geometry = {k: float(params[k]) for k in ("ring_radius", "coil_radius", "phase_amplitude") if k in params}
            maps = torch.stack([
                simulated_coil_maps(int(params["coils"]), (h, w), generator=generator,
                                    rotation=float(2 * math.pi * torch.rand((), generator=generator)), **geometry)
                for _ in range(batch)])  # (B, 2, C, H, W)
            return operators.MultiCoilMRI(mask, maps, fft_dims=self.fft_dims)
        return operators.SingleCoilMRI(mask, fft_dims=self.fft_dims)

    @property
    def fft_dims(self) -> int | None:
        """MRI's ``operator.params.fft_dims`` (None: the rank of the data decides, 3-D FFT for volumes)."""
        value = self.cfg["params"].get("fft_dims")
        return None if value is None else int(value)

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, operators.LinearOperator, torch.Tensor]:
        """x: (B, *image_shape) -> (y, operator, sigma) with sigma of shape (B, 1, ..., 1)."""
        batch = x.shape[0]
        op = self.fixed if self.fixed is not None else self._batched_operator(batch, generator)
        if isinstance(op, torch.nn.Module):  # a user's operator need not be a module
            op = op.to(device=x.device, dtype=x.dtype)
        clean = op.A(x)
        sigma = _uniform(self.cfg["noise_sigma"], batch, generator).to(device=x.device, dtype=x.dtype)
        per_sample = sigma.reshape(batch, *([1] * (clean.dim() - 1)))
        if operators.likelihood_of(op) == "poisson":
            # Counts of gain sigma^2 (1 / sigma^2 photons where A(x) = 1), so the noise has standard
            # deviation sigma there, as the Gaussian model at the same setting.
            gain = (per_sample * per_sample).clamp_min(torch.finfo(clean.dtype).tiny)
            rate = torch.where(per_sample > 0, clean.clamp_min(0) / gain, 0.0).detach().cpu()  # sigma 0: no noise
            counts = torch.poisson(rate, generator=generator).to(clean.device, clean.dtype)
            y = torch.where(per_sample > 0, counts * gain, clean)
        else:
            noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype).to(clean.device)
            y = clean + per_sample * noise
        if self.cfg["quantize"]:
            y = operators.quantize(y)
        if isinstance(op, operators.MultiCoilMRI) and self.cfg["params"].get("maps") == "estimated":
            # The solver gets coil maps estimated from the measured calibration region, as on real scans.
            from ..operators.multicoil import estimate_sensitivities

            op = operators.MultiCoilMRI(op.mask, estimate_sensitivities(y, op.mask))
        # Returned with the image's rank so it divides the image-shaped likelihood gradient; the
        # solver needs a positive sigma even for noise-free data.
        return y, op, sigma.reshape(batch, *([1] * (x.dim() - 1))).clamp_min(1e-3)


# ------------------------------------------------------------------------------- operator mixtures

def component_config(config: dict, index: int) -> dict:
    """The single-operator config of entry ``index`` of ``operator.mixture``: the operator section
    with the entry's keys (name, params, noise_sigma, ...) in place of its own."""
    import copy

    op = config["operator"]
    entry = op["mixture"][index]
    section = {k: copy.deepcopy(v) for k, v in op.items() if k not in ("mixture", "per")}
    section.update({k: copy.deepcopy(v) for k, v in entry.items() if k not in ("weight", "label")})
    section.update(mixture=None, per="batch")
    return {**config, "operator": section}


def _entry_error(err: Exception, index: int, label: str) -> str:
    """``err``'s message with its operator keys moved under ``operator.mixture[index]``."""
    import re

    key = f"operator.mixture[{index}]"
    text = re.sub(r"'operator\.(?!mixture\[)", f"'{key}.", str(err))
    return text if key in text else f"{key} ({label}): {text}"


class OperatorMixture(Measurement):
    """Several operators in one training (``operator.mixture``), each drawn with its weight.

    ``operator.per: batch``: every training batch is measured by one operator, drawn from a
    generator seeded by ``(seed, epoch, batch index)`` (:func:`~learn2invert.train.loop.measure`),
    so all samples of a batch share the measurement shape and all processes of a data-parallel
    run draw the same operator. ``per: sample``: each sample draws its own operator from its own
    generator (seeded by ``(seed, epoch, index)``) before its physics; the batch's operators are
    combined by :func:`concat_operators`. Samples of one batch are stacked into one ``y``, so
    ``per: sample`` needs operators whose measurements have one shape; otherwise it is refused
    with a :class:`ConfigError` naming ``operator.per``.

    Called as a :class:`Measurement` (``(x, generator) -> (y, operator, sigma)``), it draws the
    operator from ``generator``: one for the batch (``per: batch``) or one per sample. Validation
    and ``l2i eval`` score each operator separately through :attr:`components` and :attr:`labels`.

    Args:
        config: the resolved config (``operator.mixture`` checked by
            :func:`~learn2invert.train.config.load_config`).
        image_shape: ``(C, H, W)`` or ``(C, D, H, W)`` of one ground-truth item.
    """

    def __init__(self, config: dict, image_shape: tuple[int, ...]):
        self.cfg = config["operator"]
        self.image_shape = tuple(image_shape)
        self.name, self.fixed, self.user_class = "mixture", None, None
        self.per = self.cfg.get("per", "batch")
        if self.per not in ("batch", "sample"):
            raise ConfigError(f"config key 'operator.per' must be batch or sample, got {self.per!r}")
        entries = self.cfg["mixture"]
        self.labels = [str(e.get("label", f"{e.get('name')}{i}")) for i, e in enumerate(entries)]
        weights = []
        for i, entry in enumerate(entries):
            weight = entry.get("weight", 1.0)
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
                raise ConfigError(f"config key 'operator.mixture[{i}].weight' must be a positive number, got {weight!r}")
            weights.append(float(weight))
        self.weights = torch.tensor(weights, dtype=torch.float64) / sum(weights)
        self._cumulative = torch.cumsum(self.weights, 0)
        self.components: list[Measurement] = []
        for i, label in enumerate(self.labels):
            try:
                self.components.append(Measurement(component_config(config, i), image_shape))
            except (ConfigError, ValueError, TypeError) as err:
                raise ConfigError(_entry_error(err, i, label)) from None
        if self.per == "sample":
            self._check_stackable()

    def _check_stackable(self) -> None:
        """Refuse ``per: sample`` when the operators' measurements differ in shape (one ``y`` per batch)."""
        x = torch.zeros((1, *self.image_shape))
        shapes = {}
        for label, component in zip(self.labels, self.components):
            y = component(x, torch.Generator().manual_seed(0))[0]
            shapes[label] = tuple(y.shape[1:])
        if len(set(shapes.values())) > 1:
            listed = ", ".join(f"{label}: {shape}" for label, shape in shapes.items())
            raise ConfigError(f"config key 'operator.per': sample draws an operator per sample, but the operators of "
                              f"operator.mixture measure different shapes ({listed}); the samples of a batch are "
                              "stacked into one tensor y, so they cannot be mixed within a batch: use per: batch "
                              "(each batch draws one operator)")

    def choose(self, generator: torch.Generator) -> int:
        """The index of an operator drawn with the mixture's weights (one uniform draw from ``generator``)."""
        u = torch.rand((), generator=generator, dtype=torch.float64)
        return min(int(torch.searchsorted(self._cumulative, u, right=True)), len(self.components) - 1)

    def _batched_operator(self, batch: int, generator: torch.Generator):
        raise ConfigError("operator.mixture lists several operators; build one of measurement.components "
                          f"({', '.join(self.labels)}), or the single-operator config component_config(config, k)")

    def __call__(self, x: torch.Tensor, generator: torch.Generator):
        """x: (B, *image_shape) -> (y, operator, sigma): one drawn operator for the batch
        (``per: batch``), or one per sample combined by :func:`concat_operators` (``per: sample``)."""
        if self.per == "batch":
            return self.components[self.choose(generator)](x, generator)
        parts = [self.components[self.choose(generator)](x[k:k + 1], generator) for k in range(x.shape[0])]
        return (torch.cat([p[0] for p in parts]), concat_operators([p[1] for p in parts]),
                torch.cat([p[2] for p in parts]))


def _batch_key(op) -> tuple | None:
    """Operators with equal keys stack along the batch through their mask (and coil maps); None: they don't."""
    from ..operators.multicoil import MultiCoilMRI

    mask = getattr(op, "mask", None)
    if not isinstance(mask, torch.Tensor):
        return None
    if isinstance(op, MultiCoilMRI):
        return (MultiCoilMRI, op.fft_dims, tuple(mask.shape[1:]), tuple(op.sensitivities.shape[1:]))
    return (type(op), getattr(op, "fft_dims", None), tuple(mask.shape[1:]))


def _stack(ops: list):
    """Operators of one :func:`_batch_key`, one per sample, as one operator with masks stacked."""
    from ..operators.multicoil import MultiCoilMRI

    first = ops[0]
    masks = torch.cat([op.mask.expand(1, *op.mask.shape[1:]) for op in ops])
    if isinstance(first, MultiCoilMRI):  # per-sample masks and coil maps
        return MultiCoilMRI(masks, torch.cat([op.sensitivities.expand(1, *op.sensitivities.shape[1:]) for op in ops]),
                            fft_dims=first.fft_dims)
    if hasattr(first, "fft_dims"):  # MRI: keep the FFT model (per-slice 2-D or 3-D) of the samples
        return type(first)(masks, fft_dims=first.fft_dims)
    return type(first)(masks)


def concat_operators(ops: list):
    """One operator for a batch from the per-sample ones (sample ``k`` measured by ``ops[k]``).

    One shared operator is returned as it is; MRI and inpainting operators of one kind get their
    masks (and coil maps) stacked along the batch; anything else (the operators of an operator
    mixture drawn per sample) becomes a :class:`~learn2invert.operators.per_sample.PerSampleOperators`
    that applies each operator to its own samples.
    """
    first = ops[0]
    if all(op is first for op in ops):
        return first
    keys = [_batch_key(op) for op in ops]
    if keys[0] is not None and all(k == keys[0] for k in keys):
        return _stack(ops)
    from ..operators.per_sample import PerSampleOperators

    groups: dict = {}  # stackable kind, or the operator object itself -> batch positions
    for k, (op, key) in enumerate(zip(ops, keys)):
        groups.setdefault(key if key is not None else ("object", id(op)), []).append(k)
    combined = [_stack([ops[k] for k in group]) if key[0] != "object" else ops[group[0]] for key, group in groups.items()]
    return PerSampleOperators(combined, list(groups.values()))


def user_operator_class(name: str) -> type:
    """The class named by ``operator.name: package.module:Class``; one ConfigError naming it if it cannot be imported."""
    import importlib

    module_name, _, class_name = name.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, class_name)
    except Exception as err:  # any failure inside the user's module is reported the same way
        raise ConfigError(f"config key 'operator.name': cannot import the operator class {name!r} "
                          f"({type(err).__name__}: {err}); the module must be importable (installed or on "
                          "PYTHONPATH) and define the class") from None
    if not callable(getattr(cls, "A", None)):
        raise ConfigError(f"config key 'operator.name': {name!r} has no method A(x); an operator needs A(x), plus "
                          "A_adjoint(y) if linear or A_vjp(x, v) / autograd if not")
    return cls


# ---------------------------------------------------------------------------------------- solver

def build_solver(config: dict, image_shape: tuple[int, ...]) -> torch.nn.Module:
    """The solver named by ``config['solver']`` for images of ``image_shape`` ((C, H, W) or (C, D, H, W))."""
    s = config["solver"]
    params = dict(s["params"])
    dims = {"channels": image_shape[0], "dims": len(image_shape) - 1}
    if s["name"] not in SOLVERS:
        raise ConfigError(f"config key 'solver.name': unknown solver {s['name']!r} (choose from {', '.join(SOLVERS)})")
    return _call(SOLVERS[s["name"]](), {**dims, **params}, "solver.params")


def _rim():
    from ..solvers.rim import RIM
    return RIM


def _irim():
    from ..solvers.irim import IRIM
    return IRIM


def _unet():
    from ..solvers.unet import UNet
    return UNet


def _admm():
    from ..solvers.admm import ADMMNet
    return ADMMNet


def _unrolled():
    from ..solvers.unrolled import unrolled_solver
    return unrolled_solver


def _flow_density():
    from ..solvers.flow_prox import FlowDensity
    return FlowDensity


def _deq4ip():
    from ..solvers.luser import DEQ4IP
    return DEQ4IP


# Registry names are the ones `l2i bench memory` writes in its records.
SOLVERS = {"rim": _rim, "irim": _irim, "unet": _unet, "admm": _admm, "unrolled": _unrolled, "deq4ip": _deq4ip,
           "flow_density": _flow_density}


def warmup_cosine(optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0,
                  final_lr_fraction: float = 0.01) -> torch.optim.lr_scheduler.LambdaLR:
    """Learning rate rising linearly over ``warmup_steps`` optimiser steps, then a cosine down to
    ``final_lr_fraction`` of the peak at ``total_steps``; stepped once per optimiser step."""
    if warmup_steps < 0 or total_steps < 1 or not 0.0 <= final_lr_fraction <= 1.0:
        raise ConfigError(f"config key 'train.schedule': warmup_cosine needs warmup_steps >= 0, total steps >= 1 and "
                          f"0 <= final_lr_fraction <= 1; got {warmup_steps}, {total_steps}, {final_lr_fraction}")

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_lr_fraction + (1.0 - final_lr_fraction) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# Schedules stepped after every optimiser step rather than after every epoch.
PER_STEP_SCHEDULES = ("warmup_cosine",)


def build_optimizer(config: dict, model: torch.nn.Module, total_steps: int | None = None) -> tuple[torch.optim.Optimizer, Any]:
    """The optimiser and learning-rate schedule of ``config['train']``.

    ``total_steps`` (optimiser steps of the whole run) sizes the per-step ``warmup_cosine``
    schedule; it defaults to ``train.max_steps``.
    """
    t = config["train"]
    opt = dict(t["optimizer"])
    name = opt.pop("name", "adam")
    classes = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "sgd": torch.optim.SGD}
    if name not in classes:
        raise ConfigError(f"config key 'train.optimizer.name': unknown optimiser {name!r} (choose from {', '.join(classes)})")
    # Solvers give their groups (unrolled step sizes train at their own rate); a density model has none.
    groups = model.parameter_groups(opt.get("lr", 1e-3)) if isinstance(model, Solver) else None
    optimizer = _call(classes[name], opt, "train.optimizer", groups if groups else model.parameters())
    sched = dict(t["schedule"])
    sname = sched.pop("name", "none")
    if sname == "none":
        return optimizer, None
    if sname == "cosine":
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, t["epochs"]), **sched)
    if sname == "step":
        return optimizer, _call(torch.optim.lr_scheduler.StepLR, sched, "train.schedule", optimizer)
    if sname == "warmup_cosine":
        total = total_steps or t["max_steps"]
        if not total:
            raise ConfigError("config key 'train.schedule': warmup_cosine needs train.max_steps (its length in steps)")
        return optimizer, _call(warmup_cosine, sched, "train.schedule", optimizer, int(total))
    raise ConfigError(f"config key 'train.schedule.name': unknown schedule {sname!r} "
                      "(choose from none, cosine, step, warmup_cosine)")
