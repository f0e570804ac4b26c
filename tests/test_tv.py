"""Total-variation reconstruction: optimality, agreement with scikit-image, gains over A^T y, errors."""
import math

import numpy as np
import pytest
import torch
from skimage.restoration import denoise_tv_chambolle

from learn2invert.data.phantoms import shepp_logan
from learn2invert.metrics import psnr
from learn2invert.operators import Denoising, LinearOperator, SingleCoilMRI, complex_abs, masks
from learn2invert.solvers.tv import choose_tv_weight, total_variation, tv_objective, tv_prox, tv_reconstruct


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: intra-op threads only add synchronisation cost on a shared 2-core machine
    (a 24x24 FFT loop ran 8x slower with two threads there)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


class _Matrix(LinearOperator):
    """y = M vec(x) for a dense matrix M, images (B, 1, h, w): a generic operator with ||A|| != 1."""

    def __init__(self, matrix: torch.Tensor, image_shape: tuple[int, ...]):
        super().__init__()
        self.register_buffer("matrix", matrix)
        self.image_shape = image_shape

    def A(self, x):  # noqa: N802
        return x.flatten(1) @ self.matrix.T

    def A_adjoint(self, y):  # noqa: N802
        return (y @ self.matrix).reshape(-1, *self.image_shape)


def _phantom(size: int = 32) -> torch.Tensor:
    return shepp_logan(size).double()[None]  # (1, 1, size, size) in [0, 1]


def _noisy(x: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return x + sigma * torch.randn(x.shape, generator=g, dtype=x.dtype)


def _skimage_tv(image: torch.Tensor, weight: float) -> torch.Tensor:
    """scikit-image's ROF solution of one grey (H, W) image, run to tight convergence."""
    out = denoise_tv_chambolle(image.numpy(), weight=weight, eps=1e-12, max_num_iter=5000)
    return torch.from_numpy(np.ascontiguousarray(out))


def _mri_problem(acceleration: int = 4, size: int = 32, noise: float = 0.01):
    """A complex phantom (smooth phase), its 4x undersampled k-space and the operator."""
    magnitude = _phantom(size)[:, 0]
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size, dtype=torch.float64),
                            torch.linspace(-1, 1, size, dtype=torch.float64), indexing="ij")
    phase = 0.5 * (xx + 0.5 * yy)
    x = torch.stack([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=1)  # (1, 2, H, W)
    mask = masks.random_mask((size,), acceleration, 0.08, seed=0)
    op = SingleCoilMRI(mask)
    g = torch.Generator().manual_seed(1)
    y = op.A(x + noise * torch.randn(x.shape, generator=g, dtype=x.dtype))
    return x, y, op


# ------------------------------------------------------------------------------- optimisation
def test_objective_is_monotone_and_decreases_mri():
    x_true, y, op = _mri_problem(size=24)
    x, history = tv_reconstruct(op, y, 0.01, iterations=60, tolerance=0, return_history=True)
    assert history.shape == (61, 1)
    assert torch.all(history[1:] <= history[:-1])  # monotone FISTA never goes up
    assert history[-1, 0] < 0.85 * history[0, 0]
    # The returned image is the one whose objective was recorded last.
    assert torch.allclose(tv_objective(op, x, y, 0.01), history[-1], rtol=1e-10)
    # The last iterations barely move: converged to a relative 1e-4 in objective.
    assert (history[-10, 0] - history[-1, 0]) / history[-1, 0] < 1e-4


def test_tolerance_stops_early_and_result_is_close_to_long_run():
    x_true, y, op = _mri_problem(size=24)
    x_long = tv_reconstruct(op, y, 0.03, iterations=150, tolerance=0)
    x, history = tv_reconstruct(op, y, 0.03, iterations=150, tolerance=1e-4, return_history=True)
    assert history.shape[0] < 151
    assert float((x - x_long).abs().max()) < 2e-3


# ------------------------------------------------------------------------ agreement with skimage
@pytest.mark.parametrize("lam", [0.03, 0.1])
def test_denoising_matches_skimage_rof(lam):
    # skimage's denoise_tv_chambolle minimises TV(u) + ||u - f||^2 / (2 weight), i.e. our
    # 0.5 ||u - f||^2 + lam TV(u) with weight = lam, same forward differences and Neumann boundary.
    clean = _phantom()
    noisy = _noisy(clean, 0.1)
    reference = _skimage_tv(noisy[0, 0], lam)
    x = tv_reconstruct(Denoising(), noisy, lam, iterations=100, tolerance=0)
    # Measured: max |difference| 8e-8 (lam 0.03) and 3e-4 (lam 0.1) on a [0, 1] image.
    assert float((x[0, 0] - reference).abs().max()) < 1e-3
    # Same objective value as at skimage's solution (measured relative gap <= 1.5e-5).
    ours = tv_objective(Denoising(), x, noisy, lam)
    theirs = tv_objective(Denoising(), reference[None, None], noisy, lam)
    assert abs(float(ours) - float(theirs)) <= 5e-5 * float(theirs)


def test_tv_prox_matches_skimage_and_warm_start_shape():
    noisy = _noisy(_phantom(24), 0.1, seed=3)
    x, dual = tv_prox(noisy, 0.05, iterations=150, return_dual=True)
    assert dual.shape == (1, 1, 2, 24, 24)
    assert float(dual.pow(2).sum(dim=(1, 2)).sqrt().max()) <= 1 + 1e-12
    assert float((x[0, 0] - _skimage_tv(noisy[0, 0], 0.05)).abs().max()) < 1e-4


def test_generic_operator_fixed_point_with_skimage_prox():
    # For any A, the minimiser is a fixed point of x = prox_{lam/L TV}(x - A^T(A x - y) / L);
    # skimage's ROF solver provides an independent prox.
    g = torch.Generator().manual_seed(0)
    h = w = 10
    matrix = torch.randn(60, h * w, generator=g, dtype=torch.float64) / 8
    op = _Matrix(matrix, (1, h, w))
    truth = _phantom(h)
    y = op.A(truth) + 0.02 * torch.randn(1, 60, generator=g, dtype=torch.float64)
    lam = 0.05
    x, history = tv_reconstruct(op, y, lam, iterations=150, tolerance=0, return_history=True)
    assert torch.all(history[1:] <= history[:-1])
    lip = float(torch.linalg.matrix_norm(matrix, ord=2) ** 2)
    step = x - op.A_adjoint(op.A(x) - y) / lip
    fixed = _skimage_tv(step[0, 0], lam / lip)
    assert float((x[0, 0] - fixed).abs().max()) < 1e-4  # measured 1e-5 (the precision of the reference)
    # Reaches at least the objective of skimage-prox ISTA from the same start.
    assert float(history[-1, 0]) <= float(tv_objective(op, fixed[None, None], y, lam)) * (1 + 1e-6)


# ------------------------------------------------------------------------------- image quality
def test_tv_beats_noisy_input_for_denoising():
    clean = _phantom()
    noisy = _noisy(clean, 0.1)
    x = tv_reconstruct(Denoising(), noisy, 0.1, iterations=50)
    gain = psnr(x, clean) - psnr(noisy, clean)
    assert gain > 3.5  # measured: 21.67 dB vs 17.05 dB


def test_tv_beats_zero_filled_for_4x_mri():
    x_true, y, op = _mri_problem()
    zero_filled = op.A_adjoint(y)
    x = tv_reconstruct(op, y, 0.01, iterations=100)
    gain = psnr(complex_abs(x), complex_abs(x_true)) - psnr(complex_abs(zero_filled), complex_abs(x_true))
    assert gain > 1.5  # measured: 20.06 dB vs 18.09 dB (zero-filled)


# ------------------------------------------------------------------------- channels, batch, 3D
def test_complex_channels_are_regularised_jointly():
    # Joint isotropic TV is invariant to a global phase: rotating (real, imag) of the data rotates
    # the solution. Channel-separate TV would not be.
    clean = _phantom(16)
    data = torch.cat([_noisy(clean, 0.1, seed=1), _noisy(0.5 * clean, 0.1, seed=2)], dim=1)
    angle = 0.7
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float64)
    rotated = torch.einsum("ij,bjhw->bihw", rot, data)
    # Every step of the solver commutes with the rotation, so this holds at any iteration count.
    x = tv_reconstruct(Denoising(), data, 0.1, iterations=20, tolerance=0)
    x_rot = tv_reconstruct(Denoising(), rotated, 0.1, iterations=20, tolerance=0)
    assert torch.allclose(torch.einsum("ij,bjhw->bihw", rot, x), x_rot, atol=1e-10)
    assert not torch.allclose(x, data, atol=1e-3)  # TV did act
    # A zero second channel reduces to grey TV.
    grey = tv_reconstruct(Denoising(), data[:, :1], 0.1, iterations=20, tolerance=0)
    padded = tv_reconstruct(Denoising(), torch.cat([data[:, :1], torch.zeros_like(data[:, :1])], 1), 0.1,
                            iterations=20, tolerance=0)
    assert torch.allclose(padded[:, :1], grey, atol=1e-10) and torch.count_nonzero(padded[:, 1]) == 0


def test_per_sample_weights_and_batched_mri_masks():
    size = 16
    clean = torch.cat([_phantom(size), 0.5 * _phantom(size).flip(-1)])  # (2, 1, H, W)
    x_true = torch.cat([clean, torch.zeros_like(clean)], dim=1)  # real-valued complex images
    mask = torch.stack([masks.equispaced_mask((size,), 4, 0.125, seed=s).reshape(1, 1, size).expand(1, size, size)
                        for s in (0, 1)])  # (B, 1, H, W): per-sample physics
    op = SingleCoilMRI(mask)
    y = op.A(x_true)
    lam = torch.tensor([0.01, 0.05], dtype=torch.float64)
    batched = tv_reconstruct(op, y, lam, iterations=20, tolerance=0)
    for b in range(2):
        single = tv_reconstruct(SingleCoilMRI(mask[b]), y[b:b + 1], float(lam[b]), iterations=20, tolerance=0)
        assert torch.allclose(batched[b:b + 1], single, atol=1e-8)


def test_3d_volume_runs_and_decreases():
    g = torch.Generator().manual_seed(0)
    volume = torch.zeros(1, 1, 6, 12, 12, dtype=torch.float64)
    volume[:, :, 1:5, 3:9, 3:9] = 1.0
    noisy = volume + 0.2 * torch.randn(volume.shape, generator=g, dtype=torch.float64)
    x, history = tv_reconstruct(Denoising(), noisy, 0.15, iterations=30, tolerance=0, return_history=True)
    assert x.shape == volume.shape
    assert torch.all(history[1:] <= history[:-1]) and history[-1, 0] < history[0, 0]
    assert psnr(x, volume) > psnr(noisy, volume) + 3
    assert total_variation(x).shape == (1,)


def test_lam_zero_returns_least_squares_for_denoising():
    noisy = _noisy(_phantom(8), 0.1)
    assert torch.allclose(tv_reconstruct(Denoising(), noisy, 0.0, iterations=5), noisy)


# -------------------------------------------------------------------------------- weight choice
def test_choose_tv_weight_picks_interior_value_on_validation_set():
    clean = torch.cat([_phantom(16), _phantom(16).flip(-1)])
    validation = [(_noisy(clean, 0.1, seed=5), Denoising(), clean)]
    grid = [1e-3, 3e-2, 1e-1, 1.0]
    best, scores = choose_tv_weight(validation, grid=grid, iterations=30)
    assert set(scores) == set(grid)
    assert best in (3e-2, 1e-1)
    assert scores[best] == max(scores.values()) and scores[best] > scores[1e-3] + 1
    with pytest.raises(ValueError, match="validation"):
        choose_tv_weight([], grid=grid)
    with pytest.raises(ValueError, match="grid"):
        choose_tv_weight(validation, grid=[0.1, -1.0])


def test_choose_tv_weight_default_grid_is_log_spaced_on_target_peak():
    clean = _phantom(8)
    best, scores = choose_tv_weight([(_noisy(clean, 0.1), Denoising(), clean)], iterations=5)
    values = sorted(scores)
    peak = float(clean.max())
    assert len(values) == 13 and math.isclose(values[0], 1e-4 * peak) and math.isclose(values[-1], peak)
    assert best in scores


# ------------------------------------------------------------------------------------- errors
def test_bad_inputs_raise_value_error():
    noisy = _noisy(_phantom(8), 0.1)
    op = Denoising()
    with pytest.raises(ValueError, match="lam"):
        tv_reconstruct(op, noisy, -0.1)
    with pytest.raises(ValueError, match="lam"):
        tv_reconstruct(op, noisy, torch.tensor([0.1, 0.2]))  # batch of 1
    with pytest.raises(ValueError, match="lam"):
        tv_reconstruct(op, noisy, float("nan"))
    with pytest.raises(ValueError, match="x0"):
        tv_reconstruct(op, noisy, 0.1, x0=torch.zeros(1, 1, 8, 7, dtype=torch.float64))
    with pytest.raises(ValueError, match="spatial dims"):
        tv_reconstruct(op, noisy[:, :, 0], 0.1)  # (B, C, W): no image
    with pytest.raises(ValueError):
        _, _, mri = _mri_problem(size=16)
        tv_reconstruct(mri, torch.zeros(1, 2, 16, 15, dtype=torch.float64), 0.1)  # k-space of the wrong size
    with pytest.raises(ValueError, match="iterations"):
        tv_reconstruct(op, noisy, 0.1, iterations=0)
    with pytest.raises(ValueError, match="y has shape"):
        tv_objective(op, noisy, noisy[:, :, :4], 0.1)
