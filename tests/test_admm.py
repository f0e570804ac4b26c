"""Unrolled ADMM-Net: stage count and shapes, the x-update solves its normal equation, gradients, training."""
import pytest
import torch

from learn2invert import operators
from learn2invert.solvers.admm import ADMMNet
from learn2invert.train.config import load_config
from learn2invert.train.experiment import build_solver


def _mri(batch=2, n=16, dtype=torch.float32):
    mask = operators.masks.random_mask((n,), 4.0, 0.25, seed=0).to(dtype).reshape(1, 1, 1, n)
    op = operators.SingleCoilMRI(mask.expand(batch, 1, n, n).contiguous())
    x = torch.nn.functional.avg_pool2d(torch.randn(batch, 2, n, n, dtype=dtype), 3, 1, 1)
    return op.A(x), op, x


def test_stages_and_shapes_2d_and_3d():
    y, op, x = _mri()
    est = ADMMNet(2, stages=3, features=4)(y, op)
    assert len(est) == 3 and all(e.shape == x.shape for e in est)
    blur = operators.GaussianBlur(5, 1.0)
    vol = torch.randn(1, 1, 3, 8, 8)
    with pytest.raises(ValueError, match="channels=2"):
        ADMMNet(2, dims=3, stages=1)(vol, operators.Denoising())
    assert ADMMNet(1, dims=3, stages=2, features=4)(vol, operators.Denoising())[-1].shape == vol.shape
    assert ADMMNet(1, stages=2, features=4)(blur.A(torch.rand(1, 1, 12, 12)), blur)[-1].shape == (1, 1, 12, 12)
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 3\]"):
        ADMMNet(2, stages=3)(y, op, steps=4)


def test_untrained_first_stage_is_the_exact_x_update():
    """With identity prox and u = 0, z_1 = (A^T A + rho I)^-1 (A^T y + rho A^T y): check the normal equation."""
    y, op, _ = _mri(dtype=torch.float64)
    model = ADMMNet(2, stages=1, features=4, rho_init=0.5, cg_iterations=20).double()
    with torch.no_grad():
        z1 = model(y, op)[0]
    aty = op.A_adjoint(y)
    residual = op.A_adjoint_A(z1) + 0.5 * z1 - (aty + 0.5 * aty)
    assert float(residual.norm() / aty.norm()) < 1e-8


def test_gradients_reach_every_parameter_and_adam_reduces_the_loss():
    y, op, x = _mri(batch=4)
    model = ADMMNet(2, stages=3, features=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for step in range(12):
        loss = torch.stack([torch.mean((z - x) ** 2) for z in model(y, op)]).mean()
        opt.zero_grad()
        loss.backward()
        if step == 1:  # after one update: the prox's zero-initialised last layer has moved
            assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.85 * losses[0]


def test_config_builds_the_admm_solver():
    from pathlib import Path

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "mri_admm_4x.yaml")
    model = build_solver(config, (2, 64, 64))
    assert isinstance(model, ADMMNet) and model.stages == 8
