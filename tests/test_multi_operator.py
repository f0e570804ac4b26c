"""Multi-operator training (issue 15, item 7): operator.mixture with weights, drawn per batch or
per sample; unchanged single-operator draws; reproducible, weight-respecting draws; per-operator
validation and evaluation; clear errors for bad mixtures; a few training steps that lower the loss."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from learn2invert.operators import RandomProjection
from learn2invert.operators.base import adjoint_mismatch
from learn2invert.operators.likelihood import data_gradient
from learn2invert.operators.per_sample import PerSampleOperators
from learn2invert.train import loop
from learn2invert.train.config import ConfigError, load_config
from learn2invert.inference.evaluate import evaluate_run
from learn2invert.operators.generator import component_config, Measurement, OperatorMixture, measure
from learn2invert.train.loop import batch_generator, sample_generators

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 8, 8)
GAUSS = "{label: gauss, name: random_projection, params: {kind: gaussian, reduction: 2, normalize: true}}"
BERN = "{label: bern, weight: 3, name: random_projection, params: {kind: bernoulli, reduction: 2, normalize: true}}"
FOURIER = "{label: four, name: random_projection, params: {kind: fourier, reduction: 2, normalize: true}}"


def _mixture(*entries: str, per: str = "batch", extra: tuple[str, ...] = ()) -> dict:
    return load_config(None, ["data.patch_size=8", "operator.noise_sigma=[0.02, 0.1]", f"operator.per={per}",
                              f"operator.mixture=[{', '.join(entries)}]", *extra])


def _images(batch: int = 6) -> torch.Tensor:
    return torch.rand((batch, *SHAPE), generator=torch.Generator().manual_seed(1))


# Sums of the measurements of 3 samples (seed 7, epoch 2, indices 3, 11, 5) under the code before
# operator mixtures existed (commit 1d19696), to the last bit: single-operator configs draw as before.
BEFORE = {
    "random_projection": ((["data.patch_size=8", "operator.name=random_projection", "operator.params={kind: gaussian, reduction: 2}",
                            "operator.noise_sigma=[0.1, 0.5]"], (1, 8, 8)),
                          (-3.337304562330246, 410.2020705640316, 1.0990873277187347)),
    "mri": ((["operator.name=mri", "operator.acceleration=[2.0, 6.0]", "operator.noise_sigma=0.01"], (2, 16, 16)),
            (41.57282415633904, 109.14973888060536, 0.029999999329447746)),
    "inpainting": ((["operator.name=inpainting", "operator.keep_fraction=0.3", "operator.noise_sigma=0.05"], (1, 8, 8)),
                   (24.031281072559068, 29.32165171505767, 0.15000000223517418)),
}


@pytest.mark.parametrize("name", list(BEFORE))
def test_single_operator_configs_draw_bit_identical_measurements(name):
    (overrides, shape), expected = BEFORE[name]
    config = load_config(None, overrides)
    assert config["operator"]["mixture"] is None and not isinstance(Measurement(config, shape), OperatorMixture)
    x = torch.rand((3, *shape), generator=torch.Generator().manual_seed(1))
    y, _, sigma = measure(Measurement(config, shape), x, sample_generators(7, 2, [3, 11, 5]), batch_generator(7, 2, 0))
    assert (float(y.double().sum()), float(y.double().abs().sum()), float(sigma.double().sum())) == expected


def test_per_batch_mixture_measures_exactly_as_the_drawn_single_operator_config():
    config = _mixture(GAUSS, BERN, FOURIER)
    mixture = Measurement(config, SHAPE)
    x, indices = _images(), [4, 0, 9, 2, 7, 5]
    seen = set()
    for batch_index in range(30):
        k = mixture.choose(batch_generator(0, 1, batch_index))
        seen.add(k)
        y, op, sigma = measure(mixture, x, sample_generators(0, 1, indices), batch_generator(0, 1, batch_index))
        single = Measurement(component_config(config, k), SHAPE)
        y1, op1, sigma1 = measure(single, x, sample_generators(0, 1, indices))
        assert torch.equal(y, y1) and torch.equal(sigma, sigma1) and op.kind == op1.kind
        # Reproducible from (seed, epoch, index) alone.
        again = measure(mixture, x, sample_generators(0, 1, indices), batch_generator(0, 1, batch_index))[0]
        assert torch.equal(y, again)
    assert seen == {0, 1, 2}
    with pytest.raises(ValueError, match="per: batch draws one operator per batch"):
        measure(mixture, x, sample_generators(0, 1, indices))


def test_weights_are_respected_per_batch_and_per_sample():
    mixture = Measurement(_mixture(GAUSS, BERN), SHAPE)  # weights 1 : 3
    assert mixture.weights.tolist() == [0.25, 0.75]
    draws = torch.tensor([mixture.choose(batch_generator(0, 0, i)) for i in range(4000)])
    assert abs(float((draws == 1).double().mean()) - 0.75) < 0.03  # 4000 draws: std 0.007
    per_sample = Measurement(_mixture(GAUSS, BERN, per="sample"), SHAPE)
    kinds = []
    for g in sample_generators(0, 0, range(2000)):
        kinds.append(per_sample(torch.zeros(1, *SHAPE), g)[1].kind)
    assert abs(kinds.count("bernoulli") / 2000 - 0.75) < 0.04


def test_per_sample_mixture_batch_is_each_samples_own_measurement():
    config = _mixture(GAUSS, BERN, per="sample")
    mixture = Measurement(config, SHAPE)
    x, indices = _images(8), list(range(8))
    y, op, sigma = measure(mixture, x, sample_generators(3, 0, indices))
    assert isinstance(op, PerSampleOperators) and y.shape == (8, 32) and sigma.shape == (8, 1, 1, 1)
    kinds = []
    for k, g in enumerate(sample_generators(3, 0, indices)):  # each sample as the mixture alone gives it
        yk, opk, sk = mixture(x[k:k + 1], g)
        assert torch.equal(y[k:k + 1], yk) and torch.equal(sigma[k:k + 1], sk)
        kinds.append(opk.kind)
    assert set(kinds) == {"gaussian", "bernoulli"}
    # The combined operator is each sample's operator, with an exact adjoint and per-sample gradients.
    torch.testing.assert_close(op.A(x), torch.cat([o.A(x[k:k + 1]) for k, o in enumerate(_sample_ops(mixture, indices))]))
    fresh = PerSampleOperators([RandomProjection(32, 64, "gaussian", seed=0, normalize=True).double(),
                                RandomProjection(32, 64, "bernoulli", seed=0, normalize=True).double()], [[0, 3, 4], [1, 2, 5]])
    assert adjoint_mismatch(fresh, _images(6).double(), generator=torch.Generator().manual_seed(0)) < 1e-10
    grad = data_gradient(op, x, y, sigma**2)
    for k, o in enumerate(_sample_ops(mixture, indices)):
        expected = o.A_adjoint(y[k:k + 1] - o.A(x[k:k + 1])) / sigma[k:k + 1] ** 2
        assert float((grad[k:k + 1] - expected).norm() / expected.norm()) < 1e-5  # float32 rounding of y - A x


def _sample_ops(mixture, indices):
    return [mixture(torch.zeros(1, *SHAPE), g)[1] for g in sample_generators(3, 0, indices)]


@pytest.mark.parametrize("entries, extra, message", [
    ((GAUSS, "{name: teleport}"), (), r"'operator\.mixture\[1\]\.name': unknown operator 'teleport'"),
    ((GAUSS, "{name: denoising, weight: -1}"), (), r"'operator\.mixture\[1\]\.weight' must be a positive number"),
    (("{name: denoising, weight: 0}",), (), r"'operator\.mixture\[0\]\.weight' must be a positive number"),
    ((GAUSS, "{name: denoising, sigma: 3}"), (), r"unknown config key 'operator\.mixture\[1\]\.sigma'"),
    ((GAUSS, "{params: {factor: 2}}"), (), r"'operator\.mixture\[1\]\.name' is required"),
    ((GAUSS, "{name: denoising, noise_sigma: -1}"), (), r"'operator\.mixture\[1\]\.noise_sigma' must be >= 0"),
    ((GAUSS, "{label: gauss, name: denoising}"), (), r"the label 'gauss' names two entries"),
    ((GAUSS, "{name: random_projection, params: {kind: cubist, reduction: 2}}"), (),
     r"operator\.mixture\[1\] \(random_projection1\): kind must be one of .*cubist"),
    ((GAUSS,), ("operator.name=denoising",), r"'operator\.name' and 'operator\.mixture'"),
    ((GAUSS,), ("operator.per=always",), r"'operator\.per' must be batch or sample"),
])
def test_bad_mixtures_name_the_key(entries, extra, message):
    with pytest.raises(ConfigError, match=message):
        Measurement(_mixture(*entries, extra=extra), SHAPE)


def test_per_sample_refuses_operators_of_different_measurement_shapes():
    with pytest.raises(ConfigError, match=r"'operator\.per'.*different shapes \(gauss: \(32,\), four: \(2, 32\)\).*per: batch"):
        Measurement(_mixture(GAUSS, FOURIER, per="sample"), SHAPE)
    sr = ["{label: x2, name: super_resolution, params: {factor: 2}}", "{label: x4, name: super_resolution, params: {factor: 4}}"]
    with pytest.raises(ConfigError, match=r"'operator\.per'.*x2: \(1, 4, 4\), x4: \(1, 2, 2\)"):
        Measurement(_mixture(*sr, per="sample"), SHAPE)
    assert isinstance(Measurement(_mixture(*sr), SHAPE), OperatorMixture)  # per batch: fine
    with pytest.raises(ConfigError, match=r"'operator\.per' applies only to operator\.mixture"):
        load_config(None, ["operator.per=sample"])
    with pytest.raises(ConfigError, match=r"'operator\.name': mixture needs the list operator\.mixture"):
        load_config(None, ["operator.name=mixture"])


def test_shipped_mixture_configs_load_and_resolve():
    for name, shape, labels, per in (("rim_3task", (1, 32, 32), ["gaussian", "bernoulli", "fourier"], "batch"),
                                     ("rim_superres_x234", (1, 36, 36), ["x2", "x3", "x4"], "batch")):
        config = load_config(ROOT / "configs" / f"{name}.yaml")
        assert config["operator"]["name"] == "mixture" and config["operator"]["per"] == per
        mixture = Measurement(config, shape)
        assert mixture.labels == labels and torch.allclose(mixture.weights, torch.full((3,), 1 / 3, dtype=torch.float64))
        with pytest.raises(ConfigError, match="operator.per"):  # their measurement shapes differ
            Measurement(load_config(ROOT / "configs" / f"{name}.yaml", ["operator.per=sample"]), shape)


TINY = ("data.train_length=64", "data.val_length=8", "data.patch_size=8", "train.batch_size=8", "train.max_steps=24",
        "train.val_every=8", "train.optimizer.lr=0.01", "solver.params.steps=3", "solver.params.conv_channels=8",
        "solver.params.hidden_channels=8", "solver.params.init=adjoint", "solver.params.eps_init=1.0",
        "operator.noise_sigma=0.05", "operator.name=mixture")


@pytest.mark.parametrize("per, entries", [
    ("batch", (GAUSS, FOURIER)),
    ("sample", (GAUSS, BERN)),
])
def test_mixture_trains_loss_falls_and_scores_each_operator(tmp_path, per, entries):
    overrides = TINY + (f"operator.per={per}", f"operator.mixture=[{', '.join(entries)}]")
    result = loop.train(ROOT / "configs" / "smoke.yaml", tmp_path / "run", overrides=overrides, show_progress=False)
    history = result["epochs"]
    assert len(history) == 3 and history[-1]["train_loss"] < 0.7 * history[0]["train_loss"]
    labels = ["gauss", "four"] if per == "batch" else ["gauss", "bern"]
    last = history[-1]
    for key in ("psnr", "loss"):
        per_op = [last[f"val_{key}/{label}"] for label in labels]
        assert last[f"val_{key}"] == pytest.approx(sum(per_op) / 2)
    # l2i eval: per-operator blocks, pooled means = mean of the operators' means.
    scores = evaluate_run(tmp_path / "run", length=4)
    assert list(scores["per_operator"]) == labels
    means = [scores["per_operator"][label]["psnr"]["mean"] for label in labels]
    assert scores["psnr"]["mean"] == pytest.approx(sum(means) / 2, abs=1e-6)
    assert all(f"rim, {label}" in (tmp_path / "run" / "eval.md").read_text() for label in labels)
    # The table script scores the run (and any other) under each operator of a config.
    table = _script("operator_table").operator_table(tmp_path / "run" / "config.yaml", {"mix": tmp_path / "run"}, samples=4)
    assert table["rows"]["mix"]["gauss"]["psnr"] == pytest.approx(scores["per_operator"]["gauss"]["psnr"]["mean"], abs=1e-5)
    assert set(table["rows"]) == {"mix", "adjoint A^T y"}


def test_resumed_mixture_run_repeats_the_uninterrupted_one(tmp_path):
    # Cut after step 4 of the 8-step first epoch: the resumed run redraws the operators of batches 4-7.
    overrides = TINY + ("operator.per=batch", f"operator.mixture=[{GAUSS}, {FOURIER}]", "train.val_every=4",
                        "train.max_steps=12")
    full = loop.train(ROOT / "configs" / "smoke.yaml", tmp_path / "full", overrides=overrides, show_progress=False)
    loop.train(ROOT / "configs" / "smoke.yaml", tmp_path / "cut", overrides=overrides[:-1] + ("train.max_steps=4",),
               show_progress=False)
    resumed = loop.train(None, tmp_path / "cut", overrides=("train.max_steps=12",), resume=True, show_progress=False)
    assert json.dumps(resumed["epochs"][-1]["val_psnr"]) == json.dumps(full["epochs"][-1]["val_psnr"])


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
