"""Denoising, Gaussian blur and inpainting operators: adjoints, shapes, references, errors.

Comparisons are plain tensor/NumPy checks, not torch.testing.assert_close: its first call imports
torch.distributed, which costs about a second.
"""
import numpy as np
import pytest
import scipy.ndimage
import torch

from learn2invert.operators.base import adjoint_mismatch
from learn2invert.operators.blur import GaussianBlur, gaussian_kernel
from learn2invert.operators.denoising import Denoising
from learn2invert.operators.inpainting import Inpainting, centered_hole_mask
from learn2invert.operators.random_projection import RandomProjection
from learn2invert.operators.superres import SuperResolution

DTYPES = [torch.float32, torch.float64]


# ---------------------------------------------------------------- denoising


def test_denoising_is_identity_with_exact_adjoint():
    op = Denoising()
    x = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    assert torch.equal(op.A(x), x) and torch.equal(op.A_adjoint(x), x) and torch.equal(op.A_adjoint_A(x), x)
    assert adjoint_mismatch(op, x) < 1e-10
    volume = torch.randn(1, 2, 3, 4, 5)
    assert op(volume).shape == volume.shape


def test_denoising_rejects_bad_input():
    op = Denoising()
    with pytest.raises(ValueError, match=r"\(B, C, \.\.\.\)"):
        op.A(torch.randn(5))
    with pytest.raises(ValueError, match="complex"):
        op.A(torch.randn(1, 1, 4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="floating-point"):
        op.A_adjoint(torch.ones(1, 1, 4, 4, dtype=torch.int64))


# ---------------------------------------------------------------- Gaussian blur


def test_gaussian_kernel_values():
    kernel = gaussian_kernel(7, 1.5)
    assert kernel.shape == (7, 7)
    assert kernel.sum().item() == pytest.approx(1.0, abs=1e-15)
    assert torch.equal(kernel, kernel.flip(0)) and torch.equal(kernel, kernel.T)
    # Neighbouring taps of a sampled Gaussian differ by exp(-(2r + 1) / (2 sigma^2)).
    assert (kernel[3, 4] / kernel[3, 3]).item() == pytest.approx(np.exp(-1 / (2 * 1.5**2)), rel=1e-12)
    assert (kernel[3, 6] / kernel[3, 3]).item() == pytest.approx(np.exp(-9 / (2 * 1.5**2)), rel=1e-12)


@pytest.mark.parametrize("padding", ["circular", "zeros"])
@pytest.mark.parametrize("channels", [1, 3])
def test_blur_adjoint(padding, channels):
    op = GaussianBlur(5, 1.2, padding=padding).double()
    x = torch.randn(2, channels, 9, 7, dtype=torch.float64)
    assert adjoint_mismatch(op, x) < 1e-10


@pytest.mark.parametrize("padding, scipy_mode", [("circular", "wrap"), ("zeros", "constant")])
def test_blur_matches_scipy(padding, scipy_mode):
    op = GaussianBlur(5, 1.0, padding=padding).double()
    x = torch.randn(2, 3, 8, 10, dtype=torch.float64)
    kernel = gaussian_kernel(5, 1.0).numpy()
    planes = x.numpy().reshape(6, 8, 10)
    expected = np.stack([scipy.ndimage.correlate(p, kernel, mode=scipy_mode) for p in planes]).reshape(2, 3, 8, 10)
    np.testing.assert_allclose(op.A(x).numpy(), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("dtype", DTYPES)
def test_blur_shapes_dtypes_and_constant_image(dtype):
    op = GaussianBlur(7, 2.0).to(dtype)
    x = torch.full((2, 3, 8, 8), 0.37, dtype=dtype)
    y = op.A(x)
    assert y.shape == x.shape and y.dtype == dtype and op.A_adjoint(y).dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    assert (y - x).abs().max().item() <= tol
    # With zero padding only pixels at least a radius from the border keep the value.
    y_zeros = GaussianBlur(7, 2.0, padding="zeros").to(dtype).A(x)
    assert (y_zeros - x)[..., 3:-3, 3:-3].abs().max().item() <= tol
    assert (y_zeros[..., 0, 0] < 0.37 * 0.75).all()


def test_blur_same_kernel_on_every_channel():
    op = GaussianBlur(5, 1.0)
    grey = torch.randn(2, 1, 8, 8)
    rgb = op.A(grey.expand(2, 3, 8, 8))
    assert torch.equal(rgb, op.A(grey).expand(2, 3, 8, 8))


def test_blur_kernel_is_a_float64_buffer_cast_per_call():
    op = GaussianBlur(3, 1.0)
    assert op.kernel.dtype == torch.float64 and "kernel" not in op.state_dict()
    assert op.A(torch.rand(1, 1, 4, 4)).dtype == torch.float32
    assert op.float().kernel.dtype == torch.float32
    assert op.A(torch.rand(1, 1, 4, 4, dtype=torch.float64)).dtype == torch.float64


def test_blur_rejects_bad_arguments_and_input():
    with pytest.raises(ValueError, match="odd"):
        GaussianBlur(4, 1.0)
    with pytest.raises(ValueError, match="sigma"):
        GaussianBlur(5, 0.0)
    with pytest.raises(ValueError, match="padding"):
        GaussianBlur(5, 1.0, padding="reflect")
    op = GaussianBlur(5, 1.0)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        op.A(torch.randn(8, 8))
    with pytest.raises(ValueError, match="complex"):
        op.A(torch.randn(1, 1, 8, 8, dtype=torch.complex128))
    with pytest.raises(ValueError, match="H and W must be >= 4"):
        GaussianBlur(9, 2.0).A(torch.randn(1, 1, 3, 8))


# ---------------------------------------------------------------- inpainting


def test_centered_hole_mask():
    mask = centered_hole_mask(8, 10, 2)
    assert mask.shape == (8, 10) and mask.dtype == torch.bool
    assert (~mask).sum().item() == 4
    assert not mask[3:5, 4:6].any() and mask[2].all() and mask[5].all()
    # An odd margin puts the hole half a pixel towards the top-left: rows/cols 2..3 of 7.
    odd = centered_hole_mask(7, 7, 2)
    assert torch.nonzero(~odd).tolist() == [[2, 2], [2, 3], [3, 2], [3, 3]]
    assert centered_hole_mask(64, 64, 19).logical_not().sum().item() == 19 * 19
    with pytest.raises(ValueError, match="must not exceed"):
        centered_hole_mask(4, 8, 5)


@pytest.mark.parametrize("mask_shape", [(6, 5), (3, 6, 5), (2, 3, 6, 5), (1, 1, 6, 5)])
def test_inpainting_adjoint_for_every_mask_layout(mask_shape):
    mask = torch.rand(mask_shape) > 0.4
    op = Inpainting(mask)
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    assert adjoint_mismatch(op, x) < 1e-10
    assert torch.equal(op.A_adjoint_A(x), op.A_adjoint(op.A(x)))


@pytest.mark.parametrize("dtype", DTYPES)
def test_inpainting_writes_positive_zero(dtype):
    mask = centered_hole_mask(6, 6, 2)
    op = Inpainting(mask).to(dtype)
    x = -1.0 - torch.rand(2, 3, 6, 6, dtype=dtype)
    for y in (op.A(x), op.A_adjoint(x), op.A_adjoint_A(x)):
        assert y.dtype == dtype and y.shape == x.shape
        missing = y[..., ~mask]
        assert torch.all(missing == 0) and not torch.signbit(missing).any()
        assert torch.equal(y[..., mask], x[..., mask])


def test_inpainting_float_and_numpy_masks_equal_bool_mask():
    bool_mask = torch.rand(6, 6) > 0.5
    x = torch.randn(1, 1, 6, 6)
    expected = Inpainting(bool_mask).A(x)
    assert torch.equal(Inpainting(bool_mask.double()).A(x), expected)
    assert torch.equal(Inpainting(bool_mask.numpy().astype(np.float32)).A(x), expected)
    op = Inpainting(bool_mask.float()).double()
    assert op.mask.dtype == torch.bool and "mask" in op.state_dict()


def test_inpainting_rejects_bad_masks_and_input():
    with pytest.raises(ValueError, match="NaN"):
        Inpainting(torch.tensor([[1.0, float("nan")], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="only 0 and 1"):
        Inpainting(torch.full((4, 4), 0.5))
    with pytest.raises(ValueError, match="complex"):
        Inpainting(torch.ones(4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"\(H, W\), \(C, H, W\) or \(B, C, H, W\)"):
        Inpainting(torch.ones(4, dtype=torch.bool))
    op = Inpainting(torch.ones(3, 6, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, 3, 6, 5\)"):
        op.A(torch.randn(2, 3, 6, 4))
    with pytest.raises(ValueError, match=r"\(B, 3, 6, 5\)"):
        op.A(torch.randn(2, 1, 6, 5))
    with pytest.raises(ValueError, match="complex"):
        op.A_adjoint(torch.randn(2, 3, 6, 5, dtype=torch.complex64))


# ---------------------------------------------------------------- every operator on CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: Denoising(), (2, 3, 8, 8)),
        (lambda: GaussianBlur(5, 1.0), (2, 3, 8, 8)),
        (lambda: GaussianBlur(5, 1.0, padding="zeros"), (2, 3, 8, 8)),
        (lambda: Inpainting(centered_hole_mask(8, 8, 3)), (2, 3, 8, 8)),
        (lambda: SuperResolution(2), (2, 3, 8, 8)),
        (lambda: SuperResolution(4, padding="circular"), (2, 3, 8, 8)),
        (lambda: RandomProjection(50, 192, "gaussian", seed=0, image_shape=(3, 8, 8)), (2, 3, 8, 8)),
        (lambda: RandomProjection(50, 192, "fourier", seed=0, image_shape=(3, 8, 8)), (2, 3, 8, 8)),
    ],
)
def test_operators_on_cuda_match_cpu(make, shape):
    op = make().double()
    x = torch.randn(shape, dtype=torch.float64)
    y = op.A(x)
    op_cuda = op.to("cuda")
    y_cuda = op_cuda.A(x.cuda())
    assert y_cuda.device.type == "cuda"
    np.testing.assert_allclose(y_cuda.cpu().numpy(), y.numpy(), rtol=1e-12, atol=1e-12)
    assert adjoint_mismatch(op_cuda, x.cuda()) < 1e-10
    op_cuda.float()
    assert op_cuda.A(x.float().cuda()).dtype == torch.float32
