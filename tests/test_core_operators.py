"""Base-class helpers, noise, the likelihood gradient and the finite-difference operator."""
import pytest
import torch

from learn2invert.operators.base import LinearOperator, adjoint_mismatch, check_tensor
from learn2invert.operators.gradient import FiniteDifference
from learn2invert.operators.likelihood import likelihood_gradient
from learn2invert.operators.noise import add_gaussian_noise, quantize


class MatrixOperator(LinearOperator):
    """y = M vec(x) for a dense matrix M; x (B, 1, h, w)."""

    def __init__(self, matrix, image_shape):
        super().__init__()
        self.register_buffer("matrix", matrix)
        self.image_shape = image_shape

    def A(self, x):
        return x.flatten(1) @ self.matrix.T

    def A_adjoint(self, y):
        return (y @ self.matrix).reshape(-1, *self.image_shape)


@pytest.mark.parametrize("shape", [(2, 3, 8, 9), (1, 2, 4, 5, 6)])
def test_finite_difference_adjoint_and_constant(shape):
    op = FiniteDifference()
    x = torch.randn(shape, dtype=torch.float64)
    assert adjoint_mismatch(op, x) < 1e-10
    assert op.A(x).shape == (shape[0], shape[1], len(shape) - 2, *shape[2:])
    # A constant image has zero gradient everywhere.
    assert torch.count_nonzero(op.A(torch.ones(shape, dtype=torch.float64))) == 0


def test_adjoint_mismatch_detects_wrong_adjoint():
    matrix = torch.randn(6, 12, dtype=torch.float64)
    good = MatrixOperator(matrix, (1, 3, 4))
    x = torch.randn(2, 1, 3, 4, dtype=torch.float64)
    assert adjoint_mismatch(good, x) < 1e-12
    bad = MatrixOperator(matrix, (1, 3, 4))
    bad.A_adjoint = lambda y: 1.01 * (y @ matrix).reshape(-1, 1, 3, 4)
    assert adjoint_mismatch(bad, x) > 1e-4


def test_likelihood_gradient_matches_autograd():
    matrix = torch.randn(6, 12, dtype=torch.float64)
    op = MatrixOperator(matrix, (1, 3, 4))
    x = torch.randn(2, 1, 3, 4, dtype=torch.float64, requires_grad=True)
    y = torch.randn(2, 6, dtype=torch.float64)
    sigma = 0.3
    log_lik = -0.5 * ((y - op.A(x)) ** 2).sum() / sigma**2
    (expected,) = torch.autograd.grad(log_lik, x)
    assert torch.allclose(likelihood_gradient(op, x.detach(), y, sigma), expected, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="sigma"):
        likelihood_gradient(op, x.detach(), y, 0.0)


def test_noise_level_and_quantisation():
    g = torch.Generator().manual_seed(1)
    y = torch.zeros(4, 1, 64, 64)
    noisy = add_gaussian_noise(y, 0.1, generator=g)
    assert abs(noisy.std().item() - 0.1) < 0.005
    per_sample = add_gaussian_noise(y, torch.tensor([0.0, 0.1, 0.2, 0.4]).view(4, 1, 1, 1))
    assert per_sample[0].abs().max() == 0
    assert abs(per_sample[3].std().item() - 0.4) < 0.02
    with pytest.raises(ValueError, match="sigma"):
        add_gaussian_noise(y, -1.0)
    q = quantize(torch.tensor([-0.2, 0.0, 0.5, 0.999, 1.3]))
    assert torch.allclose(q * 255, torch.round(q * 255))
    assert q[0] == 0 and q[-1] == 1 and abs(q[2].item() - 128 / 255) < 1e-7


def test_check_tensor_messages():
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        check_tensor(torch.zeros(2, 3, 4), "x", "(B, 2, H, W)")
    with pytest.raises(ValueError, match="complex"):
        check_tensor(torch.zeros(1, 2, 4, 4, dtype=torch.complex64), "x", "(B, 2, H, W)")
    with pytest.raises(ValueError, match="2 channel"):
        check_tensor(torch.zeros(1, 3, 4, 4), "x", "(B, 2, H, W)", channels=2)
    with pytest.raises(ValueError, match="floating"):
        check_tensor(torch.zeros(1, 2, 4, 4, dtype=torch.int64), "x", "(B, 2, H, W)")
