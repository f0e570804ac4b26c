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
