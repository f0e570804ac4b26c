"""Experiment configuration: one YAML file, dotted ``--set`` overrides, checked before training.

A config has the sections ``data``, ``operator``, ``solver``, ``loss``, ``train`` plus ``seed``.
:data:`DEFAULTS` lists every key with its default; a key that is not there is refused, and so
is a value of the wrong type, with a message naming the dotted key. Sections that hold keyword
arguments for a constructor (``*.params``, ``train.optimizer``, ``train.schedule``) are free-form
dicts: their keys are checked when the object is built.
"""
from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml

# ConfigError lives in the registry (below every layer); importing it from here keeps working.
from .. import shipped
from ..registry import ConfigError, check_config_names

# None means "no default; any type allowed" (checked by the builder that uses it).
DEFAULTS: dict[str, Any] = {
    "seed": 0,  # seeds weights, data draws and measurement noise; a run is reproducible from it
    "data": {
        "name": "natural_patches",  # a dataset (docs/configuration.md, Names)
        "patch_size": 32,  # side of square patches / slices in pixels
        "grey": True,  # photographs: one grey channel (false: RGB)
        "train_length": 1024,  # training samples drawn per epoch
        "val_length": 64,  # validation samples (also the test samples scored by l2i eval)
        "root": None,  # on-disk data: a folder (image_folder), DICOM file/folder or pydicom:NAME (dicom), fastMRI folders with {split} (fastmri)
        "data_range": None,  # peak for PSNR/SSIM; null = each target's max (fastMRI), 1.0 for [0, 1] photographs
        # extra keyword arguments for the dataset; fastmri: crop, coils, acs_fraction, and own_coils (true: train on
        # multi-coil files' own coil k-space, undersampled, with coil maps estimated from the measured centre);
        # natural_patches: augment, dead_leaves (fraction of training items that are synthetic dead-leaves images);
        # brain_mix: scale, natural (photographs), dead_leaves and the other keywords of BrainSliceMix;
        # dicom: repeats, series (true: each series, a folder of slices or a multi-frame file, is one volume (C, D, H, W))
        "params": {},
        "skip_bad_files": False,  # skip unreadable files (warning with the path, counted in history.json) instead of stopping
    },
    "operator": {
        # an operator (docs/configuration.md, Names), or your own class as package.module:Class (built with operator.params)
        "name": "denoising",
        "params": {},  # keyword arguments of the operator (e.g. factor, kernel_size, m, kind, n_angles; MRI: coils, maps)
        # float, or [low, high] for a uniform draw per sample (measurement units); for Poisson operators
        # (beer_lambert_ct) the gain of one count: 1 / noise_sigma^2 counts where A(x) = 1
        "noise_sigma": 0.1,
        "quantize": False,  # 8-bit quantisation after the noise (RIM paper, Table 2)
        "mask": "random",  # MRI: random | equispaced | gaussian (inpainting always draws random pixel masks)
        "acceleration": 4.0,  # MRI: float, or [low, high] for a random acceleration per sample
        "center_fraction": 0.08,  # or "fastmri": 0.32 / acceleration (8% at 4x, 4% at 8x), per sample
        "keep_fraction": 0.5,  # inpainting: fraction of pixels observed
        # Several operators in one training (operator.name is then "mixture" or left out): a list of
        # {name, params, weight (> 0, default 1), label, and any key above to override}; every key an
        # entry leaves out comes from this section. See docs/multi_operator.md.
        "mixture": None,
        "per": "batch",  # mixture: each batch draws one operator (batch) or each sample its own (sample)
    },
    "solver": {
        "name": "rim",  # a solver (docs/configuration.md, Names)
        "params": {},  # keyword arguments of the solver (steps, hidden, variant, link, memory, ...)
    },
    "loss": {
        "name": "mse",  # a loss (docs/configuration.md, Names)
        "weights": "all",  # all (equal weight on every iterate, as the RIM paper) | last
        "subsample": 0.0,  # fraction of pixels scored per step (i-RIM paper: 0.01); 0 = all pixels
    },
    "train": {
        "epochs": 1,  # passes over data.train_length samples; ignored when max_steps is set
        "max_steps": 0,  # optimiser steps to train for (the epochs run on until then); 0 = train.epochs decide
        "val_every": 0,  # optimiser steps between validations (each one also checkpoints); 0 = after every epoch
        "patience": 0,  # stop after this many validations without a lower validation loss; 0 = never
        "batch_size": 8,  # samples per optimiser step (per process under torchrun)
        "optimizer": {"name": "adam", "lr": 1e-3},  # an optimiser (Names) and its keyword arguments
        "schedule": {"name": "none"},  # a schedule (Names) and its keyword arguments: step (step_size, gamma), warmup_cosine (warmup_steps, final_lr_fraction)
        "grad_clip": 0.0,  # max gradient norm; 0 disables
        "device": "auto",  # auto | cpu | cuda
        "val_batch_size": 16,  # samples per batch when validating
        "log_every": 10,  # optimisation steps between TensorBoard scalars
        "time_limit_minutes": 0.0,  # safety cap only: stop (after validating and saving) once training has run this long; 0 = no limit
        "precision": "fp32",  # fp32 | bf16 | fp16 (autocast; fp16 adds gradient scaling)
        "compile": False,  # torch.compile the solver; falls back to eager with a warning where it fails
        "init_weights": None,  # start from these weights (fine-tuning): a run folder (its best weights) or pretrained:NAME
    },
}

FREE_FORM = {"data.params", "operator.params", "solver.params", "train.optimizer", "train.schedule"}


def _merge(base: dict, update: dict, prefix: str = "") -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        dotted = f"{prefix}{key}"
        if key not in base:
            known = ", ".join(sorted(base))
            raise ConfigError(f"unknown config key '{dotted}' (known here: {known})")
        if dotted in FREE_FORM:
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{dotted}' must be a mapping, got {type(value).__name__}")
            value = _yaml11_numbers(value)
            out[key] = {**base[key], **value} if dotted.startswith("train.") else dict(value)
        elif isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"config key '{dotted}' must be a mapping, got {type(value).__name__}")
            out[key] = _merge(base[key], value, dotted + ".")
        else:
            out[key] = _check_type(dotted, base[key], value)
    return out


# Keys whose negative values mean nothing (noise level, counts, time, sizes).
_NON_NEGATIVE = {"operator.noise_sigma", "operator.acceleration", "operator.center_fraction", "operator.keep_fraction",
                 "train.epochs", "train.max_steps", "train.val_every", "train.patience", "train.batch_size",
                 "train.time_limit_minutes", "train.grad_clip", "train.val_batch_size", "data.train_length",
                 "data.val_length", "data.patch_size"}
# Keys that count things a run cannot do without.
_POSITIVE = {"train.batch_size", "train.val_batch_size", "data.patch_size"}
_EXPONENT_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)[eE][+-]?\d+$")


def _yaml11_numbers(value: Any) -> Any:
    """``value`` with strings such as ``"1e-4"`` turned into floats, in nested dicts and lists too.

    YAML 1.1 (PyYAML) reads a number in exponent notation without a dot in the mantissa as a
    string; in the free-form sections nothing else would turn it into the number it means.
    """
    if isinstance(value, dict):
        return {k: _yaml11_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_yaml11_numbers(v) for v in value]
    if isinstance(value, str) and _EXPONENT_NUMBER.match(value):
        return float(value)
    return value


def _check_type(dotted: str, default: Any, value: Any) -> Any:
    if default is None or value is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{dotted}' must be true or false, got {value!r}")
        return value
    if dotted == "operator.center_fraction" and value == "fastmri":
        return value
    if isinstance(default, (int, float)):
        # A range [low, high] is allowed where the default is a number that may be drawn per sample.
        if isinstance(value, list) and dotted in ("operator.noise_sigma", "operator.acceleration"):
            if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value) or value[0] > value[1]:
                raise ConfigError(f"config key '{dotted}' must be a number or [low, high] with low <= high, got {value!r}")
            if value[0] < 0:
                raise ConfigError(f"config key '{dotted}' must not be negative, got {value!r}")
            return [float(v) for v in value]
        if isinstance(value, str):
            # YAML 1.1 reads "1e-6" (no dot in the mantissa) as a string; accept what float() accepts.
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{dotted}' must be a number, got {value!r}")
        if isinstance(default, int) and not isinstance(default, bool) and isinstance(value, float) and not value.is_integer():
            raise ConfigError(f"config key '{dotted}' must be an integer, got {value!r}")
        if dotted in _NON_NEGATIVE and value < 0:
            raise ConfigError(f"config key '{dotted}' must be >= 0, got {value!r}")
        if dotted in _POSITIVE and value < 1:
            raise ConfigError(f"config key '{dotted}' must be >= 1, got {value!r}")
        return type(default)(value)
    if isinstance(default, str) and not isinstance(value, str):
        raise ConfigError(f"config key '{dotted}' must be a string, got {value!r}")
    return value


def parse_override(item: str) -> tuple[list[str], Any]:
    """``"train.epochs=3"`` -> (["train", "epochs"], 3); the value is parsed as YAML."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = item.split("=", 1)
    if not key:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {item}: the value is not valid YAML: {_yaml_problem(err, line=False)}") from None
    return key.split("."), value


def _yaml_problem(err: yaml.YAMLError, line: bool = True) -> str:
    """One line from a PyYAML error: where (1-based line and column) and what went wrong.

    PyYAML's own message spans several lines with the offending text and carets; a newcomer needs
    the position and the problem. ``line=False`` leaves out the line (a one-line ``--set`` value).
    """
    def at(mark) -> str:
        return f"line {mark.line + 1}, column {mark.column + 1}" if line else f"column {mark.column + 1}"

    mark, context_mark = getattr(err, "problem_mark", None), getattr(err, "context_mark", None)
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    text = f"{at(mark)}: {problem}" if mark is not None else problem
    context = getattr(err, "context", None)
    if context and context_mark is not None and (mark is None or at(context_mark) != at(mark)):
        text += f", {context} started at {at(context_mark)}"  # e.g. where an unclosed bracket opened
    return text


# Solver parameters whose default changed (December 2026): ``{solver: {key: (value in runs saved
# before, new default)}}``. Lipschitz step units (steps of ``mu / ||A||^2``) and noise floors
# (``eps ||A||^2``); the RIM's zeroed output layer. A saved run's missing key reads as the old value
# (what its weights were trained with), a fine-tuning config's (``train.init_weights``) as the value
# of the run it starts from, any other config's as the new default; every config read here gets the
# key written out, so the run folder a training writes says which one its weights expect.
CHANGED_DEFAULTS = {
    "unrolled": {"step_units": ("absolute", "lipschitz")},
    "deq4ip": {"step_units": ("absolute", "lipschitz")},
    "admm": {"step_units": ("absolute", "lipschitz")},
    "rim": {"output_init": ("random", "zero"), "eps_units": ("absolute", "lipschitz")},
    "irim": {"eps_units": ("absolute", "lipschitz")},
}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                saved: bool = False) -> dict:
    """Read a YAML config, apply ``key=value`` overrides and check it against :data:`DEFAULTS`.

    ``saved``: the config is a run folder's ``config.yaml`` (it then keeps the settings its weights
    were trained with; see :data:`CHANGED_DEFAULTS`). Returns the fully resolved config (every
    default filled in).
    """
    user: dict = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            loaded = yaml.safe_load(path.read_text())
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a YAML text file (not UTF-8 text; give a .yaml config such as "
                              "configs/smoke.yaml)") from None
        except yaml.YAMLError as err:  # one line naming the file and the position, not PyYAML's traceback
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(err)}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a YAML mapping, got {type(loaded).__name__}")
        if loaded is None:  # defaults alone would train the default problem for a long time
            raise ConfigError(f"{path}: the config file is empty; a config names at least its data, operator and "
                              "solver (see configs/smoke.yaml)")
        user = loaded
    for item in overrides:
        keys, value = parse_override(item)
        node = user
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: '{k}' is not a section")
        node[keys[-1]] = value
    config = _merge(DEFAULTS, user)
    _resolve_mixture(config, user.get("operator") if isinstance(user.get("operator"), dict) else {})
    check_config_names(config)
    params = config["solver"]["params"]
    changed = CHANGED_DEFAULTS.get(config["solver"]["name"], {})
    if isinstance(params, dict) and changed:
        start = {} if saved else _start_weights_params(config)
        for key, (before, now) in changed.items():
            params.setdefault(key, before if saved else start.get(key, now))
    return config


def init_weights_folder(name: str) -> Path:
    """The run folder named by ``train.init_weights``: a path, or ``pretrained:NAME`` for a shipped model."""
    if str(name).startswith("pretrained:"):
        return shipped.path(str(name)[len("pretrained:"):])
    if not Path(name).is_dir():
        raise ValueError(f"config key 'train.init_weights': {name} is not a run folder (or pretrained:NAME)")
    return Path(name)


def _start_weights_params(config: dict) -> dict:
    """The solver parameters of the run ``train.init_weights`` names, when it trained the same
    solver ({} otherwise, or when the folder cannot be read: training reports that itself), so that
    a fine-tuning keeps the units its start weights were trained in unless its config sets them."""
    name = config["train"].get("init_weights")
    if not name:
        return {}
    try:
        start = load_config(init_weights_folder(name) / "config.yaml", saved=True)
    except (ConfigError, ValueError, KeyError, OSError):
        return {}
    params = start["solver"]["params"]
    return params if start["solver"]["name"] == config["solver"]["name"] and isinstance(params, dict) else {}


# Keys of one operator.mixture entry besides the operator keys it may override.
MIXTURE_ENTRY_KEYS = ("weight", "label")
# Operator keys an entry may set (the rest of the operator section, not the mixture's own keys).
MIXTURE_OPERATOR_KEYS = tuple(k for k in DEFAULTS["operator"] if k not in ("mixture", "per"))
MIXTURE_PER = ("batch", "sample")
_LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")


def _resolve_mixture(config: dict, user_operator: dict) -> None:
    """Check ``operator.mixture`` / ``operator.per`` and fill in each entry's ``weight`` (1) and
    ``label`` (its name, or name + index when names repeat); ``operator.name`` becomes ``mixture``.

    Which operator names exist is checked where the operators are built
    (:class:`~learn2invert.operators.generator.Measurement`), with the entry's key in the message.
    """
    op = config["operator"]
    mixture = op["mixture"]
    if op["per"] not in MIXTURE_PER:
        raise ConfigError(f"config key 'operator.per' must be batch or sample, got {op['per']!r}")
    if mixture is None:
        if op["name"] == "mixture":
            raise ConfigError("config key 'operator.name': mixture needs the list operator.mixture (entries with name, "
                              "params and weight)")
        if user_operator.get("per", "batch") != "batch":  # saved run configs hold the default, per: batch
            raise ConfigError("config key 'operator.per' applies only to operator.mixture (several operators)")
        return
    if not isinstance(mixture, list) or not mixture:
        raise ConfigError(f"config key 'operator.mixture' must be a non-empty list of operators ({{name, params, "
                          f"weight}} each), got {mixture!r}")
    if user_operator.get("name", "mixture") != "mixture":
        raise ConfigError(f"config keys 'operator.name' and 'operator.mixture': give the operators in operator.mixture "
                          f"(each with its own name) and leave operator.name out (or write mixture), got "
                          f"operator.name={user_operator['name']!r}")
    entries = []
    for i, entry in enumerate(mixture):
        key = f"operator.mixture[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"config key '{key}' must be a mapping {{name, params, weight}}, got {entry!r}")
        unknown = sorted(set(entry) - set(MIXTURE_ENTRY_KEYS) - set(MIXTURE_OPERATOR_KEYS))
        if unknown:
            known = ", ".join(sorted(MIXTURE_ENTRY_KEYS + MIXTURE_OPERATOR_KEYS))
            raise ConfigError(f"unknown config key '{key}.{unknown[0]}' (known here: {known})")
        if not isinstance(entry.get("name"), str) or not entry["name"]:
            raise ConfigError(f"config key '{key}.name' is required: the operator of this entry (e.g. random_projection), "
                              f"got {entry.get('name')!r}")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, str):
            try:
                weight = float(weight)  # YAML 1.1 reads 1e-1 as a string
            except ValueError:
                pass
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight > 0 or weight == float("inf"):
            raise ConfigError(f"config key '{key}.weight' must be a positive number (how often this operator is "
                              f"drawn, relative to the others), got {entry.get('weight')!r}")
        resolved = {"weight": float(weight)}
        for k, value in entry.items():
            if k in ("weight", "label", "name"):
                continue
            if k == "params":
                if not isinstance(value, dict):
                    raise ConfigError(f"config key '{key}.params' must be a mapping, got {type(value).__name__}")
                resolved[k] = _yaml11_numbers(value)
                continue
            try:
                resolved[k] = _check_type(f"operator.{k}", DEFAULTS["operator"][k], value)
            except ConfigError as err:
                raise ConfigError(str(err).replace(f"'operator.{k}'", f"'{key}.{k}'")) from None
        resolved["name"] = entry["name"]
        if "label" in entry:
            label = entry["label"]
            if not isinstance(label, str) or not _LABEL.match(label):
                raise ConfigError(f"config key '{key}.label' must be a short name of letters, digits and _ . + - "
                                  f"(it names the operator's validation metrics), got {label!r}")
            resolved["label"] = label
        entries.append(resolved)
    names = [e["name"] for e in entries]
    for i, e in enumerate(entries):
        if "label" not in e:
            plain = e["name"].replace(":", ".")  # a user's package.module:Class
            e["label"] = plain if names.count(e["name"]) == 1 else f"{plain}{i}"
    labels = [e["label"] for e in entries]
    repeated = sorted({lab for lab in labels if labels.count(lab) > 1})
    if repeated:
        raise ConfigError(f"config key 'operator.mixture': the label {repeated[0]!r} names two entries; labels "
                          "must differ (they name each operator's validation metrics)")
    op["mixture"] = [{"label": e.pop("label"), "weight": e.pop("weight"), "name": e.pop("name"), **e} for e in entries]
    op["name"] = "mixture"


def dump_config(config: dict) -> str:
    """The config as YAML text, keys in definition order."""
    return yaml.safe_dump(config, sort_keys=False)
