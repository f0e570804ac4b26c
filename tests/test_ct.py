"""Tests of the 2D parallel-beam CT operator (Joseph projector, exact adjoint, FBP)."""
import math

import numpy as np
import pytest
import torch

from learn2invert.operators.base import adjoint_mismatch
from learn2invert.operators.ct import ParallelBeamCT, default_n_detectors


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float, atol: float) -> None:
    # torch.testing.assert_close costs about a second of lazy imports on first use.
    assert actual.shape == expected.shape
    err = (actual - expected).abs().max().item()
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), f"max abs error {err:.3e}"


def _disk(n: int, radius: float, supersample: int = 8) -> np.ndarray:
    """Centred disk of value 1 with each pixel set to its covered area (supersampled), (N, N)."""
    offsets = (np.arange(supersample) + 0.5) / supersample - 0.5
    fine = ((np.arange(n) - (n - 1) / 2)[:, None] + offsets[None, :]).ravel()
    inside = fine[:, None] ** 2 + fine[None, :] ** 2 <= radius**2
    return inside.reshape(n, supersample, n, supersample).mean(axis=(1, 3))


def _phantom(n: int) -> np.ndarray:
    from skimage.data import shepp_logan_phantom
    from skimage.transform import resize

    return resize(shepp_logan_phantom(), (n, n), anti_aliasing=True)


@pytest.mark.parametrize("size, n_angles, n_detectors", [(24, 17, None), (25, 10, 25), (16, 7, 40), (15, 12, 9)])
def test_adjoint_dot_product_float64(size, n_angles, n_detectors):
    op = ParallelBeamCT(size, n_angles, n_detectors).double()
    x = torch.randn(2, 3, size, size, dtype=torch.float64)
    assert adjoint_mismatch(op, x, torch.Generator().manual_seed(1)) < 1e-10


def test_stored_transpose_is_exactly_the_transpose():
    op = ParallelBeamCT(12, 9)
    dense = op.matrix.to_dense()
    assert torch.equal(op.matrix_t.to_dense(), dense.t())
    # Joseph weights: two neighbours per step, each at most the step length sqrt(2).
    assert dense.min() >= 0 and dense.max() <= math.sqrt(2) + 1e-6
    with torch.sparse.check_sparse_tensor_invariants():
        for m in (op.matrix, op.matrix_t):
            torch.sparse_csr_tensor(m.crow_indices(), m.col_indices(), m.values(), m.shape)


def test_default_detectors_cover_diagonal_with_parity_of_image():
    assert [default_n_detectors(n) for n in (64, 65, 128, 1)] == [92, 93, 182, 3]
    for n in (7, 64, 65, 128):
        d = default_n_detectors(n)
        assert d >= math.sqrt(2) * n and (d - n) % 2 == 0
    assert ParallelBeamCT(20, 5).n_detectors == default_n_detectors(20)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shapes_dtypes_and_batching(dtype):
    op = ParallelBeamCT(20, 11).to(dtype)
    assert op.matrix.dtype == dtype and op.matrix_t.dtype == dtype
    x = torch.rand(2, 3, 20, 20, dtype=dtype)
    y = op.A(x)
    assert y.shape == (2, 3, 11, op.n_detectors) and y.dtype == dtype
    back = op.A_adjoint(y)
    assert back.shape == x.shape and back.dtype == dtype
    assert op.fbp(y).shape == x.shape and op.fbp(y).dtype == dtype
    assert torch.equal(op(x), y)
    # Every image in the batch is projected on its own.
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    _assert_close(y[1, 2], op.A(x[1:2, 2:3])[0, 0], rtol=tol, atol=tol)
    _assert_close(op.A_adjoint_A(x), back, rtol=tol, atol=tol)


def test_other_input_dtype_is_cast_and_cache_follows_module():
    op = ParallelBeamCT(16, 8)  # float32 buffers
    x64 = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    y64 = op.A(x64)
    assert y64.dtype == torch.float64
    _assert_close(y64.float(), op.A(x64.float()), rtol=1e-5, atol=1e-5)
    assert torch.float64 in op._cast_cache
    op.double()
    assert op._cast_cache == {} and op.matrix.dtype == torch.float64
    assert op.state_dict() == {}  # rebuilt from the arguments, never saved


def test_zero_and_ninety_degrees_are_exact_column_and_row_sums():
    # Default detectors share the parity of N, so bins fall on pixel centres at 0 and 90 degrees.
    op = ParallelBeamCT(16, 4).double()
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    y = op.A(x)[0, 0]
    pad = (op.n_detectors - 16) // 2
    _assert_close(y[0, pad:pad + 16], x[0, 0].sum(0), rtol=1e-12, atol=1e-12)
    # theta = pi/2: t = -Y, so bins run from the bottom row to the top row.
    _assert_close(y[2, pad:pad + 16], x[0, 0].sum(1).flip(0), rtol=1e-12, atol=1e-12)
    assert y[0, :pad].abs().max() == 0 and y[0, pad + 16:].abs().max() == 0


@pytest.mark.parametrize("radius", [20.0, 28.0])
def test_disk_projection_matches_analytic_chord(radius):
    n = 64
    op = ParallelBeamCT(n, 30).double()
    y = op.A(torch.from_numpy(_disk(n, radius))[None, None])[0, 0].numpy()
    t = np.arange(op.n_detectors) - (op.n_detectors - 1) / 2
    chord = 2 * np.sqrt(np.clip(radius**2 - t**2, 0, None))
    err = y - chord[None, :]
    # Projected mass is the disk area at every angle (pixel areas are exact; Joseph only
    # redistributes them): measured within 5e-4.
    np.testing.assert_allclose(y.sum(axis=1), math.pi * radius**2, rtol=2e-3)
    # Away from the rim each chord end is off by the interpolation of one partial boundary
    # pixel, a fraction of a pixel: measured <= 0.50 px; near |t| = r the chord has infinite
    # slope, so only the relative L2 error is bounded there (measured 0.84% / 0.60%).
    inner = np.abs(t) <= radius - 2
    assert np.abs(err[:, inner]).max() < 0.75
    assert np.linalg.norm(err) / np.linalg.norm(np.broadcast_to(chord, y.shape)) < 0.015


def test_sinogram_agrees_with_skimage_radon():
    from skimage.transform import radon

    # skimage rotates about pixel N // 2 and, with circle=True, returns N bins centred there; for
    # odd N that is our geometric centre, so ParallelBeamCT(N, K, n_detectors=N) is the same
    # geometry. Both interpolate linearly (skimage bilinearly on a rotated grid sampled every
    # pixel along the ray, we linearly between the two pixels at each row/column crossing), so they
    # differ at the interpolation level: measured relative L2 difference 0.55%.
    n, k = 65, 45
    image = _phantom(n)
    rows, cols = np.mgrid[:n, :n]
    image[(rows - n // 2) ** 2 + (cols - n // 2) ** 2 > (n // 2) ** 2] = 0  # radon's circle support
    ours = ParallelBeamCT(n, k, n_detectors=n).double().A(torch.from_numpy(image)[None, None])[0, 0].numpy()
    reference = radon(image, theta=np.arange(k) * 180.0 / k, circle=True).T
    assert np.linalg.norm(ours - reference) / np.linalg.norm(reference) < 0.01
    # An orientation error (flipped angle or detector axis) would give tens of percent.
    flipped = np.linalg.norm(ours[:, ::-1] - reference) / np.linalg.norm(reference)
    assert flipped > 0.1


def _psnr(estimate: np.ndarray, target: np.ndarray) -> float:
    return float(10 * np.log10(target.max() ** 2 / np.mean((estimate - target) ** 2)))


def test_fbp_reconstructs_shepp_logan():
    image = _phantom(64)
    op = ParallelBeamCT(64, 90).double()
    y = op.A(torch.from_numpy(image)[None, None])
    recon = {name: op.fbp(y, name)[0, 0].numpy() for name in ("ramp", "shepp-logan", "hann")}
    # Measured PSNR (data range = max of the target): ramp 29.15 dB, shepp-logan 27.64 dB,
    # hann 23.44 dB (the smoother windows trade resolution for noise, and this sinogram is clean).
    assert _psnr(recon["ramp"], image) > 27.5
    assert _psnr(recon["shepp-logan"], image) > 26.0
    assert _psnr(recon["hann"], image) > 22.0
    # Intensity scale: mean over the object within 3% (measured ratio 0.981, the deficit being
    # edge blur of the linear interpolation).
    support = image > 0.05
    assert recon["ramp"][support].mean() / image[support].mean() == pytest.approx(1.0, abs=0.03)


def test_fbp_of_large_disk_is_flat_inside():
    op = ParallelBeamCT(48, 60).double()
    disk = _disk(48, 18.0)
    recon = op.fbp(op.A(torch.from_numpy(disk)[None, None]))[0, 0].numpy()
    inside = _disk(48, 14.0) == 1
    assert abs(recon[inside].mean() - 1) < 0.02 and recon[inside].std() < 0.03


def test_gradients_use_exact_adjoint_and_are_twice_differentiable():
    op = ParallelBeamCT(5, 3).double()
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(1, 1, 3, op.n_detectors, dtype=torch.float64)
    (grad,) = torch.autograd.grad((op.A(x) * w).sum(), x, create_graph=True)
    _assert_close(grad, op.A_adjoint(w), rtol=1e-12, atol=1e-12)
    y = w.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(op.A, (x,), fast_mode=True)
    assert torch.autograd.gradcheck(op.A_adjoint, (y,), fast_mode=True)
    assert torch.autograd.gradgradcheck(op.A_adjoint_A, (x,), fast_mode=True)


def test_bad_inputs_raise_value_error():
    op = ParallelBeamCT(16, 8)
    d = op.n_detectors
    bad_images = [
        torch.rand(16, 16),  # rank 2
        torch.rand(1, 16, 16),  # rank 3
        torch.rand(1, 1, 15, 16),  # wrong size
        torch.rand(1, 1, 18, 18),
        torch.rand(1, 1, 16, 16, dtype=torch.complex64),
        torch.ones(1, 1, 16, 16, dtype=torch.int64),
    ]
    for x in bad_images:
        with pytest.raises(ValueError):
            op.A(x)
    bad_sinograms = [torch.rand(8, d), torch.rand(1, 1, 9, d), torch.rand(1, 1, 8, d + 1),
                     torch.rand(1, 1, 8, d, dtype=torch.complex64)]
    for y in bad_sinograms:
        with pytest.raises(ValueError):
            op.A_adjoint(y)
        with pytest.raises(ValueError):
            op.fbp(y)
    with pytest.raises(ValueError, match="unknown FBP filter"):
        op.fbp(torch.rand(1, 1, 8, d), filter="butterworth")
    for args in [(0, 8), (16, 0), (16.0, 8), (16, 8, 0), (True, 8)]:
        with pytest.raises(ValueError):
            ParallelBeamCT(*args)
