"""One registry for every name a config or the CLI accepts: lookups, errors, the generated reference."""
import inspect
from pathlib import Path

import pytest
from torch.utils.data import Dataset

from learn2invert import data, registry
from learn2invert.cli import build_parser
from learn2invert.train.config import ConfigError, load_config
from learn2invert.train.reference import reference_markdown

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"


@pytest.mark.parametrize("table", registry.ALL, ids=lambda r: r.kind)
def test_every_registered_name_imports_its_target(table):
    assert len(table) > 0
    for name in table:
        assert callable(table.get(name)), f"{table.kind} {name}"
        assert table.help(name)


def test_an_unknown_name_lists_the_valid_ones_and_names_its_key():
    with pytest.raises(registry.UnknownName, match=r"config key 'solver\.name': unknown solver 'rimm' \(choose from rim, irim"):
        registry.SOLVERS.get("rimm")
    with pytest.raises(registry.UnknownName, match="or name your own class as package.module:Class"):
        registry.OPERATORS.get("radon")
    with pytest.raises(ValueError, match="registered twice"):
        registry.SOLVERS.register("rim", "learn2invert.solvers.rim:RIM", "again")
    with pytest.raises(ValueError, match="package.module:attribute"):
        registry.Registry("thing", "thing.name").register("x", "no_colon", "bad target")


@pytest.mark.parametrize("override, key", [("solver.name=rimm", "solver.name"), ("data.name=mnist", "data.name"),
                                           ("loss.name=huber", "loss.name"), ("operator.name=radon", "operator.name"),
                                           ("train.optimizer.name=lbfgs", "train.optimizer.name"),
                                           ("train.schedule.name=linear", "train.schedule.name"),
                                           ("solver.name=unrolled", None)])
def test_load_config_checks_every_name_against_the_registries(override, key):
    if key is None:  # a known name with a bad prox
        with pytest.raises(ConfigError, match=r"'solver\.params\.prox': unknown prox 'resnett'"):
            load_config(SMOKE, [override, "solver.params={prox: resnett}"])
        return
    with pytest.raises(ConfigError, match=rf"config key '{key}': unknown"):
        load_config(SMOKE, [override])


def test_a_users_operator_class_is_not_checked_against_the_registry():
    config = load_config(SMOKE, ["operator.name=learn2invert.operators:Denoising"])
    assert config["operator"]["name"] == "learn2invert.operators:Denoising"


def test_every_dataset_class_can_be_named_in_data_name():
    # Readers of measured data and wrappers of other datasets are not ground-truth image sets.
    not_image_sets = {"FastMRISingleCoil": "reads measured k-space for l2i reconstruct; data.name fastmri reads the same files",
                      "SkipBadFiles": "wraps another dataset", "MultiCoilSlices": "wraps another dataset with coil maps",
                      "TestImages": "the photographs natural_patches crops its test split from"}
    classes = {name for name, obj in vars(data).items() if inspect.isclass(obj) and issubclass(obj, Dataset)}
    reachable = set()
    for name in registry.DATASETS:
        source = inspect.getsource(registry.DATASETS.get(name))
        reachable |= {c for c in classes if f"data.{c}" in source}
    assert classes - set(not_image_sets) <= reachable, classes - set(not_image_sets) - reachable


def test_a_nifti_volume_is_a_dataset_by_name(tmp_path):
    import numpy as np

    from learn2invert.train.datasets import build_dataset

    volume = np.random.default_rng(0).random((6, 8, 5)).astype(np.float32)
    data.save_nifti(tmp_path / "vol.nii.gz", volume)
    config = load_config(SMOKE, ["data.name=nifti", f"data.root={tmp_path / 'vol.nii.gz'}"])
    slices = build_dataset(config, "train")
    assert len(slices) == 5 and tuple(slices[0].shape) == (1, 8, 6)  # axial slices, rotated for display
    with pytest.raises(ConfigError, match="'data.root' must name a NIfTI file"):
        build_dataset(load_config(SMOKE, ["data.name=nifti"]), "val")


def test_the_configuration_reference_is_generated_from_the_code():
    page = (ROOT / "docs" / "configuration.md").read_text()
    assert page == reference_markdown(), "run: python -m learn2invert.train.reference > docs/configuration.md"
    for table in registry.ALL:
        for name in table:
            assert f"| `{name}` |" in page
    assert "| `train.max_steps` | `0` | optimiser steps to train for" in page


def test_the_bench_help_lists_the_registered_benchmarks(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--help"])
    out = capsys.readouterr().out
    for name in registry.BENCHMARKS:
        assert f"{name}: {registry.BENCHMARKS.help(name)}" in out
