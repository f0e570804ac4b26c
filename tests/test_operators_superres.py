"""SuperResolution against a plain NumPy transcription of MATLAB imresize's contributions()."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from learn2invert.operators.base import adjoint_mismatch
from learn2invert.operators.superres import SuperResolution, bicubic_matlab, downscale_taps, upscale_matrix

# MATLAB imresize(x, 1/2) with the default bicubic kernel: 8 symmetric taps, i.e. 0.5 * cubic(d / 2)
# at d = -3.5 .. 3.5 (cubic with a = -0.5), which already sum to 1.
MATLAB_HALF_TAPS = [-0.01171875, -0.03515625, 0.11328125, 0.43359375, 0.43359375, 0.11328125, -0.03515625, -0.01171875]


def _matlab_kernel(name, x):
    ax = np.abs(x)
    if name == "bicubic":
        near = (1.5 * ax**3 - 2.5 * ax**2 + 1) * (ax <= 1)
        return near + (-0.5 * ax**3 + 2.5 * ax**2 - 4 * ax + 2) * ((1 < ax) & (ax <= 2))
    if name == "bilinear":
        return (x + 1) * ((-1 <= x) & (x < 0)) + (1 - x) * ((0 <= x) & (x <= 1))
    return ((-0.5 <= x) & (x < 0.5)).astype(float)


def _matlab_resize_matrix(in_length, factor, kernel, padding):
    """Dense (out, in) matrix of MATLAB's contributions() for scale = 1 / factor, antialiasing on.

    Follows imresize.m step by step with its 1-based indices; ``padding="circular"`` swaps the
    mirrored index table for a periodic one (not a MATLAB option, but the same bookkeeping).
    """
    scale = 1.0 / factor
    width = {"bicubic": 4.0, "bilinear": 2.0, "box": 1.0}[kernel]
    out_length = in_length // factor
    kernel_width = width / scale

    def h(x):
        return scale * _matlab_kernel(kernel, scale * x)

    x = np.arange(1, out_length + 1, dtype=float)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - kernel_width / 2)
    taps = int(np.ceil(kernel_width)) + 2
    indices = left[:, None] + np.arange(taps)[None, :]
    weights = h(u[:, None] - indices)
    weights = weights / weights.sum(axis=1, keepdims=True)
    if padding == "symmetric":
        aux = np.concatenate([np.arange(1, in_length + 1), np.arange(in_length, 0, -1)])
    else:
        aux = np.arange(1, in_length + 1)
    mapped = aux[np.mod(indices.astype(int) - 1, len(aux))]
    matrix = np.zeros((out_length, in_length))
    for i in range(out_length):
        for k in range(taps):
            matrix[i, mapped[i, k] - 1] += weights[i, k]
    return matrix


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("kernel", ["bicubic", "bilinear", "box"])
@pytest.mark.parametrize("padding", ["symmetric", "circular"])
def test_matches_matlab_contributions(factor, kernel, padding):
    h, w = 4 * factor, 6 * factor
    op = SuperResolution(factor, kernel=kernel, padding=padding).double()
    x = torch.rand(2, 3, h, w, dtype=torch.float64)
    rows = _matlab_resize_matrix(h, factor, kernel, padding)
    cols = _matlab_resize_matrix(w, factor, kernel, padding)
    expected = np.einsum("ih,bchw,jw->bcij", rows, x.numpy(), cols)
    np.testing.assert_allclose(op.A(x).numpy(), expected, rtol=0, atol=1e-13)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_tiny_image_mirrors_several_times_like_matlab(factor):
    # The bicubic support (4 f) is wider than an f x f image, so indices reflect more than once.
    op = SuperResolution(factor).double()
    x = torch.rand(1, 1, factor, 2 * factor, dtype=torch.float64)
    rows = _matlab_resize_matrix(factor, factor, "bicubic", "symmetric")
    cols = _matlab_resize_matrix(2 * factor, factor, "bicubic", "symmetric")
    np.testing.assert_allclose(op.A(x)[0, 0].numpy(), rows @ x[0, 0].numpy() @ cols.T, rtol=0, atol=1e-13)
    assert adjoint_mismatch(op, x) < 1e-10


def test_factor_two_uses_matlab_half_weights():
    taps, offset = downscale_taps(2)
    assert offset == 3
    np.testing.assert_allclose(taps.numpy(), MATLAB_HALF_TAPS, rtol=0, atol=1e-15)
    # A^T of a unit low-res pixel is the outer product of one row of the 1D matrix with another.
    op = SuperResolution(2).double()
    delta = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    delta[0, 0, 4, 0] = 1.0
    footprint = op.A_adjoint(delta)[0, 0]
    interior_row = np.zeros(16)
    interior_row[5:13] = MATLAB_HALF_TAPS  # output pixel 4 is centred at 8.5: inputs 5..12
    # Output pixel 0 reaches inputs -3..4; MATLAB mirrors -1, -2, -3 onto 0, 1, 2.
    border_row = np.zeros(16)
    border_row[:5] = [0.546875, 0.3984375, 0.1015625, -0.03515625, -0.01171875]  # w2+w3, w1+w4, w0+w5, w6, w7
    np.testing.assert_allclose(footprint.numpy(), np.outer(interior_row, border_row), rtol=0, atol=1e-15)


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("padding", ["symmetric", "circular"])
@pytest.mark.parametrize("kernel", ["bicubic", "bilinear", "box"])
def test_adjoint(factor, padding, kernel):
    op = SuperResolution(factor, kernel=kernel, padding=padding).double()
    x = torch.randn(2, 3, 3 * factor, 5 * factor, dtype=torch.float64)
    assert adjoint_mismatch(op, x) < 1e-10


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding", ["symmetric", "circular"])
def test_shapes_dtypes_and_constant_image(dtype, padding):
    for factor in (2, 3, 4):
        op = SuperResolution(factor, padding=padding).to(dtype)
        x = torch.full((2, 3, 12, 24), -0.6, dtype=dtype)
        y = op.A(x)
        assert y.shape == (2, 3, 12 // factor, 24 // factor) and y.dtype == dtype
        assert (y + 0.6).abs().max().item() <= (1e-6 if dtype == torch.float32 else 1e-14)
        back = op.A_adjoint(y)
        assert back.shape == x.shape and back.dtype == dtype


def test_taps_are_a_float64_buffer_cast_per_call():
    op = SuperResolution(3)
    assert op.taps.dtype == torch.float64 and "taps" not in op.state_dict()
    assert op.A(torch.rand(1, 1, 6, 6)).dtype == torch.float32
    assert op.float().taps.dtype == torch.float32


def test_rejects_bad_arguments_and_input():
    with pytest.raises(ValueError, match="factor must be 2, 3 or 4"):
        SuperResolution(5)
    with pytest.raises(ValueError, match="kernel must be one of"):
        SuperResolution(2, kernel="lanczos3")
    with pytest.raises(ValueError, match="padding must be one of"):
        SuperResolution(2, padding="zeros")
    op = SuperResolution(3)
    with pytest.raises(ValueError, match="divisible by factor 3"):
        op.A(torch.rand(1, 1, 9, 10))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        op.A(torch.rand(9, 9))
    with pytest.raises(ValueError, match="complex"):
        op.A(torch.rand(1, 1, 9, 9, dtype=torch.complex64))
    with pytest.raises(ValueError, match=r"\(B, C, H / factor, W / factor\)"):
        op.A_adjoint(torch.rand(3, 3))


# ---------------------------------------------- the bicubic baseline: MATLAB imresize(y, factor)

def _matlab_upscale_matrix(in_length: int, scale: int) -> np.ndarray:
    """imresize.m contributions() for an enlargement (no antialiasing), 1-based as in MATLAB."""
    out_length = in_length * scale
    x = np.arange(1, out_length + 1, dtype=float)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - 2)  # kernel width 4
    indices = left[:, None] + np.arange(6)[None, :]  # ceil(4) + 2 taps
    d = np.abs(u[:, None] - indices)
    weights = (1.5 * d**3 - 2.5 * d**2 + 1) * (d <= 1) + (-0.5 * d**3 + 2.5 * d**2 - 4 * d + 2) * ((d > 1) & (d <= 2))
    weights /= weights.sum(axis=1, keepdims=True)
    aux = np.concatenate([np.arange(1, in_length + 1), np.arange(in_length, 0, -1)])
    mapped = aux[np.mod(indices.astype(int) - 1, len(aux))]
    matrix = np.zeros((out_length, in_length))
    for i in range(out_length):
        for k in range(indices.shape[1]):
            matrix[i, mapped[i, k] - 1] += weights[i, k]
    return matrix


@pytest.mark.parametrize("factor", [2, 3, 4])
@pytest.mark.parametrize("n", [1, 5, 9])
def test_bicubic_is_matlab_imresize(factor, n):
    np.testing.assert_allclose(upscale_matrix(n, factor).numpy(), _matlab_upscale_matrix(n, factor), atol=1e-12)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_scaled_adjoint_is_bicubic(factor):
    # f^2 A^T of the MATLAB-style downscaler is MATLAB's bicubic upscaler, borders included.
    op = SuperResolution(factor).double()
    y = torch.rand(2, 1, 7, 5, generator=torch.Generator().manual_seed(factor), dtype=torch.float64)
    torch.testing.assert_close(factor**2 * op.A_adjoint(y), bicubic_matlab(y, factor), atol=1e-12, rtol=0)


@pytest.mark.parametrize("factor", [2, 3, 4])
def test_upsamplers_are_aligned_with_the_operator(factor):
    # A linear ramp survives downscaling + bicubic upscaling exactly away from the border (Keys' a = -0.5
    # kernel reproduces linear functions) only if both agree on the pixel centres: LR pixel i sits at
    # HR coordinate f i + (f - 1) / 2. Nearest upsampling is then unbiased on every f x f block.
    n, margin = 12 * factor, 4 * factor
    i, j = torch.meshgrid(torch.arange(n, dtype=torch.float64), torch.arange(n, dtype=torch.float64), indexing="ij")
    x = ((0.3 * i + 0.7 * j) / n)[None, None]
    op = SuperResolution(factor).double()
    y = op.A(x)
    inner = (slice(None), slice(None), slice(margin, -margin), slice(margin, -margin))
    assert (bicubic_matlab(y, factor) - x)[inner].abs().max() < 1e-12
    nearest = y.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)
    block_error = F.avg_pool2d(nearest - x, factor)
    assert block_error[..., 2:-2, 2:-2].abs().max() < 1e-12
    # A half-pixel misalignment (corner-aligned grid) would not reproduce the ramp.
    shifted = F.interpolate(y, size=(n, n), mode="bicubic", align_corners=True)
    assert (shifted - x)[inner].abs().max() > 1e-3
