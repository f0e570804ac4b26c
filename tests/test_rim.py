"""Tests of the conv-GRU cell and the recurrent inference machine (solvers/rim.py)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from learn2invert.nn.conv_gru import ConvGRUCell
from learn2invert.operators.base import LinearOperator, check_tensor
from learn2invert.solvers.rim import RIM


class DenseOperator(LinearOperator):
    """``y = M vec(x)``: a dense (m, d) matrix acting on flattened images of shape ``image_shape``."""

    def __init__(self, matrix: torch.Tensor, image_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer("matrix", matrix)
        self.image_shape = tuple(image_shape)

    def A(self, x):  # noqa: N802
        check_tensor(x, "x", f"(B, *{self.image_shape})", ndims=(1 + len(self.image_shape),), spatial=self.image_shape)
        return x.flatten(1) @ self.matrix.T

    def A_adjoint(self, y):  # noqa: N802
        check_tensor(y, "y", f"(B, {self.matrix.shape[0]})", ndims=(2,), spatial=(self.matrix.shape[0],))
        return (y @ self.matrix).view(-1, *self.image_shape)


class MaskedIdentity(LinearOperator):
    """``y = m o x`` with a binary mask broadcast over batch and channels (inpainting / k-space-like)."""

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def _check(self, t, name):
        check_tensor(t, name, "(B, C, *S)", ndims=(self.mask.dim(),), spatial=tuple(self.mask.shape[2:]))

    def A(self, x):  # noqa: N802
        self._check(x, "x")
        return self.mask * x

    def A_adjoint(self, y):  # noqa: N802
        self._check(y, "y")
        return self.mask * y


def _masked_problem(channels, spatial, batch=2, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand((1, 1, *spatial), generator=g) < 0.6).to(dtype)
    x = torch.rand((batch, channels, *spatial), generator=g, dtype=dtype)
    op = MaskedIdentity(mask)
    y = op.A(x) + 0.05 * torch.randn(x.shape, generator=g, dtype=dtype)
    return op, x, y


def _small_rim(**kw):
    kw.setdefault("hidden_channels", 8)
    kw.setdefault("conv_channels", 8)
    kw.setdefault("output_init", "random")  # a zero output layer would make gradient tests vacuous
    return RIM(**kw)


# ------------------------------------------------------------------------------------- conv GRU
def test_conv_gru_matches_torch_gru_cell_for_1x1_kernels():
    # A 1x1 conv-GRU applied to one pixel is an ordinary GRU: same gates, same weights.
    cell = ConvGRUCell(3, 5, kernel_size=1, dims=2).double()
    ref = torch.nn.GRUCell(3, 5).double()
    with torch.no_grad():
        ref.weight_ih.copy_(cell.input_conv.weight.view(15, 3))
        ref.weight_hh.copy_(cell.hidden_conv.weight.view(15, 5))
        ref.bias_ih.copy_(torch.randn(15, dtype=torch.float64))
        ref.bias_hh.copy_(torch.randn(15, dtype=torch.float64))
        cell.input_conv.bias.copy_(ref.bias_ih)
        cell.hidden_conv.bias.copy_(ref.bias_hh)
    x = torch.randn(4, 3, dtype=torch.float64)
    h = torch.randn(4, 5, dtype=torch.float64)
    out = cell(x[:, :, None, None], h[:, :, None, None])[:, :, 0, 0]
    torch.testing.assert_close(out, ref(x, h), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dims", [2, 3])
def test_conv_gru_shapes_and_zero_initial_state(dims):
    cell = ConvGRUCell(2, 4, kernel_size=3, dims=dims, dilation=2)
    x = torch.randn(2, 2, *([5] * dims))
    h = cell(x)
    assert h.shape == (2, 4, *([5] * dims))
    torch.testing.assert_close(h, cell(x, torch.zeros_like(h)))
    # h' is a convex combination of tanh(.) and h, so it stays in (-1, 1) from a zero start.
    assert h.abs().max() < 1
    with pytest.raises(ValueError, match="state must have shape"):
        cell(x, torch.zeros(2, 4, *([4] * dims)))
    with pytest.raises(ValueError, match="expects input"):
        cell(torch.randn(2, 3, *([5] * dims)))


# ------------------------------------------------------------------------------------ RIM shapes
@pytest.mark.parametrize("architecture", ["strided", "mri"])
@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("channels", [1, 2, 3])
def test_iterate_count_and_shapes(architecture, dims, channels):
    spatial = (8, 7) if dims == 2 else (3, 5, 4)  # odd sizes exercise the transposed convolution
    op, x, y = _masked_problem(channels, spatial)
    rim = _small_rim(channels=channels, dims=dims, steps=3, architecture=architecture)
    out = rim(y, op, sigma=0.05)
    assert len(out) == 3
    for xt in out:
        assert xt.shape == x.shape and torch.isfinite(xt).all()
    assert len(rim(y, op, steps=2)) == 2


def test_state_is_zero_at_downsampled_resolution():
    rim = _small_rim(channels=2, stride=2)
    (state,) = rim.cell.initial_state(torch.zeros(3, 2, 9, 8))
    assert state.shape == (3, 8, 5, 4) and not state.any()
    rim = _small_rim(channels=2, architecture="mri")
    states = rim.cell.initial_state(torch.zeros(3, 2, 9, 8))
    assert [s.shape for s in states] == [(3, 8, 9, 8)] * 2


def test_default_x0_is_adjoint_of_y():
    op, _, y = _masked_problem(1, (8, 8))
    rim = _small_rim(steps=2).eval()
    torch.testing.assert_close(rim(y, op), rim(y, op, x0=op.A_adjoint(y)))
    assert not torch.allclose(rim(y, op)[0], rim(y, op, x0=torch.zeros_like(y))[0])


# ----------------------------------------------------------------------------------- ablations
@pytest.mark.parametrize("architecture", ["strided", "mri"])
def test_gdn_and_ffn_variants_run_and_differ(architecture):
    op, x, y = _masked_problem(2, (8, 8))
    outs = {}
    for variant in ("rim", "gdn", "ffn"):
        torch.manual_seed(0)
        rim = _small_rim(channels=2, steps=3, variant=variant, architecture=architecture).eval()
        outs[variant] = rim(y, op, sigma=0.05)
        assert len(outs[variant]) == 3 and outs[variant][-1].shape == x.shape
        first = rim.cell.down if architecture == "strided" else rim.cell.conv1
        # GDN sees the gradient only (C channels); RIM and FFN also see the estimate (2C).
        assert first.in_channels == (2 if variant == "gdn" else 4)
        # FFN has no recurrent state at all.
        assert (len(rim.cell.initial_state(x)) == 0) == (variant == "ffn")
    for variant in ("gdn", "ffn"):
        assert (outs[variant][-1] - outs["rim"][-1]).abs().max() > 1e-3


def test_gdn_ignores_the_estimate_when_gradient_is_fixed():
    # With A = 0 the likelihood gradient is 0 whatever the estimate: a GDN then produces the same
    # update from any x0, a RIM does not (it sees the estimate).
    op = MaskedIdentity(torch.zeros(1, 1, 8, 8))
    y = torch.zeros(2, 1, 8, 8)
    x0a, x0b = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    for variant, same in (("gdn", True), ("rim", False)):
        rim = _small_rim(steps=2, variant=variant).eval()
        da = rim(y, op, x0=x0a)[-1] - x0a
        db = rim(y, op, x0=x0b)[-1] - x0b
        assert torch.allclose(da, db, atol=1e-6) == same


def test_more_steps_at_call_than_in_training():
    op, _, y = _masked_problem(1, (8, 8))
    rim = _small_rim(steps=3).eval()
    short, long = rim(y, op), rim(y, op, steps=7)
    assert len(short) == 3 and len(long) == 7
    # The first iterates do not depend on how many follow.
    for a, b in zip(short, long):
        torch.testing.assert_close(a, b)
    assert all(torch.isfinite(t).all() for t in long)


# ------------------------------------------------------------------------------- link, gradient
def test_sigmoid_link_outputs_in_unit_interval():
    op, _, y = _masked_problem(3, (8, 8))
    rim = _small_rim(channels=3, steps=4, link="sigmoid")
    for xt in rim(y, op, x0=3 * torch.randn(y.shape)):
        assert xt.min() > 0 and xt.max() < 1


@pytest.mark.parametrize("link", ["identity", "sigmoid"])
def test_latent_gradient_is_autograd_gradient_of_log_likelihood(link):
    torch.manual_seed(1)
    g = torch.Generator().manual_seed(2)
    matrix = torch.randn(20, 2 * 4 * 4, generator=g, dtype=torch.float64)
    op = DenseOperator(matrix, (2, 4, 4))
    rim = _small_rim(channels=2, link=link).double()
    eta = torch.randn(3, 2, 4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.randn(3, 20, generator=g, dtype=torch.float64)
    sigma2 = torch.tensor([0.3, 1.0, 2.0], dtype=torch.float64).view(3, 1, 1, 1) ** 2
    x = torch.sigmoid(eta) if link == "sigmoid" else eta
    residual = (y - op.A(x)).view(3, 20, 1, 1, 1)
    # eps_units="lipschitz" (default): the floor is eps ||A||^2 (a power-iteration estimate of it).
    norm_squared = rim.eps_scale(op, eta)
    assert abs(norm_squared / float(torch.linalg.matrix_norm(matrix, 2)) ** 2 - 1) < 1e-3
    log_lik = -0.5 * (residual**2 / (sigma2.view(3, 1, 1, 1, 1) + rim.eps.detach() * norm_squared)).sum()
    (expected,) = torch.autograd.grad(log_lik, eta)
    torch.testing.assert_close(rim.latent_gradient(eta, y, op, sigma2), expected, rtol=1e-12, atol=1e-12)


def test_eps_is_positive_and_trainable():
    op, x, y = _masked_problem(1, (8, 8))
    rim = _small_rim(steps=2, eps_init=0.05)
    assert abs(rim.eps.item() - 0.05) < 1e-6 and rim.eps.item() > 0
    assert any(p is rim.phi for p in rim.parameters())
    loss = sum(F.mse_loss(xt, x) for xt in rim(y, op, sigma=0.01))
    loss.backward()
    assert rim.phi.grad is not None and rim.phi.grad.abs() > 0
    before = rim.eps.item()
    torch.optim.SGD([rim.phi], lr=10.0).step()
    assert rim.eps.item() != before and rim.eps.item() > 0
    # Even for a very negative phi eps stays strictly positive.
    with torch.no_grad():
        rim.phi.fill_(-30.0)
    assert rim.eps.item() > 0


# -------------------------------------------------------------------------------- checkpointing
def _param_grads(rim, y, op, x):
    rim.zero_grad()
    out = rim(y, op, sigma=0.1)
    sum(((xt - x) ** 2).mean() for xt in out).backward()
    return {n: p.grad.clone() for n, p in rim.named_parameters()}


@pytest.mark.parametrize("architecture, link", [("strided", "sigmoid"), ("mri", "identity")])
def test_checkpoint_gradients_equal_autograd(architecture, link):
    op, x, y = _masked_problem(2, (8, 6), batch=3, dtype=torch.float64)
    torch.manual_seed(3)
    rim = _small_rim(channels=2, steps=4, architecture=architecture, link=link).double()
    reference = _param_grads(rim, y, op, x)
    running = {n: b.clone() for n, b in rim.named_buffers()}
    rim.memory = "checkpoint"
    for n, b in rim.named_buffers():  # rewind BatchNorm statistics to compare their updates too
        b.copy_(running[n])
    checkpointed = _param_grads(rim, y, op, x)
    checkpointed_buffers = {n: b.clone() for n, b in rim.named_buffers()}
    assert reference.keys() == checkpointed.keys() and len(reference) > 5
    for name, g in reference.items():
        assert g.abs().max() > 0, name
        rel = (checkpointed[name] - g).norm() / g.norm()
        assert rel < 1e-10, (name, float(rel))
    # Recomputation during backward did not update BatchNorm running statistics a second time.
    rim.memory = "autograd"
    for n, b in rim.named_buffers():
        b.copy_(running[n])
    _param_grads(rim, y, op, x)
    for n, b in rim.named_buffers():
        torch.testing.assert_close(checkpointed_buffers[n], b, rtol=0, atol=0)


def test_checkpoint_mode_without_grad_runs():
    op, _, y = _masked_problem(1, (8, 8))
    rim = _small_rim(steps=2, memory="checkpoint").eval()
    with torch.no_grad():
        out = rim(y, op)
    rim.memory = "autograd"
    with torch.no_grad():
        torch.testing.assert_close(out, rim(y, op))


# ------------------------------------------------------------------------------------- training
def _smooth_images(n, g):
    """Smooth random 8x8 images in [0, 1]: bilinear upsampling of 3x3 uniform noise."""
    return F.interpolate(torch.rand(n, 1, 3, 3, generator=g), size=(8, 8), mode="bilinear", align_corners=True)


def test_adam_steps_reduce_loss_on_random_projections():
    # Noisy Gaussian random projections 64 -> 32 (paper Sec. 4.4, at toy size). Loss on a
    # held-out batch, mean over iterates (paper eq. 13 with w_t = 1).
    g = torch.Generator().manual_seed(1)
    sigma = 0.05
    op = DenseOperator(torch.randn(32, 64, generator=g) / 32**0.5, (1, 8, 8))
    rim = _small_rim(steps=4, norm="layer", sigma=sigma)
    opt = torch.optim.Adam(rim.parameters(), lr=1e-2)

    def batch(n):
        x = _smooth_images(n, g)
        return x, op.A(x) + sigma * torch.randn(n, 32, generator=g)

    def loss(x, y):
        return torch.stack([F.mse_loss(xt, x) for xt in rim(y, op)]).mean()

    x_val, y_val = batch(16)
    with torch.no_grad():
        start = loss(x_val, y_val).item()
    for _ in range(20):
        opt.zero_grad()
        loss(*batch(16)).backward()
        opt.step()
    with torch.no_grad():
        end = loss(x_val, y_val).item()
        last = F.mse_loss(rim(y_val, op)[-1], x_val).item()
        back_projection = F.mse_loss(op.A_adjoint(y_val), x_val).item()
    # Measured: start 1.37, end 0.18, last iterate 0.20, back-projection A^T y 0.74.
    assert end < 0.5 * start
    assert last < 0.5 * back_projection


@pytest.mark.parametrize("architecture", ["strided", "mri"])
def test_default_zero_output_layer_starts_at_x0_and_still_trains(architecture):
    # The default output_init="zero": an untrained RIM returns its start at every step (so it is
    # never worse than it), and the output layer's gradient is not zero, so training moves it.
    g = torch.Generator().manual_seed(2)
    op, x, y = _masked_problem(2, (8, 8))
    rim = RIM(channels=2, steps=3, architecture=architecture, conv_channels=8, hidden_channels=8,
              **({"norm": "none"} if architecture == "strided" else {}))
    x0 = torch.randn(x.shape, generator=g)
    for estimate in rim(y, op, x0=x0):
        torch.testing.assert_close(estimate, x0)
    opt = torch.optim.Adam(rim.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = F.mse_loss(rim(y, op)[-1], x)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses


@pytest.mark.parametrize("architecture", ["strided", "mri"])
def test_sigma_input_starts_as_the_plain_rim_and_then_tells_noise_levels_apart(architecture, tmp_path):
    op, _, y = _masked_problem(1, (8, 8), batch=3)
    kw = {"channels": 1, "steps": 2, "architecture": architecture, **({"norm": "none"} if architecture == "strided" else {})}
    torch.manual_seed(0)
    plain = _small_rim(**kw)
    torch.manual_seed(0)
    aware = _small_rim(**kw, sigma_input=True)
    sigma = torch.tensor([0.05, 0.1, 0.2]).view(3, 1, 1, 1)
    # A fine-tuning run loads the plain RIM's weights; the zero embedding is kept, not an error.
    from learn2invert.checkpoint import load_model, save_model
    save_model(plain, tmp_path)
    load_model(aware, tmp_path, new_zero_ok=True)
    with pytest.raises(ValueError, match="does not fit"):
        load_model(aware, tmp_path)  # strict by default
    torch.testing.assert_close(aware(y, op, sigma=sigma)[-1], plain(y, op, sigma=sigma)[-1])
    aware(y, op, sigma=sigma)[-1].square().sum().backward()
    assert aware.sigma_embed.weight.grad.abs().sum() > 0  # training can move it
    with torch.no_grad():
        aware.sigma_embed.weight.normal_(generator=torch.Generator().manual_seed(0))
        same_y = y[:1].expand(3, -1, -1, -1)
        out = aware(same_y, op, sigma=sigma)[-1]
    assert not torch.allclose(out[0], out[1]) and not torch.allclose(out[1], out[2])
    # Checkpointed steps recompute the shift: the same gradients as autograd.
    torch.manual_seed(0)
    a = _small_rim(**kw, sigma_input=True)
    b = _small_rim(**kw, sigma_input=True, memory="checkpoint")
    with torch.no_grad():
        a.sigma_embed.weight.normal_()
    b.load_state_dict(a.state_dict())
    for m in (a, b):
        m(y, op, sigma=sigma)[-1].square().sum().backward()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p.grad, q.grad)


# ------------------------------------------------------------------------------------- errors
def test_errors_on_bad_inputs():
    op, _, y = _masked_problem(1, (8, 8))
    rim = _small_rim(steps=2)
    with pytest.raises(ValueError, match="trailing size"):  # y incompatible: the operator says so
        rim(torch.zeros(2, 1, 7, 8), op)
    with pytest.raises(ValueError, match="sigma"):
        rim(y, op, sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        rim(y, op, sigma=-1.0)
    with pytest.raises(ValueError, match="sigma"):
        rim(y, op, sigma=torch.tensor([0.1, -0.1]).view(2, 1, 1, 1))
    with pytest.raises(ValueError, match="sigma"):
        rim(y, op, sigma=torch.ones(2))  # ambiguous layout: must be (B, 1, 1, 1)
    rim(y, op, sigma=torch.tensor([0.1, 0.2]).view(2, 1, 1, 1))  # per-sample sigma is fine
    with pytest.raises(ValueError, match="channels=1"):
        rim(y, op, x0=torch.zeros(2, 2, 8, 8))
    with pytest.raises(ValueError, match="dims=2"):
        rim(y, op, x0=torch.zeros(2, 1, 2, 8, 8))
    with pytest.raises(ValueError, match="steps"):
        rim(y, op, steps=0)
    with pytest.raises(ValueError, match="sigma"):
        RIM(sigma=0.0)
    for kwargs in ({"variant": "lstm"}, {"architecture": "unet"}, {"link": "exp"}, {"memory": "invertible"},
                   {"dims": 1}, {"norm": "weird"}, {"architecture": "mri", "norm": "batch"},
                   {"stride": 4}, {"eps_init": 0.0}, {"output_init": "ones"}):
        with pytest.raises(ValueError):
            RIM(hidden_channels=4, conv_channels=4, **kwargs)
