"""The datasets a config can name (``data.name``), built for one split: :func:`build_dataset`.

Each builder below is registered by name in :data:`learn2invert.registry.DATASETS` and returns a
dataset whose items are ground-truth images ``(C, H, W)`` (or ``(C, D, H, W)`` for 3D data), or
measured items ``{"image", "kspace"}`` that carry their own k-space (:mod:`learn2invert.data.items`).
"""
from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

from .. import data
from ..registry import DATASETS, ConfigError, build

VALIDATION_SEED_OFFSET = 10_007  # validation crops/noise never coincide with training ones


def build_dataset(config: dict, split: str) -> Dataset:
    """The dataset of ``split`` ("train", "val" or "test") named by ``config['data']``."""
    d = config["data"]
    builder = DATASETS.get(d["name"])  # an unknown name: a ConfigError listing the valid ones
    seed = config["seed"] + (VALIDATION_SEED_OFFSET if split == "val" else 0)
    length = d["train_length"] if split == "train" else d["val_length"]
    return builder(config, dict(d["params"]), split, seed, length)


def natural_patches(config: dict, params: dict, split: str, seed: int, length: int) -> Dataset:
    # The natural set has a train/test split by image; validation crops come from the training
    # images at other positions so the test images stay unseen until `l2i eval`.
    # Synthetic dead-leaves items widen the training set only; validation and test stay photographs.
    d = config["data"]
    source = "test" if split == "test" else "train"
    if split != "train":
        params = {k: v for k, v in params.items() if k != "dead_leaves"}
    return build(data.NaturalPatches, {"split": source, "patch_size": d["patch_size"], "grey": d["grey"],
                                       "length": length, "seed": seed, **params}, "data.params")


def brain_slices(config: dict, params: dict, split: str, seed: int, length: int) -> Dataset:
    return build(data.BrainSlices, {"split": split, "size": config["data"]["patch_size"], "seed": seed, **params},
                 "data.params")


def brain_mix(config: dict, params: dict, split: str, seed: int, length: int) -> Dataset:
    # Training items drawn on the fly from three orientations with random geometry and
    # contrast; validation and test are the plain axial slabs at the same base scale.
    size = config["data"]["patch_size"]
    if split == "train":
        return build(data.BrainSliceMix, {"size": size, "length": length, "seed": seed, **params}, "data.params")
    return data.BrainSlices(split=split, size=size, seed=seed, scale=float(params.get("scale", 0.35)))


def dicom(config: dict, params: dict, split: str, seed: int, length: int) -> Dataset:
    # Real scans for out-of-distribution scoring (the same files for every split).
    d = config["data"]
    if not d["root"]:
        raise ConfigError("config key 'data.root' must name DICOM files for data.name=dicom (e.g. pydicom:MR_small.dcm)")
    return build(data.DicomImages, {"root": d["root"], "size": d["patch_size"],
                                    "complex": config["operator"]["name"] == "mri", **params}, "data.params")


def nifti(config: dict, params: dict, split: str, seed: int, length: int) -> Dataset:
    # The slices of one volume (the same for every split: data you score on, not a training set
    # with held-out slabs; for those, split the volume into files and give each split its own).
    d = config["data"]
    if not d["root"]:
        raise ConfigError("config key 'data.root' must name a NIfTI file (.nii or .nii.gz) for data.name=nifti")
    return build(data.NiftiSlices, {"paths": d["root"], "skip_bad_files": d["skip_bad_files"], **params}, "data.params")


def brain_patches3d(config: dict, params: dict, split: str, seed: int, length: int) -> Dataset:
    # 3D complex patches (2, D, H, W); the patch shape comes from data.params.patch (D, H, W).
    return build(data.BrainPatches3D, {"split": split, "seed": seed, **params}, "data.params")


def ellipses(config: dict, params: dict, split: str, seed: int, length: int) -> Dataset:
    # The ellipses set names its splits as dival does.
    return build(data.EllipsesDataset, {"size": config["data"]["patch_size"], "length": length, "seed": seed,
                                        "split": {"val": "validation"}.get(split, split), **params}, "data.params")


def image_folder(config: dict, params: dict, split: str, seed: int, length: int) -> Dataset:
    d = config["data"]
    if not d["root"]:
        raise ConfigError("config key 'data.root' must name a folder for data.name=image_folder")
    return build(data.ImageFolder, {"root": d["root"], "grey": d["grey"], "patch_size": d["patch_size"],
                                    "seed": seed, **params}, "data.params")


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


def fastmri(config: dict, params: dict, split: str, seed: int, length: int) -> Dataset:
    """Fully sampled fastMRI files of ``split`` as ground-truth complex images (2, h, w); validation
    and test keep ``data.val_length`` slices spread evenly over the volumes (all of them when
    there are fewer); training uses every slice (``data.train_length`` does not apply). With
    ``data.params.own_coils: true`` the items are ``{"image", "kspace"}``: the image and the
    slice's own coil k-space, which the measurement undersamples (multi-coil files only)."""
    d = config["data"]
    root = fastmri_split_root(d, split)
    if not Path(root).exists():
        raise ConfigError(f"data.name=fastmri: the {split} folder {root} does not exist (data.root={d['root']!r}); "
                          "see configs/fastmri/README.md for the expected layout")
    params = {k: v for k, v in params.items() if k not in FASTMRI_ROOT_KEYS.values()}
    if "crop" in params and params["crop"] is not None:
        params["crop"] = tuple(params["crop"]) if isinstance(params["crop"], list) else params["crop"]
    max_items = None if split == "train" else d["val_length"]
    try:
        return build(data.FastMRIImages, {"root_or_files": root, "max_items": max_items,
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
