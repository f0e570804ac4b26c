"""The generic unrolled proximal-gradient solver and its prox networks (ResNet, U-Net, DnCNN)."""
import pytest
import torch

from learn2invert.nn.prox import DnCNN, ResNetProx, UNetProx
from learn2invert.operators import GaussianBlur, Inpainting, centered_hole_mask
from learn2invert.solvers.unrolled import UnrolledProximalGradient, unrolled_solver
from learn2invert.train import loop
from learn2invert.train.experiment import build_optimizer
from learn2invert.inference import load_solver


def _blur_problem(batch=2, channels=3, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, size, size, generator=g)
    op = GaussianBlur(kernel_size=5, sigma=1.0)
    y = op.A(x) + 0.01 * torch.randn(op.A(x).shape, generator=g)
    return x, y, op


def test_dncnn_parameter_count_matches_the_luser_paper():
    # LUSER paper, Table 3: LU-DnCNN has 558,580 parameters for RGB deblurring (ours: no bias before BN).
    count = sum(p.numel() for p in DnCNN(3).parameters())
    assert count == 558_400
    assert abs(count - 558_580) / 558_580 < 1e-3


@pytest.mark.parametrize("prox", [ResNetProx(3, features=8), UNetProx(3, features=4, depth=2), DnCNN(3, depth=4, features=8)])
def test_untrained_prox_is_identity_so_solver_is_gradient_descent(prox):
    x, y, op = _blur_problem()
    solver = UnrolledProximalGradient([prox], folds=3, step_init=1.0, init="measurement", step_units="absolute").eval()
    out = solver(y, op)
    assert len(out) == 3
    expected = y
    for _ in range(3):
        expected = expected + op.A_adjoint(y - op.A(expected))
    assert torch.allclose(out[-1], expected, atol=1e-6)


def test_last_prox_false_ends_on_the_data_step_and_shared_weights_use_one_module():
    x, y, op = _blur_problem()
    shared = unrolled_solver(3, prox="resnet", folds=4, shared=True, prox_params={"features": 8}, init="measurement",
                            step_units="absolute")
    untied = unrolled_solver(3, prox="resnet", folds=4, prox_params={"features": 8}, init="measurement")
    assert sum(p.numel() for p in untied.parameters()) - 4 == 4 * (sum(p.numel() for p in shared.parameters()) - 4)
    torch.nn.init.normal_(shared.prox[0].net[-1].weight, std=0.1)  # make the prox do something
    shared.eval()
    full = shared(y, op)
    shared.last_prox = False
    ends_on_data = shared(y, op)
    d = full[-2] + shared.steps()[3] * op.A_adjoint(y - op.A(full[-2]))
    assert torch.allclose(ends_on_data[-1], d, atol=1e-6)
    assert not torch.allclose(full[-1], d, atol=1e-4)


def test_scalar_parameters_get_their_own_learning_rate():
    solver = unrolled_solver(1, prox="dncnn", folds=2, prox_params={"depth": 3, "features": 4}, scalar_lr=1e-2)
    config = {"train": {"optimizer": {"name": "adam", "lr": 1e-5}, "schedule": {"name": "none"}, "epochs": 1}}
    optimizer, _ = build_optimizer(config, solver)
    lrs = sorted(group["lr"] for group in optimizer.param_groups)
    assert lrs == [1e-5, 1e-2]
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(list(solver.parameters()))


def test_gradients_reach_steps_and_prox_and_training_lowers_the_loss():
    torch.manual_seed(0)
    x, y, op = _blur_problem(batch=4)
    solver = unrolled_solver(3, prox="resnet", folds=3, prox_params={"features": 8}, init="measurement")
    opt = torch.optim.Adam(solver.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = torch.mean((solver(y, op)[-1] - x) ** 2)
        opt.zero_grad()
        loss.backward()
        assert solver.step_raw.grad is not None and solver.prox[0].net[-1].weight.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_bad_input_is_refused_clearly():
    x, y, op = _blur_problem()
    solver = unrolled_solver(3, prox="resnet", folds=2, prox_params={"features": 8})
    with pytest.raises(ValueError, match="NaN"):
        solver(torch.full_like(y, float("nan")), op)
    with pytest.raises(ValueError, match="steps"):
        solver(y, op, steps=5)
    with pytest.raises(ValueError, match="one prox per fold"):
        UnrolledProximalGradient([ResNetProx(3, features=4)] * 2, folds=3)
    with pytest.raises(ValueError, match="unknown prox"):
        unrolled_solver(3, prox="bm3d")
    mask = centered_hole_mask(16, 16, 4)
    with pytest.raises(ValueError, match="init='prox'"):
        unrolled_solver(3, prox="resnet", folds=2, init="prox", prox_params={"features": 4})(Inpainting(mask).A(x), Inpainting(mask))


def test_pretrained_denoiser_initialises_every_fold(tmp_path):
    """A one-fold unrolled 'denoiser' run trained with l2i train initialises an unrolled deblurring solver."""
    overrides = ("data.train_length=8", "data.val_length=2", "data.patch_size=16", "data.grey=false", "train.batch_size=4",
                 "operator.name=denoising", "operator.noise_sigma=0.1", "solver.name=unrolled",
                 "solver.params={prox: resnet, folds: 1, init: measurement, prox_params: {features: 8}}")
    loop.train(None, tmp_path / "denoiser", overrides=overrides, show_progress=False)
    pre = unrolled_solver(3, prox="resnet", folds=3, prox_params={"features": 8}, pretrained=str(tmp_path / "denoiser"))
    trained = load_solver(tmp_path / "denoiser")[0]
    for k in range(3):
        for (name, a), b in zip(pre.prox[k].state_dict().items(), trained.prox[0].state_dict().values()):
            assert torch.equal(a, b), name
    frozen = unrolled_solver(3, prox="resnet", folds=2, prox_params={"features": 8}, freeze_prox=True)
    assert [n for n, p in frozen.named_parameters() if p.requires_grad] == ["step_raw"]


def test_centre_hole_inpainting_config_trains(tmp_path):
    overrides = ("data.train_length=8", "data.val_length=2", "data.patch_size=16", "train.batch_size=4",
                 "operator.name=inpainting", "operator.params={hole: 6}", "operator.noise_sigma=0.0",
                 "solver.name=unrolled", "solver.params={prox: dncnn, folds: 2, init: measurement, "
                 "prox_params: {depth: 3, features: 4}}")
    result = loop.train(None, tmp_path / "inp", overrides=overrides, show_progress=False)
    assert torch.isfinite(torch.tensor(result["epochs"][-1]["train_loss"]))
