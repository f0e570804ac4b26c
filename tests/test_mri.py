"""Centred FFT helpers and the single-coil MRI operator."""
import numpy as np
import pytest
import torch

from learn2invert.operators import SingleCoilMRI, adjoint_mismatch, masks
from learn2invert.operators.fft import (
    complex_abs,
    fft2c,
    fft3c,
    from_complex,
    ifft2c,
    ifft3c,
    to_complex,
)


def _numpy_centred_fft(z: np.ndarray, axes) -> np.ndarray:
    return np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(z, axes=axes), axes=axes, norm="ortho"), axes=axes)


# ---------------------------------------------------------------- FFT helpers


def test_complex_round_trip_and_magnitude():
    x = torch.randn(3, 2, 5, 4, dtype=torch.float64)
    z = to_complex(x)
    assert z.shape == (3, 5, 4) and z.dtype == torch.complex128
    assert torch.equal(from_complex(z), x)
    mag = complex_abs(x)
    assert mag.shape == (3, 1, 5, 4)
    torch.testing.assert_close(mag[:, 0], torch.sqrt(x[:, 0] ** 2 + x[:, 1] ** 2), rtol=0, atol=1e-14)


def test_complex_abs_gradient_is_finite_at_zero():
    x = torch.zeros(1, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    complex_abs(x).sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("shape,fwd,inv,axes", [
    ((2, 2, 8, 6), fft2c, ifft2c, (-2, -1)),
    ((2, 2, 5, 8, 6), fft2c, ifft2c, (-2, -1)),  # 2-D FFT applied slice by slice
    ((2, 2, 5, 8, 6), fft3c, ifft3c, (-3, -2, -1)),
])
def test_centred_fft_matches_numpy_and_is_unitary(shape, fwd, inv, axes):
    x = torch.randn(shape, dtype=torch.float64)
    k = fwd(x)
    expected = _numpy_centred_fft(to_complex(x).numpy(), axes)
    np.testing.assert_allclose(to_complex(k).numpy(), expected, rtol=0, atol=1e-12)
    # Orthonormal: norm preserved, and the inverse is exact.
    assert abs(float(k.norm() / x.norm()) - 1.0) < 1e-13
    torch.testing.assert_close(inv(k), x, rtol=0, atol=1e-13)
    torch.testing.assert_close(fwd(inv(x)), x, rtol=0, atol=1e-13)


def test_fft2c_puts_zero_frequency_at_the_centre():
    x = torch.zeros(1, 2, 6, 7, dtype=torch.float64)
    x[:, 0] = 2.0  # constant real image
    k = fft2c(x)
    assert k[0, 0, 3, 3] == pytest.approx(2.0 * np.sqrt(6 * 7))
    k[0, 0, 3, 3] = 0.0
    assert float(k.abs().max()) < 1e-12


def test_fft_input_errors_name_the_layout():
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        fft2c(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="complex"):
        fft2c(torch.randn(1, 4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"\(B, 2, D, H, W\)"):
        fft3c(torch.randn(1, 2, 4, 4))
    with pytest.raises(ValueError, match="complex"):
        from_complex(torch.randn(2, 3))


# ---------------------------------------------------------------- operator


def test_adjoint_2d_column_mask():
    mask = masks.random_mask((12,), acceleration=4, center_fraction=0.08, seed=0)
    op = SingleCoilMRI(mask)
    x = torch.randn(3, 2, 10, 12, dtype=torch.float64)
    assert adjoint_mismatch(op, x, generator=torch.Generator().manual_seed(1)) < 1e-10


def test_adjoint_2d_per_sample_mask():
    mask = torch.stack([masks.gaussian_mask((10, 12), 3.0, seed=s) for s in range(3)])[:, None]  # (B, 1, H, W)
    op = SingleCoilMRI(mask)
    x = torch.randn(3, 2, 10, 12, dtype=torch.float64)
    assert adjoint_mismatch(op, x, generator=torch.Generator().manual_seed(2)) < 1e-10


def test_adjoint_3d_volume_mask():
    mask = torch.rand(4, 6, 8) < 0.4  # (D, H, W)
    op = SingleCoilMRI(mask)
    x = torch.randn(2, 2, 4, 6, 8, dtype=torch.float64)
    assert adjoint_mismatch(op, x, generator=torch.Generator().manual_seed(3)) < 1e-10
    # 3-D inputs use the 3-D centred FFT.
    expected = torch.where(mask, fft3c(x), torch.zeros((), dtype=torch.float64))
    torch.testing.assert_close(op.A(x), expected, rtol=0, atol=0)


def test_normal_operator_and_projection():
    mask = masks.equispaced_mask((1, 1, 16), acceleration=4, center_fraction=0.08, seed=0)
    op = SingleCoilMRI(mask)
    x = torch.randn(2, 2, 8, 16, dtype=torch.float64)
    torch.testing.assert_close(op.A_adjoint_A(x), op.A_adjoint(op.A(x)), rtol=0, atol=1e-14)
    y = op(x)
    torch.testing.assert_close(op.A(op.A_adjoint(y)), y, rtol=0, atol=1e-13)
    # Only the sampled columns survive.
    assert torch.count_nonzero(y[..., ~mask.reshape(-1)]) == 0


def test_float_mask_equals_bool_mask_and_is_a_buffer():
    mask = masks.random_mask((8,), 2, 0.25, seed=3)
    x = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    op_bool, op_float = SingleCoilMRI(mask), SingleCoilMRI(mask.float())
    assert torch.equal(op_bool.A(x), op_float.A(x))
    assert "mask" in dict(op_float.named_buffers())
    assert op_float.mask.dtype == torch.bool
    assert op_float.double().mask.dtype == torch.bool  # .double() must not turn it into weights


def test_masked_entries_are_positive_zero():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:, ::3] = True
    op = SingleCoilMRI(mask.double())
    x = -torch.rand(2, 2, 8, 8, dtype=torch.float64) - 1.0  # strongly negative, so k-space has negatives
    k = fft2c(x)
    unsampled = ~mask.expand_as(k)
    # Multiplying by the mask would leave -0 here: the check below can fail.
    assert torch.signbit((k * mask)[unsampled]).any()
    y = op.A(x)
    assert not torch.signbit(y[unsampled]).any()
    assert torch.equal(y[unsampled], torch.zeros_like(y[unsampled]))
    y_back = op.A(op.A_adjoint(-y))
    assert not torch.signbit(y_back[unsampled]).any()


@pytest.mark.parametrize("bad,match", [
    (torch.tensor([1.0, float("nan"), 0.0, 1.0]), "NaN"),
    (torch.tensor([1.0, 0.5, 0.0, 1.0]), "only 0 and 1"),
    (torch.ones(4, dtype=torch.complex64), "real"),
    (torch.tensor(1.0), "at least one axis"),
])
def test_bad_masks_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        SingleCoilMRI(bad)


def test_bad_inputs_raise_with_expected_shape():
    op = SingleCoilMRI(torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        op.A(torch.randn(1, 3, 8, 8))  # wrong channel count
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        op.A(torch.randn(2, 8, 8))  # wrong rank
    with pytest.raises(ValueError, match="complex"):
        op.A(torch.randn(1, 8, 8, dtype=torch.complex128))
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        op.A(torch.randn(1, 2, 8, 9))  # mask does not broadcast to k-space
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        op.A_adjoint(torch.randn(1, 2, 7, 8))
    with pytest.raises(ValueError, match="channel axis"):
        SingleCoilMRI(torch.ones(2, 8, 8, dtype=torch.bool)).A(torch.randn(1, 2, 8, 8))  # differs per channel
    with pytest.raises(ValueError, match=r"\(B, 2, H, W\)"):
        SingleCoilMRI(torch.ones(1, 1, 1, 8, 8, dtype=torch.bool)).A(torch.randn(1, 2, 8, 8))  # 3-D mask, 2-D data
