"""Classical baselines: batched conjugate gradients and Tikhonov reconstruction."""
import torch

from learn2invert.operators.gradient import FiniteDifference
from learn2invert.solvers.classical import conjugate_gradient, tikhonov
from test_core_operators import MatrixOperator


def test_conjugate_gradient_solves_spd_batch():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(10, 10, generator=g, dtype=torch.float64)
    m = q @ q.T + 0.5 * torch.eye(10, dtype=torch.float64)
    b = torch.randn(3, 10, generator=g, dtype=torch.float64)
    x = conjugate_gradient(lambda v: v @ m, b, iterations=30, tolerance=1e-12)
    assert torch.allclose(x, torch.linalg.solve(m, b.T).T, atol=1e-9)


def test_tikhonov_equals_closed_form_and_beats_adjoint():
    g = torch.Generator().manual_seed(0)
    h, w = 6, 6
    matrix = torch.randn(24, h * w, generator=g, dtype=torch.float64) / 6
    op = MatrixOperator(matrix, (1, h, w))
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h, dtype=torch.float64), torch.linspace(0, 1, w, dtype=torch.float64), indexing="ij")
    truth = (torch.sin(3 * xx) + yy).reshape(1, 1, h, w)
    y = op.A(truth) + 0.01 * torch.randn(1, 24, generator=g, dtype=torch.float64)
    lam = 0.05
    x = tikhonov(op, y, lam, regulariser="gradient", iterations=200, tolerance=1e-13)
    # Closed form with the explicit gradient matrix.
    grad = FiniteDifference()
    eye = torch.eye(h * w, dtype=torch.float64).reshape(h * w, 1, h, w)
    d = grad.A(eye).reshape(h * w, -1).T
    closed = torch.linalg.solve(matrix.T @ matrix + lam * d.T @ d, matrix.T @ y.reshape(-1))
    assert torch.allclose(x.reshape(-1), closed, atol=1e-8)
    err_tik = torch.linalg.norm(x - truth)
    err_adj = torch.linalg.norm(op.A_adjoint(y) - truth)
    assert err_tik < 0.5 * err_adj


def test_nonlinear_tikhonov_reaches_the_linear_minimiser_and_never_rises():
    from learn2invert.operators import GaussianBlur
    from learn2invert.solvers.classical import nonlinear_tikhonov

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 1, 12, 12, generator=g, dtype=torch.float64)
    op = GaussianBlur(5, 1.0)
    y = op.A(x) + 0.01 * torch.randn(op.A(x).shape, generator=g, dtype=torch.float64)
    exact = tikhonov(op, y, 0.02, iterations=500, tolerance=1e-12)
    fit = nonlinear_tikhonov(op, y, 0.02, iterations=400)
    assert float((fit - exact).norm() / exact.norm()) < 1e-3
    # Monotone: more iterations never give a larger objective.
    objective = [float(((op.A(e) - y) ** 2).sum() + 0.02 * (FiniteDifference().A(e) ** 2).sum())
                 for e in (nonlinear_tikhonov(op, y, 0.02, iterations=k) for k in (1, 5, 20, 80))]
    assert objective == sorted(objective, reverse=True)


def test_nonlinear_tikhonov_fits_poisson_beer_lambert_ct_better_than_log_fbp():
    from learn2invert import metrics
    from learn2invert.data import shepp_logan
    from learn2invert.operators import BeerLambertCT, add_poisson_noise
    from learn2invert.solvers.classical import nonlinear_tikhonov

    truth = shepp_logan(32)[None]
    op = BeerLambertCT(32, 20, attenuation=0.1)
    y = add_poisson_noise(op.A(truth), 0.01, torch.Generator().manual_seed(0))
    fit = nonlinear_tikhonov(op, y, 1e-3 * op.norm_squared(), iterations=100)
    assert metrics.psnr(fit, truth) > metrics.psnr(op.A_dagger(y), truth) + 1.0


def test_poisson_noise_has_the_gain_and_spread_of_its_sigma():
    from learn2invert.operators import add_poisson_noise

    clean = torch.full((1, 1, 200, 200), 0.5)
    y = add_poisson_noise(clean, 0.05, torch.Generator().manual_seed(0))
    counts = y / 0.05**2
    assert torch.allclose(counts, counts.round(), atol=1e-3)  # whole photons of gain sigma^2
    assert abs(float(y.mean()) - 0.5) < 0.002 and abs(float(y.std()) - 0.05 * 0.5**0.5) < 0.001
    assert torch.equal(add_poisson_noise(clean, 0.0), clean)  # sigma 0: no noise
