"""GLOW: exact inversion, log-dets against brute-force Jacobians, ActNorm init, invertible-mode gradients, training."""
import pytest
import torch

from learn2invert.bench.memory import saved_tensor_bytes
from learn2invert.nn.flows import (ActNorm, AffineCoupling, Glow, InvConv1x1, dequantize, squeeze2d,
                                   unsqueeze2d)
from learn2invert.nn.invertible import invertible_sequence


def _perturb(module: torch.nn.Module, scale: float = 0.1) -> None:
    """Random parameters everywhere (the zero-initialised coupling outputs included), so no layer is trivial."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))


def _glow(channels=3, size=8, levels=2, depth=2, hidden=8, **kw) -> Glow:
    """A tiny float64 GLOW with initialised ActNorms and perturbed parameters."""
    model = Glow(channels, size, levels=levels, depth=depth, hidden=hidden, **kw).double()
    with torch.no_grad():
        model.encode(torch.rand(4, channels, size, size, dtype=torch.float64))  # data-dependent init
    _perturb(model)
    return model


def _layers(c=4):
    return [ActNorm(c), InvConv1x1(c), AffineCoupling(c, hidden=8)]


def _brute_logdet(fn, x):
    """log|det| of the Jacobian of ``fn`` (one sample, flattened) at ``x``."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.reshape(x.shape)).reshape(-1), x.reshape(-1))
    return torch.linalg.slogdet(jac)[1]


# ----------------------------------------------------------------------------------- inversion

def test_squeeze_is_a_permutation_with_inverse():
    x = torch.randn(2, 3, 4, 6)
    y = squeeze2d(x)
    assert y.shape == (2, 12, 2, 3)
    assert torch.equal(unsqueeze2d(y), x)
    assert torch.equal(y[0, 4 * 1 + 2 * 1 + 0], x[0, 1, 1::2, 0::2])  # channel 4c + 2i + j


@pytest.mark.parametrize("layer_index", [0, 1, 2])
def test_each_layer_inverts_exactly_plain_and_packed(layer_index):
    layer = _layers()[layer_index].double()
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    layer(x)  # ActNorm init
    _perturb(layer)
    y, logdet = layer.forward_and_logdet(x)
    assert logdet.shape == (2,)
    assert (layer.inverse(y) - x).abs().max() < 1e-12
    state = torch.cat([x, torch.randn(2, 1, 4, 4, dtype=torch.float64)], dim=1)
    out = layer.forward_packed(state)
    assert (layer.inverse_packed(out) - state).abs().max() < 1e-12
    assert torch.allclose(out[:, -1].sum((1, 2)) - state[:, -1].sum((1, 2)), logdet, rtol=1e-12, atol=1e-12)


def test_encode_decode_exact_inversion():
    model = _glow()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    z, logdet = model.encode(x)
    assert z.shape == (2, 3 * 8 * 8) and logdet.shape == (2,)
    assert (model.decode(z) - x).abs().max() < 1e-10
    z2 = torch.randn(2, 192, dtype=torch.float64)
    assert (model.encode(model.decode(z2))[0] - z2).abs().max() < 1e-10
    assert [s for s in model.latent_shapes()] == [(6, 4, 4), (24, 2, 2)]


# ----------------------------------------------------------------------------------- log-dets

@pytest.mark.parametrize("layer_index", [0, 1, 2])
def test_layer_logdet_equals_brute_force_jacobian(layer_index):
    layer = _layers()[layer_index].double()
    layer(torch.randn(3, 4, 2, 2, dtype=torch.float64))
    _perturb(layer, 0.3)
    x = torch.randn(1, 4, 2, 2, dtype=torch.float64)
    assert torch.allclose(layer.forward_and_logdet(x)[1], _brute_logdet(layer, x),
                          rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("channels,levels", [(1, 1), (2, 2)])
@pytest.mark.parametrize("memory", ["autograd", "invertible"])
def test_flow_logdet_equals_brute_force_jacobian(channels, levels, memory):
    model = _glow(channels, size=4, levels=levels, depth=2, hidden=6, memory=memory)
    x = torch.rand(1, channels, 4, 4, dtype=torch.float64)
    with torch.enable_grad():
        logdet = model.encode(x.requires_grad_(True))[1]  # grad on: the engine path when invertible
    # The brute force backward-passes the same graph once per output: plain autograd only (the
    # engine's graph, like reentrant checkpointing, supports a single backward pass).
    model.memory = "autograd"
    expected = _brute_logdet(lambda v: model.encode(v)[0], x.detach())
    assert torch.allclose(logdet.detach(), expected.reshape(1), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------------- ActNorm

def test_actnorm_data_init_and_state_dict_does_not_reinit():
    x = 3.0 + 2.0 * torch.randn(16, 5, 6, 6, dtype=torch.float64)
    norm = ActNorm(5).double()
    assert not norm.initialized
    y = norm(x)
    assert norm.initialized
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-10
    assert (y.var(dim=(0, 2, 3), correction=0) - 1).abs().max() < 1e-5
    # A second batch does not re-initialise.
    before = [p.clone() for p in norm.parameters()]
    norm(torch.randn(16, 5, 6, 6, dtype=torch.float64))
    assert all(torch.equal(a, b) for a, b in zip(before, norm.parameters()))
    # The flag travels with the state_dict: a loaded model keeps the loaded parameters.
    assert "initialized" in norm.state_dict()
    fresh = ActNorm(5).double()
    fresh.load_state_dict(norm.state_dict())
    fresh(torch.randn(16, 5, 6, 6, dtype=torch.float64) * 7)
    assert all(torch.equal(a, b) for a, b in zip(before, fresh.parameters()))


def test_glow_state_dict_round_trip_keeps_actnorm():
    model = _glow(levels=2, depth=1)
    copy = Glow(3, 8, levels=2, depth=1, hidden=8).double()
    copy.load_state_dict(model.state_dict())
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64) * 5
    assert torch.equal(copy.log_prob(x), model.log_prob(x))


# ----------------------------------------------------------------------------------- invertible mode

def _all_grads(model, x, weights):
    """Gradients (input first, then parameters) of a loss on log_prob, encode and decode outputs."""
    model.zero_grad(set_to_none=True)
    xi = x.clone().requires_grad_(True)
    z, logdet = model.encode(xi)
    loss = model.log_prob(xi).sum() + (z * weights[0]).sum() + (logdet * weights[1]).sum()
    loss = loss + (model.decode(weights[2]) * weights[3]).sum()
    loss.backward()
    return [xi.grad.clone()] + [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("train", [True, False])
def test_invertible_gradients_equal_autograd(train):
    model = _glow(levels=2, depth=2).train(train)
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64)
    weights = (torch.randn(2, 192, dtype=torch.float64), torch.randn(2, dtype=torch.float64),
               torch.randn(2, 192, dtype=torch.float64), torch.randn(2, 3, 8, 8, dtype=torch.float64))
    model.memory = "autograd"
    expected = _all_grads(model, x, weights)
    model.memory = "invertible"
    got = _all_grads(model, x, weights)
    assert len(got) == len(expected) == 1 + len(list(model.parameters()))
    for e, g in zip(expected, got):
        assert e.abs().max() > 0
        assert float((e - g).norm() / e.norm()) < 1e-8


def test_flow_layers_train_through_the_engine_without_log_dets():
    layers = [layer.double() for _ in range(2) for layer in _layers()]
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    for layer in layers:  # initialise the ActNorms along the stack
        x = layer(x)
    x = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    for layer in layers:
        _perturb(layer)
    w = torch.randn(2, 4, 4, 4, dtype=torch.float64)
    params = [p for layer in layers for p in layer.parameters()]

    def grads(engine):
        for p in params:
            p.grad = None
        out = x
        if engine:
            out = invertible_sequence(layers, x)
        else:
            for layer in layers:
                out = layer(out)
        (out * w).sum().backward()
        return [p.grad.clone() for p in params]

    for e, g in zip(grads(False), grads(True)):
        assert float((e - g).norm() / e.norm()) < 1e-10


def test_invertible_mode_saved_memory_does_not_grow_with_depth():
    x = torch.rand(2, 3, 8, 8)

    def saved(depth, memory):
        model = Glow(3, 8, levels=2, depth=depth, hidden=8, memory=memory)
        return saved_tensor_bytes(lambda: model.log_prob(x).sum(), model.parameters())

    assert saved(6, "invertible") == saved(2, "invertible")
    assert saved(6, "autograd") > 2 * saved(2, "autograd") > 4 * saved(2, "invertible")


# ----------------------------------------------------------------------------------- errors

def test_shape_errors():
    with pytest.raises(ValueError, match="2\\*\\*levels"):
        Glow(1, 12, levels=3)
    model = Glow(1, 8, levels=2, depth=1, hidden=4)
    with pytest.raises(ValueError, match="channels"):
        model.encode(torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="2\\*\\*levels"):
        model.encode(torch.rand(1, 1, 8, 6))
    with pytest.raises(ValueError, match="B, C, H, W"):
        model.encode(torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="latents"):
        model.decode(torch.randn(1, 63))
    with pytest.raises(ValueError, match="memory"):
        Glow(1, 8, levels=2, memory="checkpoint")
    # Any valid size encodes (the flow is convolutional); decode is told the size.
    x = torch.rand(1, 1, 16, 8)
    assert torch.allclose(model.decode(model.encode(x)[0], image_size=(16, 8)), x, atol=1e-5)


# ----------------------------------------------------------------------------------- training, sampling

def test_bits_per_dim_decreases_on_natural_patches():
    from learn2invert.data import NaturalPatches

    data = NaturalPatches("train", patch_size=8, length=64, seed=0)
    clean = torch.stack([data[i] for i in range(len(data))])
    gen = torch.Generator().manual_seed(0)
    x = dequantize(clean, generator=gen) - 0.5
    model = Glow(1, 8, levels=2, depth=2, hidden=16, memory="invertible")
    with torch.no_grad():
        model.encode(x)  # ActNorm init on the whole set
        start = float(model.bits_per_dim(x))
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    for step in range(20):
        batch = x[(step * 16) % 64:][:16]
        optimiser.zero_grad(set_to_none=True)
        model.bits_per_dim(batch).backward()
        optimiser.step()
    with torch.no_grad():
        end = float(model.bits_per_dim(x))
    assert torch.isfinite(torch.tensor(end))
    assert end < start - 0.1, (start, end)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sample_shape_and_finite(temperature):
    model = _glow(levels=2, depth=2).float()
    samples = model.sample(5, temperature=temperature)
    assert samples.shape == (5, 3, 8, 8) and samples.dtype == torch.float32
    assert torch.isfinite(samples).all()
    assert not samples.requires_grad
