"""Multi-coil training from a config: ``operator.params.coils`` simulates SENSE measurements with
analytic coil maps (true or estimated maps for the solver), on multi-coil fastMRI files."""
import json
from pathlib import Path

import pytest
import torch
import yaml

from learn2invert.data.fastmri_synthetic import write_synthetic_fastmri_dataset
from learn2invert.operators import MultiCoilMRI
from learn2invert.train import loop
from learn2invert.train.config import ConfigError, load_config
from learn2invert.operators.generator import Measurement
from learn2invert.inference.reconstruct import reconstruct


def _measurement(*overrides: str, shape=(2, 24, 20)) -> Measurement:
    config = load_config(None, ["operator.name=mri", "operator.noise_sigma=0.0", *overrides])
    return Measurement(config, shape)


def test_coils_simulate_sense_measurements_with_true_maps():
    measurement = _measurement("operator.params={coils: 4}")
    x = torch.randn(3, 2, 24, 20, generator=torch.Generator().manual_seed(0))
    y, op, _ = measurement(x, torch.Generator().manual_seed(1))
    assert isinstance(op, MultiCoilMRI) and y.shape == (3, 2, 4, 24, 20)
    assert op.sensitivities.shape == (3, 2, 4, 24, 20)
    torch.testing.assert_close(y, op.A(x))  # no noise: y is the SENSE model of x
    # Normalised maps, a different rotation of the array per sample.
    torch.testing.assert_close(op.sensitivities.pow(2).sum(dim=(1, 2)), torch.ones(3, 24, 20))
    assert not torch.allclose(op.sensitivities[0], op.sensitivities[1])
    # Per-sample operators of the training loop batch into one.
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    y_b, op_b, _ = loop.measure(measurement, x, generators)
    assert isinstance(op_b, MultiCoilMRI) and op_b.sensitivities.shape[0] == 3 and op_b.mask.shape[0] == 3
    torch.testing.assert_close(y_b, op_b.A(x))


def test_estimated_maps_come_from_the_measured_calibration_region():
    measurement = _measurement("operator.params={coils: 6, maps: estimated}", "operator.acceleration=4",
                               "operator.center_fraction=0.25")
    x = torch.zeros(1, 2, 24, 20)
    x[:, 0, 6:18, 5:15] = 1.0
    y, op, _ = measurement(x, torch.Generator().manual_seed(0))
    assert isinstance(op, MultiCoilMRI) and op.sensitivities.shape == (1, 2, 6, 24, 20)
    power = op.sensitivities.pow(2).sum(dim=(1, 2))[0]
    assert torch.allclose(power[12, 10], torch.tensor(1.0), atol=1e-5)  # normalised on the object
    true = _measurement("operator.params={coils: 6}", "operator.acceleration=4", "operator.center_fraction=0.25")
    _, op_true, _ = true(x, torch.Generator().manual_seed(0))
    assert not torch.allclose(op.sensitivities, op_true.sensitivities)  # estimated, not the simulated maps


@pytest.mark.parametrize("params, key", [
    ("{coils: -1}", "operator.params.coils"),
    ("{coils: 4, maps: exact}", "operator.params.maps"),
    ("{maps: estimated}", "operator.params"),
])
def test_bad_coil_settings_name_the_key(params, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        _measurement(f"operator.params={params}")
    # Another operator's params left in an MRI config are ignored, as before (old runs still load).
    assert _measurement("operator.params={kind: gaussian, reduction: 2}").cfg["params"]["kind"] == "gaussian"


def test_a_multicoil_fastmri_config_trains_and_reconstructs(tmp_path):
    shape = dict(slices=2, kspace_shape=(64, 32), recon_size=(32, 32))
    write_synthetic_fastmri_dataset(tmp_path, coils=4, files={"train": 2, "val": 1, "test": 1}, **shape)
    config = {
        "data": {"name": "fastmri", "root": str(tmp_path / "knee_multicoil_{split}"), "val_length": 2,
                 "params": {"coils": "multi"}},
        "operator": {"name": "mri", "acceleration": 4.0, "center_fraction": 0.08, "noise_sigma": 0.0,
                     "params": {"coils": 4, "maps": "estimated"}},
        "solver": {"name": "irim", "params": {"steps": 2, "state_channels": 8, "hidden_channels": 8,
                                              "downsampling": [1, 2], "init": "adjoint"}},
        "loss": {"name": "nmse", "weights": "last"},
        "train": {"max_steps": 2, "val_every": 2, "batch_size": 2, "optimizer": {"name": "adam", "lr": 0.01}},
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    loop.train(path, tmp_path / "run", show_progress=False)
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert history[-1]["global_step"] == 2 and all(torch.isfinite(torch.tensor(r["val_loss"])) for r in history)
    test_file = next((tmp_path / "knee_multicoil_test").glob("*.h5"))
    result = reconstruct(tmp_path / "run", test_file, tmp_path / "recon.h5", progress=False)
    assert result["mask_source"] == "file" and Path(result["output"]).is_file()
