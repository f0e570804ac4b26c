"""Every image solver trains on simulated multi-coil MRI with estimated coil maps.

``operator.params: {coils: 8, maps: estimated}`` measures the embedded brain slices with eight
simulated coils (SENSE, :class:`~learn2invert.operators.MultiCoilMRI`), and gives the solver maps
estimated from the measured calibration region. Each solver (RIM, i-RIM, U-Net, ADMM-Net,
LU-DnCNN, LUSER-DW, DEQ4IP) is made tiny and trained for two optimiser steps on 32 x 32 complex
slices, batch 2; the run must write finite weights and finite training and validation losses.
"""
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from learn2invert.operators import MultiCoilMRI
from learn2invert.operators.generator import Measurement
from learn2invert.train import loop
from learn2invert.train.config import load_config

BASE = ("seed=0", "data.name=brain_slices", "data.patch_size=32", "data.train_length=4", "data.val_length=2",
        "operator.name=mri", "operator.params={coils: 8, maps: estimated}", "operator.acceleration=4",
        "operator.center_fraction=0.16", "operator.noise_sigma=0.01", "train.batch_size=2",
        "train.val_batch_size=2", "train.max_steps=2", "train.val_every=2", "loss.weights=last",
        "train.device=cpu")

# solver.name and solver.params of each case; the LU-DnCNN and LUSER-DW names are those of
# projects/luser2022 (the unrolled solver with a DnCNN / LUSER prox), shrunk.
SOLVERS = {
    "rim": ("rim", "{steps: 2, architecture: mri, conv_channels: 4, hidden_channels: 4, init: adjoint}"),
    "irim": ("irim", "{steps: 2, state_channels: 4, hidden_channels: 4, downsampling: [1, 2], init: adjoint}"),
    "unet": ("unet", "{features: 4, depth: 2}"),
    "admm": ("admm", "{stages: 2, features: 4, cg_iterations: 2}"),
    "lu_dncnn": ("unrolled", "{prox: dncnn, folds: 2, shared: true, init: adjoint, "
                             "prox_params: {depth: 3, features: 4}}"),
    "luser_dw": ("unrolled", "{prox: luser, folds: 2, shared: false, init: adjoint, prox_params: {features: 4, "
                             "groups: 2, forward_solver: {max_iter: 3}, backward_solver: {max_iter: 3}}}"),
    "deq4ip": ("deq4ip", "{depth: 3, features: 4, init: adjoint, forward_solver: {max_iter: 3}, "
                         "backward_solver: {max_iter: 3}}"),
}


def test_the_config_measures_eight_coils_with_estimated_maps():
    config = load_config(None, BASE)
    x = torch.zeros(2, 2, 32, 32)
    x[:, 0, 8:24, 8:24] = 1.0
    y, op, _ = Measurement(config, (2, 32, 32))(x, torch.Generator().manual_seed(0))
    assert isinstance(op, MultiCoilMRI) and op.n_coils == 8 and y.shape == (2, 2, 8, 32, 32)
    # Estimated maps are normalised on the object: sum over coils of |S_c|^2 is 1 at its centre.
    power = op.sensitivities.pow(2).sum(dim=(1, 2))[:, 16, 16]
    torch.testing.assert_close(power, torch.ones(2), atol=1e-4, rtol=0)


@pytest.mark.parametrize("case", list(SOLVERS))
def test_each_solver_trains_two_steps_on_multicoil_mri(case, tmp_path):
    name, params = SOLVERS[case]
    torch.manual_seed(0)
    result = loop.train(None, tmp_path / case, overrides=(*BASE, f"solver.name={name}", f"solver.params={params}"),
                        show_progress=False)
    run = Path(result["run_dir"])
    history = json.loads((run / "history.json").read_text())
    assert history[-1]["global_step"] == 2
    losses = [r[key] for r in history for key in ("train_loss", "val_loss")]
    assert all(torch.isfinite(torch.tensor(v)) and v > 0 for v in losses), losses
    weights = load_file(str(run / "model.safetensors"))
    assert weights and all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point())
