"""The physics generator: simulated measurements for training and evaluation, ``(x, generator) -> (y, operator, sigma)``.

As DeepInverse's ``physics.generator``, it sits next to the operators and draws their physics.

A :class:`Measurement` turns a batch of ground-truth images into measurements with the operator a
config names (``operator.name``, registered in :data:`learn2invert.registry.OPERATORS`; the
builders are at the end of this file) and its noise. Operators whose physics is drawn per sample
(MRI masks with random acceleration, inpainting masks) get a batched buffer, so one operator
call serves the whole batch and the solver never knows the difference. An
:class:`OperatorMixture` draws among several operators (``operator.mixture``); :func:`measure`
measures a batch with one generator per sample.
"""
from __future__ import annotations

import copy
import importlib
import inspect
import math
import re

import numpy as np
import torch

from .. import operators
from ..registry import OPERATORS, ConfigError, build
from .multicoil import ACS_FRACTION, centred_acs_columns, estimate_sensitivities, simulated_coil_maps
from .per_sample import concat_operators
from .random_projection import MatrixTooLarge, check_build_memory


def _uniform(value, batch: int, generator: torch.Generator) -> torch.Tensor:
    """A float -> (batch,) constant; [low, high] -> (batch,) uniform draws."""
    if isinstance(value, list):
        low, high = value
        return low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)
    return torch.full((batch,), float(value), dtype=torch.float64)


def uses_own_coils(config: dict) -> bool:
    """Whether ``data.params.own_coils`` asks for the items' own coil k-space to be undersampled."""
    return bool((config.get("data", {}).get("params") or {}).get("own_coils", False))


class Measurement:
    """Simulates ``y = A x + n`` for a batch, drawing per-sample physics where the config asks.

    With ``data.params.own_coils`` (fastMRI multi-coil files, items that carry their own fully
    sampled coil k-space, see :mod:`learn2invert.data.items`) nothing is simulated from the image:
    the k-space is undersampled retrospectively, ``y = M k`` (plus ``operator.noise_sigma`` of extra
    Gaussian noise on the sampled entries), with a mask drawn as for simulated MRI, and the
    operator is :class:`~learn2invert.operators.MultiCoilMRI` with coil maps estimated from the
    measured centre columns of ``y``, i.e. from what was measured (:meth:`measure_own_kspace`).

    Args:
        config: the resolved config (its ``operator`` section is used, and ``data.params.own_coils``).
        image_shape: ``(C, H, W)`` or ``(C, D, H, W)`` of one ground-truth item (its image).
    """

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
        # The builder of a named operator (an unknown name: a ConfigError listing the valid ones).
        self.builder = None if self.user_class is not None else OPERATORS.get(name)
        if name == "mri" and image_shape[0] != 2:
            raise ConfigError(f"operator.name=mri needs complex images with 2 channels, the data gives shape {image_shape}")
        if name == "mri" and self.cfg["mask"] not in ("random", "equispaced", "gaussian"):
            raise ConfigError(f"config key 'operator.mask' must be random, equispaced or gaussian for MRI, got {self.cfg['mask']!r}")
        # Items carry their own coil k-space (data.params.own_coils): undersampled, not simulated.
        self.own_coils = uses_own_coils(config)
        if self.own_coils:
            self._check_own_coils(name)
            # The solver's maps come from the same centre block as the truth's (FastMRIImages.coil_item).
            self.acs_fraction = float(config["data"]["params"].get("acs_fraction", ACS_FRACTION))
        if name == "mri":
            self._check_coil_params(dict(self.cfg["params"]))
        self.name = name
        # Operators without per-sample randomness are built once.
        self.fixed = None if name in PER_SAMPLE else self._fixed_operator(config["seed"])
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

    def _check_own_coils(self, name) -> None:
        """``data.params.own_coils`` measures the files' coil k-space with estimated maps: it needs
        MRI and excludes the analytic coil simulation (``operator.params.coils`` and its keys)."""
        key = "config key 'data.params.own_coils'"
        if name != "mri":
            raise ConfigError(f"{key}: the files' own coil k-space is measured by multi-coil MRI; it needs "
                              f"operator.name: mri, got {name!r}")
        analytic = sorted(set(self.cfg["params"]) & set(self.MRI_COIL_PARAMS))
        if analytic:
            raise ConfigError(f"config keys 'data.params.own_coils' and 'operator.params.{analytic[0]}': own_coils "
                              "measures with the files' own coils and maps estimated from the measured calibration "
                              f"region; the analytic coil simulation ({', '.join('operator.params.' + k for k in analytic)}) "
                              "does not apply: leave it out")
        if self.cfg["quantize"]:
            raise ConfigError(f"{key}: operator.quantize (8-bit rounding of y on [0, 1]) does not apply to measured "
                              "k-space; set it to false")

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
        if self.user_class is not None:
            # The image shape is passed to classes that ask for it (a parameter named image_shape).
            if "image_shape" in inspect.signature(self.user_class).parameters and "image_shape" not in params:
                params["image_shape"] = self.image_shape
            return build(self.user_class, params, PARAMS_KEY)
        return self.builder(self, params, seed)

    def _batched_operator(self, batch: int, generator: torch.Generator) -> operators.LinearOperator:
        return self.builder(self, batch, generator)

    @property
    def fft_dims(self) -> int | None:
        """MRI's ``operator.params.fft_dims`` (None: the rank of the data decides, 3-D FFT for volumes)."""
        value = self.cfg["params"].get("fft_dims")
        return None if value is None else int(value)

    def __call__(self, x: torch.Tensor, generator: torch.Generator,
                 kspace: torch.Tensor | None = None) -> tuple[torch.Tensor, operators.LinearOperator, torch.Tensor]:
        """x: (B, *image_shape) -> (y, operator, sigma) with sigma of shape (B, 1, ..., 1).

        ``kspace``: the items' own fully sampled coil k-space ``(B, 2, C, H, W)``, required with
        ``data.params.own_coils`` (:meth:`measure_own_kspace`) and refused otherwise.
        """
        if self.own_coils:
            return self.measure_own_kspace(x, kspace, generator)
        if kspace is not None:
            raise ValueError("Measurement: items carry their own k-space, but the config simulates measurements "
                             "from the image; set data.params.own_coils: true to undersample the items' k-space")
        batch = x.shape[0]
        op = self.fixed if self.fixed is not None else self._batched_operator(batch, generator)
        if isinstance(op, torch.nn.Module):  # a user's operator need not be a module
            op = op.to(device=x.device, dtype=x.dtype)
        clean = op.A(x)
        sigma = _uniform(self.cfg["noise_sigma"], batch, generator).to(device=x.device, dtype=x.dtype)
        per_sample = sigma.reshape(batch, *([1] * (clean.dim() - 1)))
        if operators.likelihood_of(op) == "poisson":
            y = operators.add_poisson_noise(clean, per_sample, generator)
        else:
            noise = torch.randn(clean.shape, generator=generator, dtype=clean.dtype).to(clean.device)
            y = clean + per_sample * noise
        if self.cfg["quantize"]:
            y = operators.quantize(y)
        if isinstance(op, operators.MultiCoilMRI) and self.cfg["params"].get("maps") == "estimated":
            # The solver gets coil maps estimated from the measured calibration region, as on real scans.
            op = operators.MultiCoilMRI(op.mask, estimate_sensitivities(y, op.mask))
        # Returned with the image's rank so it divides the image-shaped likelihood gradient; the
        # solver needs a positive sigma even for noise-free data.
        return y, op, sigma.reshape(batch, *([1] * (x.dim() - 1))).clamp_min(1e-3)

    def measure_own_kspace(self, x: torch.Tensor, kspace: torch.Tensor | None,
                           generator: torch.Generator) -> tuple[torch.Tensor, operators.MultiCoilMRI, torch.Tensor]:
        """Undersample the items' own coil k-space (``data.params.own_coils``).

        Args:
            x: the truth ``(B, 2, H, W)`` (only its shape and device are used).
            kspace: fully sampled coil k-space ``(B, 2, C, H, W)`` of the same crop, in the units of ``x``.
            generator: draws, in this order, the masks (as for simulated MRI: ``operator.mask``,
                ``acceleration``, ``center_fraction``), the noise levels and the noise.

        Returns:
            ``y = M (k + sigma n)``, ``(B, 2, C, H, W)`` with +0 off the mask (real undersampled
            scans store zeros there); a :class:`MultiCoilMRI` with the masks ``(B, 1, H, W)`` and
            sensitivities estimated from the centred
            :func:`~learn2invert.operators.multicoil.centred_acs_columns` ``(W, data.params.acs_fraction)``
            columns of ``y``, the block the truth's maps came from (so at full sampling ``A^T y``
            is the truth), which the mask must sample; and ``sigma`` ``(B, 1, 1, 1)`` (the added
            noise, at least 1e-3 for the solver).

        Raises:
            ValueError: a mask that leaves a column of that block out (``operator.center_fraction``
                below ``data.params.acs_fraction``, or a Gaussian mask).
        """
        if kspace is None:
            raise ValueError("Measurement: data.params.own_coils measures the items' own coil k-space, but none was "
                             "given; the dataset's items must be {'image', 'kspace'} (FastMRIImages(own_coils=True))")
        if kspace.dim() != 5 or kspace.shape[1] != 2 or kspace.shape[0] != x.shape[0] or kspace.shape[-2:] != x.shape[-2:]:
            raise ValueError(f"Measurement: the items' coil k-space must be (B, 2, C, H, W) with the images' B, H and "
                             f"W; got {tuple(kspace.shape)} for images {tuple(x.shape)}")
        batch = x.shape[0]
        mask = self._batched_operator(batch, generator).mask.to(kspace.device)  # (B, 1, H, W) bool
        sigma = _uniform(self.cfg["noise_sigma"], batch, generator).to(device=kspace.device, dtype=kspace.dtype)
        noise = torch.randn(kspace.shape, generator=generator, dtype=kspace.dtype).to(kspace.device)
        noisy = kspace + sigma.reshape(batch, 1, 1, 1, 1) * noise
        y = torch.where(mask.unsqueeze(1), noisy, torch.zeros_like(noisy))  # all coils share the mask
        # Maps from one fixed centre block, not each mask's own calibration region (which grows when
        # random columns happen to sit next to it): the truth was combined with maps from this
        # block, so the solver's operator and the target agree on the maps' phase and magnitude.
        width = kspace.shape[-1]
        acs = centred_acs_columns(width, self.acs_fraction)
        block = slice(width // 2 - acs // 2, width // 2 - acs // 2 + acs)
        if not bool(mask[..., block].all()):
            raise ValueError(f"data.params.own_coils: the coil maps come from the centred {acs} k-space columns "
                             f"(data.params.acs_fraction={self.acs_fraction}), but the mask does not sample all of "
                             f"them (operator.mask={self.cfg['mask']}, operator.center_fraction="
                             f"{self.cfg['center_fraction']}); set data.params.acs_fraction <= operator.center_fraction "
                             "(e.g. 0.04 at 8x) and use a column mask (random or equispaced)")
        maps = estimate_sensitivities(y, acs=acs)
        op = operators.MultiCoilMRI(mask, maps.to(kspace.dtype), fft_dims=self.fft_dims)
        return y, op, sigma.reshape(batch, 1, 1, 1).clamp_min(1e-3)


# ------------------------------------------------------------------------------- operator mixtures

def component_config(config: dict, index: int) -> dict:
    """The single-operator config of entry ``index`` of ``operator.mixture``: the operator section
    with the entry's keys (name, params, noise_sigma, ...) in place of its own."""
    op = config["operator"]
    entry = op["mixture"][index]
    section = {k: copy.deepcopy(v) for k, v in op.items() if k not in ("mixture", "per")}
    section.update({k: copy.deepcopy(v) for k, v in entry.items() if k not in ("weight", "label")})
    section.update(mixture=None, per="batch")
    return {**config, "operator": section}


def _entry_error(err: Exception, index: int, label: str) -> str:
    """``err``'s message with its operator keys moved under ``operator.mixture[index]``."""
    key = f"operator.mixture[{index}]"
    text = re.sub(r"'operator\.(?!mixture\[)", f"'{key}.", str(err))
    return text if key in text else f"{key} ({label}): {text}"


class OperatorMixture(Measurement):
    """Several operators in one training (``operator.mixture``), each drawn with its weight.

    ``operator.per: batch``: every training batch is measured by one operator, drawn from a
    generator seeded by ``(seed, epoch, batch index)`` (:func:`measure`),
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
        self.own_coils = False
        if uses_own_coils(config):
            raise ConfigError("config keys 'data.params.own_coils' and 'operator.mixture': the files' own coil "
                              "k-space is measured by one MRI operator; give operator.name: mri without a mixture")
        # per, labels and weights (> 0) were checked and filled in by load_config.
        self.per = self.cfg["per"]
        entries = self.cfg["mixture"]
        self.labels = [str(e["label"]) for e in entries]
        weights = [float(e["weight"]) for e in entries]
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

    def __call__(self, x: torch.Tensor, generator: torch.Generator, kspace: torch.Tensor | None = None):
        """x: (B, *image_shape) -> (y, operator, sigma): one drawn operator for the batch
        (``per: batch``), or one per sample combined by :func:`concat_operators` (``per: sample``).
        ``kspace`` must be None (items with their own k-space are refused with a mixture)."""
        if kspace is not None:
            raise ValueError("an operator mixture simulates its measurements from the images; items with their own "
                             "k-space (data.params.own_coils) need a single operator.name: mri")
        if self.per == "batch":
            return self.components[self.choose(generator)](x, generator)
        parts = [self.components[self.choose(generator)](x[k:k + 1], generator) for k in range(x.shape[0])]
        return (torch.cat([p[0] for p in parts]), concat_operators([p[1] for p in parts]),
                torch.cat([p[2] for p in parts]))


def measure(measurement: Measurement, x: torch.Tensor, generators: list[torch.Generator],
            batch_gen: torch.Generator | None = None, kspace: torch.Tensor | None = None):
    """Simulate each sample's measurement with its own generator; returns ``(y, operator, sigma)``.

    ``x`` is ``(B, *image_shape)``; ``y`` and ``sigma`` come back batched as
    :class:`Measurement` gives them, and the operator holds every sample's physics.
    ``kspace`` ``(B, 2, C, H, W)``: the samples' own coil k-space (``data.params.own_coils``),
    undersampled instead of simulated.
    An :class:`OperatorMixture` with ``per: batch`` first draws the batch's operator
    from ``batch_gen`` (:func:`learn2invert.train.loop.batch_generator` in training; required then), so the samples' own generators
    draw exactly what they would under that single operator. Single-operator measurements
    ignore ``batch_gen``.
    """
    if isinstance(measurement, OperatorMixture) and measurement.per == "batch":
        if batch_gen is None:
            raise ValueError("an operator mixture with operator.per: batch draws one operator per batch: pass "
                             "measure(..., batch_gen=batch_generator(seed, epoch, batch_index))")
        measurement = measurement.components[measurement.choose(batch_gen)]
    if kspace is None:  # any (x, generator) callable measures plain images
        parts = [measurement(x[k:k + 1], g) for k, g in enumerate(generators)]
    else:
        parts = [measurement(x[k:k + 1], g, kspace=kspace[k:k + 1]) for k, g in enumerate(generators)]
    y = torch.cat([p[0] for p in parts])
    sigma = torch.cat([p[2] for p in parts])
    return y, concat_operators([p[1] for p in parts]), sigma


def user_operator_class(name: str) -> type:
    """The class named by ``operator.name: package.module:Class``; one ConfigError naming it if it cannot be imported."""
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


# ------------------------------------------------------------------ the operators a config names
# Registered in learn2invert.registry.OPERATORS. Operators with fixed physics are built once,
# ``builder(measurement, params, seed)``; those in PER_SAMPLE draw their physics for every batch,
# ``builder(measurement, batch, generator)``, as one operator holding a mask per sample.

PARAMS_KEY = "operator.params"
PER_SAMPLE = ("mri", "inpainting")


def denoising(m: Measurement, params: dict, seed: int):
    return build(operators.Denoising, params, PARAMS_KEY)


def phase_retrieval(m: Measurement, params: dict, seed: int):
    return build(operators.PhaseRetrieval, params, PARAMS_KEY)


def gaussian_blur(m: Measurement, params: dict, seed: int):
    return build(operators.GaussianBlur, {"kernel_size": 9, "sigma": 2.0, **params}, PARAMS_KEY)


def super_resolution(m: Measurement, params: dict, seed: int):
    return build(operators.SuperResolution, {"factor": 2, **params}, PARAMS_KEY)


def random_projection(m: Measurement, params: dict, seed: int):
    n = int(np.prod(m.image_shape))
    reduction = params.pop("reduction", None)
    if "m" not in params:
        if reduction is None:
            raise ConfigError("operator.name=random_projection needs operator.params.m or operator.params.reduction")
        params["m"] = int(round(n / float(reduction)))
    # The dense matrix grows as n^2: a large data.patch_size asks for terabytes. Refuse before
    # drawing it, naming the keys that set its size.
    rows = params["m"]
    if isinstance(rows, int) and not isinstance(rows, bool) and rows >= 1:  # other values: the constructor's message
        try:
            check_build_memory(rows, n, params.get("kind", "gaussian"), bool(params.get("normalize", False)))
        except MatrixTooLarge as err:
            how = "operator.params.m" if reduction is None else "operator.params.reduction"
            raise ConfigError(f"config keys 'data.patch_size' and '{how}': operator.name=random_projection on "
                              f"images of shape {m.image_shape} with m = {rows}: {err}") from None
    return build(operators.RandomProjection, {"n": n, "seed": seed, "image_shape": m.image_shape, **params}, PARAMS_KEY)


def _square_side(m: Measurement) -> int:
    if m.image_shape[-1] != m.image_shape[-2]:
        raise ConfigError(f"operator.name={m.name} needs square images, the data gives shape {m.image_shape}")
    return m.image_shape[-1]


def ct(m: Measurement, params: dict, seed: int):
    return build(operators.ParallelBeamCT, {"image_size": _square_side(m), "n_angles": 60, **params}, PARAMS_KEY)


def beer_lambert_ct(m: Measurement, params: dict, seed: int):
    return build(operators.BeerLambertCT, {"image_size": _square_side(m), "n_angles": 60, **params}, PARAMS_KEY)


def inpainting(m: Measurement, batch: int, generator: torch.Generator):
    h, w = m.image_shape[-2:]
    hole = m.cfg["params"].get("hole")
    if hole is not None:  # a centred square hole of side `hole` pixels (flow-unfolding paper)
        return operators.Inpainting(operators.centered_hole_mask(h, w, int(hole)).reshape(1, 1, h, w))
    mask = torch.rand((batch, 1, h, w), generator=generator) < m.cfg["keep_fraction"]
    return operators.Inpainting(mask)


def mri(m: Measurement, batch: int, generator: torch.Generator):
    """One mask per sample, acceleration fixed or drawn per sample; multi-coil with ``params.coils``."""
    cfg = m.cfg
    h, w = m.image_shape[-2:]
    accelerations = _uniform(cfg["acceleration"], batch, generator)
    masks = []
    for acc in accelerations.tolist():
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        if cfg["mask"] == "gaussian":
            masks.append(operators.masks.gaussian_mask((h, w), acc, seed=seed).reshape(1, h, w))
        else:
            fn = operators.masks.random_mask if cfg["mask"] == "random" else operators.masks.equispaced_mask
            center = cfg["center_fraction"]
            center = 0.32 / acc if center == "fastmri" else center  # fastMRI's pairs: 4x/8%, 8x/4%
            masks.append(fn((w,), acc, center, seed=seed).reshape(1, 1, w).expand(1, h, w))
    mask = torch.stack(masks)  # (B, 1, H, W)
    if len(m.image_shape) == 4:
        # 3D volumes: the same 2D pattern on every slice, as multi-slice 2-D acquisitions repeat
        # one phase-encoding schedule for all slices (fastMRI stores one mask per volume).
        mask = mask.unsqueeze(2)
    params = cfg["params"]
    if params.get("coils"):
        # SENSE: each sample's coil array is rotated at random (and gets a random smooth extra
        # phase per coil with phase_amplitude), so the model does not learn one coil geometry.
        geometry = {k: float(params[k]) for k in ("ring_radius", "coil_radius", "phase_amplitude") if k in params}
        maps = torch.stack([
            simulated_coil_maps(int(params["coils"]), (h, w), generator=generator,
                                rotation=float(2 * math.pi * torch.rand((), generator=generator)), **geometry)
            for _ in range(batch)])  # (B, 2, C, H, W)
        return operators.MultiCoilMRI(mask, maps, fft_dims=m.fft_dims)
    return operators.SingleCoilMRI(mask, fft_dims=m.fft_dims)
