"""The invertible-learning engine and the i-RIM layer: exact inversion, gradients equal to autograd, O(1) memory."""
import pytest
import torch
from torch import nn

from learn2invert.bench.memory import saved_tensor_bytes
from learn2invert.nn.invertible import AdditiveCoupling, InvertibleModule, invertible_sequence
from learn2invert.nn.irim_layers import DownsamplingResidualBlock, IRIMLayer, householder_matrix


def _coupling(channels: int, seed: int) -> AdditiveCoupling:
    torch.manual_seed(seed)
    half = channels // 2
    net = nn.Sequential(nn.Conv2d(half, 8, 3, padding=1), nn.Tanh(), nn.Conv2d(8, channels - half, 3, padding=1))
    return AdditiveCoupling(net, half)


class _Scale(InvertibleModule):
    """A layer that uses the generic invert_and_backward (inversion + re-run of forward): y = x * exp(a) + b."""

    def __init__(self, channels: int):
        super().__init__()
        self.a = nn.Parameter(0.1 * torch.randn(1, channels, 1, 1))
        self.b = nn.Parameter(0.1 * torch.randn(1, channels, 1, 1))

    def forward(self, x):
        return x * self.a.exp() + self.b

    def inverse(self, y):
        return (y - self.b) * (-self.a).exp()


def _grads_both_ways(layers, x, anchor_every=0):
    """(output, input grad, param grads) by plain autograd and by the engine."""
    params = [p for layer in layers for p in layer.parameters()]
    weight = torch.randn_like(x)

    def run(engine):
        for p in params:
            p.grad = None
        xi = x.clone().requires_grad_(True)
        if engine:
            out = invertible_sequence(layers, xi, anchor_every)
        else:
            out = xi
            for layer in layers:
                out = layer(out)
        (out * weight).sum().backward()
        return out.detach(), xi.grad.clone(), [p.grad.clone() for p in params]

    return run(False), run(True)


def _max_rel(a, b):
    return max(float((u - v).norm() / u.norm().clamp_min(1e-30)) for u, v in zip(a, b))


def test_engine_gradients_equal_autograd_with_untied_layers():
    torch.manual_seed(0)
    layers = nn.ModuleList([_coupling(4, seed=i) for i in range(3)] + [_Scale(4)] + [IRIMLayer(4, 6, 2)]).double()
    x = torch.randn(2, 4, 8, 8, dtype=torch.float64)
    (out_a, gx_a, gp_a), (out_i, gx_i, gp_i) = _grads_both_ways(list(layers), x)
    torch.testing.assert_close(out_i, out_a, rtol=0, atol=1e-12)
    assert _max_rel([gx_a], [gx_i]) < 1e-10
    assert _max_rel(gp_a, gp_i) < 1e-10


def test_engine_walks_untied_layers_in_reverse_order():
    """Every layer must rebuild exactly the input it saw in the forward pass (the official code's bug)."""
    torch.manual_seed(1)
    layers = [_coupling(4, seed=i).double() for i in range(4)]
    seen_forward, seen_reverse = [], []
    for i, layer in enumerate(layers):
        original, original_forward = layer.invert_and_backward, layer.forward

        def record(x, original_forward=original_forward, i=i):
            seen_forward.append((i, x.detach().clone()))
            return original_forward(x)

        layer.forward = record

        def spy(y, g, original=original, i=i):
            x, gx, gp = original(y, g)
            seen_reverse.append((i, x.clone()))
            return x, gx, gp

        layer.invert_and_backward = spy
    x = torch.randn(1, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    invertible_sequence(layers, x).sum().backward()
    forward = dict(seen_forward)
    assert [i for i, _ in seen_reverse] == [3, 2, 1, 0]
    for i, rebuilt in seen_reverse:
        torch.testing.assert_close(rebuilt, forward[i], rtol=0, atol=1e-12)


def test_engine_shared_parameters_sum_their_gradients():
    torch.manual_seed(2)
    layer = _coupling(4, seed=0).double()
    x = torch.randn(1, 4, 5, 5, dtype=torch.float64)
    (_, gx_a, gp_a), (_, gx_i, gp_i) = _grads_both_ways([layer, layer, layer], x)
    assert _max_rel([gx_a], [gx_i]) < 1e-10 and _max_rel(gp_a, gp_i) < 1e-10


def test_engine_anchor_every_gives_the_same_gradients():
    torch.manual_seed(3)
    layers = [IRIMLayer(4, 4, 1).double() for _ in range(6)]
    x = torch.randn(1, 4, 4, 4, dtype=torch.float64)
    (_, gx_a, gp_a), (_, gx_i, gp_i) = _grads_both_ways(layers, x, anchor_every=2)
    assert _max_rel([gx_a], [gx_i]) < 1e-10 and _max_rel(gp_a, gp_i) < 1e-10


def test_engine_without_grad_and_with_frozen_parameters():
    torch.manual_seed(4)
    layers = [IRIMLayer(4, 4, 2) for _ in range(2)]
    x = torch.randn(1, 4, 8, 8)
    with torch.no_grad():
        out = invertible_sequence(layers, x)
    assert not out.requires_grad
    for layer in layers:
        layer.requires_grad_(False)
    xi = x.clone().requires_grad_(True)
    invertible_sequence(layers, xi).square().sum().backward()
    ref = x.clone().requires_grad_(True)
    h = ref
    for layer in layers:
        h = layer(h)
    h.square().sum().backward()
    torch.testing.assert_close(xi.grad, ref.grad, rtol=1e-4, atol=1e-5)


def test_engine_rejects_non_invertible_layers():
    with pytest.raises(TypeError, match="Conv2d"):
        invertible_sequence([nn.Conv2d(2, 2, 1)], torch.zeros(1, 2, 2, 2))


def test_householder_matrix_is_orthogonal():
    u = householder_matrix(torch.randn(3, 7, dtype=torch.float64))
    torch.testing.assert_close(u @ u.T, torch.eye(7, dtype=torch.float64), rtol=0, atol=1e-13)


@pytest.mark.parametrize("dims,shape", [(2, (2, 6, 8, 8)), (3, (1, 6, 3, 8, 8))])
def test_irim_layer_inverts_exactly(dims, shape):
    torch.manual_seed(5)
    layer = IRIMLayer(6, 8, downsampling=4, dims=dims).double()
    x = torch.randn(*shape, dtype=torch.float64)
    y = layer(x)
    assert y.shape == x.shape and (y - x).abs().max() > 1e-3  # the layer does something
    torch.testing.assert_close(layer.inverse(y), x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dims,shape", [(2, (2, 4, 8, 8)), (3, (1, 4, 2, 4, 4))])
def test_irim_layer_and_block_gradients_equal_autograd(dims, shape):
    torch.manual_seed(6)
    layer = IRIMLayer(4, 6, downsampling=2, dims=dims).double()
    x = torch.randn(*shape, dtype=torch.float64)
    (_, gx_a, gp_a), (_, gx_i, gp_i) = _grads_both_ways([layer], x)
    assert _max_rel([gx_a], [gx_i]) < 1e-10 and _max_rel(gp_a, gp_i) < 1e-10
    block = DownsamplingResidualBlock(2, 2, 4, downsampling=2, dims=dims).double()
    assert torch.autograd.gradcheck(block, (torch.randn(1, 2, *shape[2:], dtype=torch.float64, requires_grad=True),))


def test_400_layer_float32_stack_drift_is_bounded():
    """Inverting 400 i-RIM layers in float32 rebuilds the input to 1e-4 relative error (measured ~1e-6)."""
    torch.manual_seed(7)
    layers = [IRIMLayer(4, 4, downsampling=(1, 2)[i % 2]) for i in range(400)]
    x = torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        h = x
        for layer in layers:
            h = layer(h)
        for layer in reversed(layers):
            h = layer.inverse(h)
    assert float((h - x).norm() / x.norm()) < 1e-4


def test_saved_bytes_do_not_grow_with_depth_in_invertible_mode():
    torch.manual_seed(8)
    x = torch.randn(2, 8, 16, 16)

    def saved(depth, engine):
        layers = [IRIMLayer(8, 8, downsampling=2) for _ in range(depth)]

        def step():
            xi = x.clone().requires_grad_(True)
            if engine:
                out = invertible_sequence(layers, xi)
            else:
                out = xi
                for layer in layers:
                    out = layer(out)
            return out.square().sum()

        return saved_tensor_bytes(step, [p for layer in layers for p in layer.parameters()])

    assert saved(2, True) == saved(16, True) == x.numel() * 4  # only the output is kept
    assert saved(16, False) > 6 * saved(2, False)


def test_each_parameter_gradient_hook_fires_once():
    """What DistributedDataParallel relies on: one accumulation per parameter per backward."""
    torch.manual_seed(9)
    layers = [IRIMLayer(4, 4, 2) for _ in range(3)]
    fired = {}
    for layer in layers:
        for p in layer.parameters():
            p.register_post_accumulate_grad_hook(lambda t: fired.__setitem__(id(t), fired.get(id(t), 0) + 1))
    invertible_sequence(layers, torch.randn(1, 4, 8, 8)).square().sum().backward()
    assert len(fired) == sum(1 for layer in layers for _ in layer.parameters())
    assert set(fired.values()) == {1}
