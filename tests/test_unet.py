"""U-Net baseline: shapes (2D, 3D, odd sizes), RIM-compatible interface, training, errors."""
import pytest
import torch

from learn2invert.operators import Denoising, SingleCoilMRI, masks
from learn2invert.solvers.unet import UNet


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_2d_shape_default_x0_is_adjoint_and_residual():
    torch.manual_seed(0)
    net = UNet(channels=2, features=4, depth=2)
    x = torch.randn(2, 2, 16, 16)
    op = SingleCoilMRI(masks.equispaced_mask((16,), 4, 0.125, seed=0))
    y = op.A(x)
    out = net(y, op)
    assert isinstance(out, list) and len(out) == 1 and out[0].shape == x.shape
    # x0 defaults to the zero-filled image; residual output is x0 + net(x0).
    zero_filled = op.A_adjoint(y)
    assert torch.allclose(out[0], net(y, op, x0=zero_filled)[0])
    plain = UNet(channels=2, features=4, depth=2, residual=False)
    plain.load_state_dict(net.state_dict())
    assert torch.allclose(out[0], zero_filled + plain(y, op)[0], atol=1e-6)


def test_steps_and_sigma_are_ignored():
    torch.manual_seed(0)
    net = UNet(channels=1, features=4, depth=2).eval()
    x = torch.randn(1, 1, 12, 12)
    ref = net(x, Denoising())[0]
    assert torch.equal(ref, net(x, Denoising(), steps=7, sigma=torch.full((1, 1, 1, 1), 0.3))[0])


def test_3d_shape_and_no_pooling_along_depth():
    torch.manual_seed(0)
    net = UNet(channels=2, dims=3, features=4, depth=2)
    x = torch.randn(1, 2, 3, 12, 10)  # D = 3 is not a multiple of 4: fine, D is never pooled
    out = net(x, Denoising())[0]
    assert out.shape == x.shape
    pools = [m for m in net.modules() if isinstance(m, torch.nn.ConvTranspose3d)]
    assert pools and all(m.stride == (1, 2, 2) for m in pools)


@pytest.mark.parametrize("shape", [(1, 1, 13, 9), (2, 3, 17, 8), (1, 1, 8, 31)])
def test_odd_sizes_are_padded_and_cropped(shape):
    torch.manual_seed(0)
    net = UNet(channels=shape[1], features=4, depth=3)
    x = torch.randn(shape)
    out = net(x, Denoising())[0]
    assert out.shape == x.shape and torch.isfinite(out).all()
    # Equivalent to: reflect-pad (split evenly, extra pixel at the end) to multiples of 8, run
    # the network, crop back the original window, add x0.
    ph, pw = -x.shape[-2] % 8, -x.shape[-1] % 8
    padded = torch.nn.functional.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2], mode="reflect")
    window = net.net(padded)[..., ph // 2:ph // 2 + x.shape[-2], pw // 2:pw // 2 + x.shape[-1]]
    assert torch.allclose(out, x + window, atol=1e-6)


def test_architecture_follows_fastmri_channel_doubling():
    net = UNet(channels=1, features=8, depth=3)
    widths = [block.layers[0].out_channels for block in net.down] + [net.bottleneck.layers[0].out_channels]
    assert widths == [8, 16, 32, 64]
    assert [m.negative_slope for m in net.modules() if isinstance(m, torch.nn.LeakyReLU)][0] == 0.2
    assert net.out.kernel_size == (1, 1) and net.out.out_channels == 1
    assert _count(UNet(channels=1, features=8, depth=2)) < _count(net)


@pytest.fixture(scope="module")
def adam_class():
    """torch.optim.Adam, constructed once: the first optimiser built in a process imports
    torch._dynamo (over a second here), a fixed cost that is not part of the test."""
    torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))])
    return torch.optim.Adam


def test_adam_steps_reduce_denoising_mse(adam_class):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    centres = torch.rand(4, 2, generator=g) - 0.5
    clean = ((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2 < 0.2).float().unsqueeze(1)
    noisy = clean + 0.2 * torch.randn(clean.shape, generator=g)
    net = UNet(channels=1, features=8, depth=2)
    optimiser = adam_class(net.parameters(), lr=1e-2)
    op = Denoising()

    def mse() -> float:
        with torch.no_grad():
            return float((net(noisy, op)[0] - clean).pow(2).mean())

    before = mse()
    for _ in range(15):
        loss = (net(noisy, op)[0] - clean).pow(2).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    after = mse()
    assert after < 0.5 * before
    assert after < float((noisy - clean).pow(2).mean())  # better than the noisy input (measured 0.011 vs 0.040)


@pytest.mark.parametrize("norm", ["instance", "layer", "none"])
def test_eval_and_train_modes_agree_without_batch_statistics(norm):
    torch.manual_seed(0)
    net = UNet(channels=1, features=4, depth=2, norm=norm)
    x = torch.randn(2, 1, 12, 12)
    train_out = net.train()(x, Denoising())[0]
    eval_out = net.eval()(x, Denoising())[0]
    assert torch.allclose(train_out, eval_out, atol=1e-6)


def test_batch_norm_gives_per_sample_results_in_eval_mode():
    torch.manual_seed(0)
    net = UNet(channels=1, features=4, depth=2, norm="batch").eval()
    x = torch.randn(3, 1, 8, 8)
    batched = net(x, Denoising())[0]
    single = torch.cat([net(x[i:i + 1], Denoising())[0] for i in range(3)])
    assert torch.allclose(batched, single, atol=1e-5)


def test_float64_and_gradient_flow():
    torch.manual_seed(0)
    net = UNet(channels=1, features=4, depth=2).double()
    x = torch.randn(1, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    out = net(x, Denoising())[0]
    assert out.dtype == torch.float64
    out.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())


def test_bad_inputs_raise_value_error():
    net = UNet(channels=2, features=4, depth=2)
    with pytest.raises(ValueError, match="C=2"):
        net(torch.randn(1, 1, 8, 8), Denoising())  # wrong channel count
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        net(torch.randn(1, 2, 4, 8, 8), Denoising())  # 3D volume to a 2D net
    with pytest.raises(ValueError, match="2\\*\\*depth"):
        net(torch.randn(1, 2, 3, 8), Denoising())  # too small for two poolings
    with pytest.raises(ValueError, match="real floating-point"):
        net(torch.ones(1, 2, 8, 8, dtype=torch.int64), Denoising(), x0=torch.ones(1, 2, 8, 8, dtype=torch.int64))
    with pytest.raises(ValueError, match="bottleneck"):
        UNet(channels=1, features=4, depth=3)(torch.randn(1, 1, 8, 8), Denoising())
    with pytest.raises(ValueError, match="dims"):
        UNet(channels=1, dims=1)
    with pytest.raises(ValueError, match="norm"):
        UNet(channels=1, norm="group")
    with pytest.raises(ValueError, match="channels"):
        UNet(channels=0)
    with pytest.raises(ValueError, match="depth"):
        UNet(channels=1, depth=0)
