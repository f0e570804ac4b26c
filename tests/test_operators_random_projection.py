"""RandomProjection: Gaussian, Bernoulli and Fourier ensembles on flattened images."""
import numpy as np
import pytest
import torch

from learn2invert.operators.base import adjoint_mismatch
from learn2invert.operators.random_projection import RandomProjection

KINDS = ["gaussian", "bernoulli", "fourier"]


@pytest.mark.parametrize("kind", KINDS)
def test_adjoint(kind):
    op = RandomProjection(40, 3 * 8 * 6, kind=kind, seed=3, image_shape=(3, 8, 6)).double()
    x = torch.randn(4, 3, 8, 6, dtype=torch.float64)
    assert adjoint_mismatch(op, x) < 1e-10


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_and_dtypes(kind, dtype):
    op = RandomProjection(10, 64, kind=kind, seed=0).to(dtype)
    x = torch.randn(3, 1, 8, 8, dtype=dtype)
    y = op.A(x)
    assert y.shape == ((3, 2, 10) if kind == "fourier" else (3, 10)) and y.dtype == dtype
    back = op.A_adjoint(y)
    assert back.shape == x.shape and back.dtype == dtype


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_matrix(kind):
    x = torch.randn(2, 1, 4, 4)
    a, b = RandomProjection(8, 16, kind, seed=11), RandomProjection(8, 16, kind, seed=11)
    assert torch.equal(a.A(x), b.A(x))
    assert not torch.equal(a.A(x), RandomProjection(8, 16, kind, seed=12).A(x))
    torch.manual_seed(5)
    c = RandomProjection(8, 16, kind)
    torch.manual_seed(5)
    d = RandomProjection(8, 16, kind)
    assert c.seed == d.seed and torch.equal(c.A(x), d.A(x))


def test_gaussian_and_bernoulli_entries():
    gaussian = RandomProjection(64, 256, "gaussian", seed=0).matrix
    # 16384 entries: the standard error of the mean is 1/128, so 0.04 is about 5 of them.
    assert abs(gaussian.mean().item()) < 0.04 and abs(gaussian.std().item() - 1) < 0.04
    bernoulli = RandomProjection(64, 256, "bernoulli", seed=0).matrix
    assert set(bernoulli.unique().tolist()) == {-1.0, 1.0}
    assert abs(bernoulli.mean().item()) < 0.04
    # The matrix is state (it is saved) and follows the module's dtype.
    op = RandomProjection(4, 16, "gaussian", seed=0)
    assert "matrix" in op.state_dict() and op.double().matrix.dtype == torch.float64


def test_fourier_matches_explicit_dft_rows():
    n, m = 36, 12
    op = RandomProjection(m, n, "fourier", seed=2, image_shape=(1, 6, 6)).double()
    rows = op.rows.numpy()
    assert len(np.unique(rows)) == m and np.all(np.diff(rows) > 0) and rows.max() < n
    dft = np.exp(-2j * np.pi * np.outer(np.arange(n), np.arange(n)) / n) / np.sqrt(n)
    picked = dft[rows]
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64)
    z = picked @ x.reshape(2, n).numpy().T
    y = op.A(x)
    np.testing.assert_allclose(y[:, 0].numpy(), z.real.T, atol=1e-13)
    np.testing.assert_allclose(y[:, 1].numpy(), z.imag.T, atol=1e-13)
    yc = (y[:, 0] + 1j * y[:, 1]).numpy()
    expected_adjoint = (picked.conj().T @ yc.T).real.T.reshape(2, 1, 6, 6)
    np.testing.assert_allclose(op.A_adjoint(y).numpy(), expected_adjoint, atol=1e-13)
    # All n rows make A a real isometry onto (Re, Im): A^T A = I.
    full = RandomProjection(n, n, "fourier", seed=0, image_shape=(1, 6, 6)).double()
    np.testing.assert_allclose(full.A_adjoint_A(x).numpy(), x.numpy(), rtol=0, atol=1e-13)


def test_default_image_shape_and_reduction():
    assert RandomProjection(4, 1024, seed=0).image_shape == (1, 32, 32)
    assert RandomProjection(4, 12, seed=0).image_shape == (1, 1, 12)
    op = RandomProjection.from_reduction(4, (1, 8, 8), kind="bernoulli", seed=0)
    assert (op.m, op.n, op.reduction, op.image_shape) == (16, 64, 4.0, (1, 8, 8))


def test_rejects_bad_arguments_and_input():
    with pytest.raises(ValueError, match="m <= n"):
        RandomProjection(20, 16, "fourier")
    with pytest.raises(ValueError, match="kind must be one of"):
        RandomProjection(4, 16, "hadamard")
    with pytest.raises(ValueError, match=r"C \* H \* W == n = 16"):
        RandomProjection(4, 16, image_shape=(1, 3, 5))
    with pytest.raises(ValueError, match="m must be a positive integer"):
        RandomProjection(0, 16)
    with pytest.raises(ValueError, match="reduction must be >= 1"):
        RandomProjection.from_reduction(0.5, (1, 4, 4))
    op = RandomProjection(4, 16, seed=0)
    with pytest.raises(ValueError, match=r"\(B, 1, 4, 4\)"):
        op.A(torch.randn(2, 16))
    with pytest.raises(ValueError, match=r"\(B, 1, 4, 4\)"):
        op.A(torch.randn(2, 1, 2, 8))
    with pytest.raises(ValueError, match="complex"):
        op.A(torch.randn(2, 1, 4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"\(B, 4\)"):
        op.A_adjoint(torch.randn(2, 5))
    fourier = RandomProjection(4, 16, "fourier", seed=0)
    with pytest.raises(ValueError, match=r"\(B, 2, 4\)"):
        fourier.A_adjoint(torch.randn(2, 4))


@pytest.mark.parametrize("kind", KINDS)
def test_normalize_adjoint_and_scale(kind):
    m, n = 40, 3 * 8 * 6
    raw = RandomProjection(m, n, kind=kind, seed=3, image_shape=(3, 8, 6)).double()
    op = RandomProjection(m, n, kind=kind, seed=3, image_shape=(3, 8, 6), normalize=True).double()
    x = torch.randn(4, 3, 8, 6, dtype=torch.float64)
    assert adjoint_mismatch(op, x) < 1e-10
    # The same seed draws the same matrix up to the documented factor: entries of mean square 1/m.
    expected = (n / m) ** 0.5 if kind == "fourier" else m ** -0.5
    assert op.scale == pytest.approx(expected) and raw.scale == 1.0 and op.normalize and not raw.normalize
    # The dense matrices are stored in float32 (the default dtype) after scaling: float32 rounding.
    torch.testing.assert_close(op.A(x), expected * raw.A(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(op.A_adjoint(op.A(x)), expected**2 * raw.A_adjoint(raw.A(x)), rtol=1e-6, atol=1e-6)
    assert "normalize=True" in repr(op)


@pytest.mark.parametrize("kind", KINDS)
def test_normalize_gives_unit_norm_columns(kind):
    # E[A^T A] = I: the columns (images of the unit vectors) have unit norm, exactly for fourier,
    # within sampling error (relative std sqrt(2 / m) per column) for the dense kinds.
    m, n = 256, 1024
    op = RandomProjection(m, n, kind=kind, seed=0, normalize=True).double()
    basis = torch.eye(n, dtype=torch.float64).reshape(n, 1, 32, 32)
    norms2 = op.A(basis).reshape(n, -1).pow(2).sum(dim=1)
    if kind == "fourier":
        # Re/Im of a unit vector's spectrum: |F_kj|^2 = 1/n on each of the m rows, times n/m.
        torch.testing.assert_close(norms2, torch.ones(n, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    else:
        assert abs(norms2.mean().item() - 1) < 0.02 and norms2.std().item() < 0.15
    # ||A x|| ~ ||x|| (for fourier only for spectrally flat x, hence white noise here). x has its
    # own generator: drawn from the global one (seeded 0 in conftest) it would repeat A's rows.
    x = torch.randn(8, 1, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(123))
    ratio = op.A(x).reshape(8, -1).norm(dim=1) / x.reshape(8, -1).norm(dim=1)
    assert torch.all((ratio > 0.8) & (ratio < 1.2))


def test_normalize_rejects_non_bool_and_from_reduction_passes_it():
    with pytest.raises(ValueError, match="normalize must be True or False"):
        RandomProjection(4, 16, normalize=1)
    op = RandomProjection.from_reduction(2, (1, 8, 8), seed=0, normalize=True)
    assert op.normalize and op.m == 32
    torch.testing.assert_close(op.matrix, RandomProjection(32, 64, seed=0).matrix / 32**0.5)
