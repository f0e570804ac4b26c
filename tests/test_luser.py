"""LUSER (shallow equilibrium prox in the unrolled solver) and DEQ4IP: sizes, implicit gradients, training, save/load."""
import pytest
import torch

from learn2invert.operators import GaussianBlur, SingleCoilMRI
from learn2invert.operators.masks import random_mask
from learn2invert.nn.prox.luser import ShallowEquilibriumProx
from learn2invert.solvers.deq4ip import DEQ4IP
from learn2invert.solvers.unrolled import unrolled_solver
from learn2invert.checkpoint import load_model, save_model


def _blur(batch=2, channels=3, size=8, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, size, size, generator=g, dtype=dtype)
    op = GaussianBlur(kernel_size=3, sigma=1.0).to(dtype)
    return x, op.A(x) + 0.01 * torch.randn(op.A(x).shape, generator=g, dtype=dtype), op


def test_parameter_counts_match_the_paper_table_3():
    # Paper Table 3 (RGB deblurring): LUSER-SW 96,503, LUSER-DW 770,073 parameters.
    sw = sum(p.numel() for p in unrolled_solver(3, prox="luser", folds=8, shared=True).parameters())
    dw = sum(p.numel() for p in unrolled_solver(3, prox="luser", folds=8, shared=False).parameters())
    assert sw == 96_268 and dw == 770_088  # + one gain per regulariser (not in the paper)
    assert abs(sw - 96_503) / 96_503 < 0.01 and abs(dw - 770_073) / 770_073 < 0.001
    assert sum(p.numel() for p in DEQ4IP(3).parameters()) == 557_441  # DnCNN without BatchNorm + step


class _Scale(torch.nn.Module):
    def forward(self, r):
        return 0.5 * r


def _contractive(solver):
    # A random shallow equilibrium map need not be a contraction (spectral norm bounds each
    # convolution's reshaped weight, not the map); scaling its output makes this tiny one
    # contractive, so the long plain iteration of the reference really reaches the fixed point.
    for prox in solver.prox:
        prox.equilibrium.f.mix.append(_Scale())
    return solver


def test_implicit_gradients_equal_a_long_unrolled_iteration_in_a_two_fold_loop():
    torch.manual_seed(0)
    x, y, op = _blur(dtype=torch.float64)
    tight = {"tol": 1e-12, "max_iter": 200}
    implicit = unrolled_solver(3, prox="luser", folds=2, shared=True, init="measurement",
                               prox_params={"features": 8, "groups": 4, "forward_solver": tight, "backward_solver": tight})
    implicit = _contractive(implicit).double()
    reference = unrolled_solver(3, prox="luser", folds=2, shared=True, init="measurement",
                                prox_params={"features": 8, "groups": 4, "backward": "unrolled",
                                             "forward_solver": {"tol": 1e-13, "max_iter": 400, "method": "iteration"}})
    reference = _contractive(reference).double()
    reference.load_state_dict(implicit.state_dict())
    implicit.eval(), reference.eval()  # eval: spectral norm uses its stored estimate, identical in both
    grads = []
    for solver in (implicit, reference):
        solver.zero_grad()
        out = solver(y, op)
        ((out[-1] - x) ** 2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in solver.parameters()]))
    stats = implicit.diagnostics()
    assert stats["fp_residual_max"] < 1e-10, stats
    assert torch.linalg.norm(grads[0] - grads[1]) / torch.linalg.norm(grads[1]) < 1e-6
    # The Jacobian term matters here: dropping it (Jacobian-free backward) changes the gradient a lot.
    for prox in implicit.prox:
        prox.equilibrium.backward = "jacobian_free"
    implicit.zero_grad()
    ((implicit(y, op)[-1] - x) ** 2).sum().backward()
    free = torch.cat([p.grad.flatten() for p in implicit.parameters()])
    assert torch.linalg.norm(free - grads[1]) / torch.linalg.norm(grads[1]) > 0.1


def test_training_lowers_the_loss_and_logs_fixed_point_statistics():
    torch.manual_seed(0)
    x, y, op = _blur(batch=4)
    solver = unrolled_solver(3, prox="luser", folds=3, shared=False, init="measurement",
                             prox_params={"features": 8, "groups": 4, "forward_solver": {"max_iter": 8}})
    opt = torch.optim.Adam(solver.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        loss = ((solver(y, op)[-1] - x) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0]
    stats = solver.diagnostics()
    assert set(stats) == {"fp_iterations", "fp_residual", "fp_residual_max"}
    assert 1 <= stats["fp_iterations"] <= 8 and stats["fp_residual"] >= 0


def test_deq4ip_on_mri_gives_a_descent_direction_and_logs_statistics():
    # DEQ4IP's map prox(x + mu A^T(y - A x)) with a residual prox is not a contraction (the
    # gradient step is the identity on unsampled k-space), so its solve stalls at a small
    # residual; the test asks what holds anyway: the implicit gradient lowers the loss.
    torch.manual_seed(0)
    mask = random_mask((16,), 4.0, 0.25, seed=0).reshape(1, 1, 16).expand(1, 16, 16)
    op = SingleCoilMRI(mask.unsqueeze(0)).double()
    x = torch.rand(2, 2, 16, 16, dtype=torch.float64)
    y = op.A(x)
    deq = DEQ4IP(2, depth=3, features=8, forward_solver={"max_iter": 60, "tol": 1e-8}).double().eval()
    loss = ((deq(y, op)[-1] - x) ** 2).mean()
    loss.backward()
    assert 1 <= deq.diagnostics()["fp_iterations"] <= 60 and deq.diagnostics()["fp_residual"] < 0.1
    with torch.no_grad():
        for p in deq.parameters():
            p -= 1e-2 * p.grad
        assert ((deq(y, op)[-1] - x) ** 2).mean() < loss
    with pytest.raises(ValueError, match="NaN"):
        deq(torch.full_like(y, float("nan")), op)
    with pytest.raises(ValueError, match="init"):
        DEQ4IP(2, init="prox")


def test_save_load_gives_identical_reconstructions(tmp_path):
    torch.manual_seed(0)
    x, y, op = _blur()
    solver = unrolled_solver(3, prox="luser", folds=2, shared=False, init="measurement", prox_params={"features": 8, "groups": 4})
    solver(y, op)  # one training-mode call updates the spectral-norm estimates
    solver.eval()
    save_model(solver, tmp_path)
    again = unrolled_solver(3, prox="luser", folds=2, shared=False, init="measurement", prox_params={"features": 8, "groups": 4}).eval()
    load_model(again, tmp_path)
    with torch.no_grad():
        assert torch.equal(solver(y, op)[-1], again(y, op)[-1])


def test_deq4ip_starts_from_a_pretrained_spectral_denoiser(tmp_path):
    # The Gilton et al. recipe: a one-fold spectrally normalised DnCNN denoiser initialises the prox.
    torch.manual_seed(0)
    denoiser = unrolled_solver(2, prox="dncnn", folds=1, prox_params={"depth": 3, "features": 4, "spectral": True,
                                                                     "batch_norm": False})
    denoiser(torch.rand(1, 2, 8, 8), GaussianBlur(kernel_size=3, sigma=1.0))  # settles the spectral-norm vectors
    save_model(denoiser.eval(), tmp_path)
    deq = DEQ4IP(2, depth=3, features=4, pretrained=str(tmp_path))
    for (name, a), b in zip(deq.equilibrium.f.prox.state_dict().items(), denoiser.prox[0].state_dict().values()):
        assert torch.equal(a, b), name


def test_groups_must_divide_features():
    with pytest.raises(ValueError, match="divisible"):
        ShallowEquilibriumProx(1, features=10, groups=4)


def test_training_log_records_fixed_point_statistics(tmp_path):
    from pathlib import Path

    from learn2invert.train import loop

    config = Path(__file__).resolve().parents[1] / "projects" / "luser2022" / "configs" / "deq_deblur_luser_sw.yaml"
    result = loop.train(config, tmp_path / "run", show_progress=False, overrides=(
        "data.patch_size=8", "data.train_length=8", "data.val_length=2", "train.epochs=1",
        "solver.params.folds=2", "solver.params.prox_params={features: 8, groups: 4, forward_solver: {max_iter: 4}}"))
    record = result["epochs"][-1]
    assert 1 <= record["train_fp_iterations"] <= 4 and record["train_fp_residual"] >= 0
