"""Deep-equilibrium fixed points: Anderson, per-sample stopping, implicit gradients equal to unrolled ones."""
import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from learn2invert.nn.deq import (
    DEQFixedPoint,
    FixedPointSolver,
    FixedPointStats,
    anderson,
    fixed_point,
    fixed_point_iteration,
    sn_conv,
)

TIGHT = FixedPointSolver(tol=1e-13, max_iter=400)  # float64: solve to round-off


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _tanh_problem(batch=3, dim=32):
    """z = 0.5 tanh(W z + b) + c with symmetric W, eigenvalues in [-1.8, 1.8]: contraction rate up to 0.9."""
    q, _ = torch.linalg.qr(torch.randn(dim, dim, dtype=torch.float64))
    w = q @ torch.diag(torch.linspace(-1.8, 1.8, dim, dtype=torch.float64)) @ q.T
    b = 0.1 * torch.randn(dim, dtype=torch.float64)
    c = 0.1 * torch.randn(batch, dim, dtype=torch.float64)
    return w, b, c


def _tanh_map(z, c, gain, w, b):
    return gain * torch.tanh(z @ w.T + b) + c


class _ConvMap(nn.Module):
    """A LUSER proximal block in miniature: f(z, inj) = Mix(Data(z) ++ inj), spectrally normalised convolutions.

    No GroupNorm on the recursive path: GN divides by a standard deviation that can get small,
    and the plain-iteration reference of these tests needs a map that is a contraction.
    """

    def __init__(self, channels=1, hidden=4):
        super().__init__()
        self.data = nn.Sequential(sn_conv(channels, hidden, 3), nn.Tanh())
        self.mix = nn.Sequential(sn_conv(2 * hidden, hidden, 3), nn.Tanh(), sn_conv(hidden, channels, 3))

    def forward(self, z, inj):
        return self.mix(torch.cat([self.data(z), inj], dim=1))


def _inject(channels=1, hidden=4):
    return nn.Sequential(sn_conv(channels, hidden, 3), nn.GroupNorm(2, hidden), nn.LeakyReLU(0.1))


def _unrolled(f, z0, *inputs, steps=300):
    """The reference: plain iteration under autograd, long enough to reach the fixed point to round-off."""
    z = z0
    for _ in range(steps):
        z = f(z, *inputs)
    return z


def _rel_err(a, b):
    return max(float((u - v).norm() / u.norm()) for u, v in zip(a, b))


def _sn_modules(module):
    return [
        p for m in module.modules() if parametrize.is_parametrized(m) for plist in m.parametrizations.values() for p in plist
    ]


def _sn_state(module):
    return [{k: b.clone() for k, b in p.named_buffers(recurse=False)} for p in _sn_modules(module)]


def _load_sn_state(module, state):
    # Rebind (not copy into) the buffers, so graphs that saved the previous ones stay valid.
    for p, buffers in zip(_sn_modules(module), state):
        for k, t in buffers.items():
            setattr(p, k, t.clone())


# ---------------------------------------------------------------------------------------------
# Solvers
# ---------------------------------------------------------------------------------------------


def test_anderson_converges_faster_than_plain_iteration():
    w, b, c = _tanh_problem()
    f = lambda z: _tanh_map(z, c, 0.5, w, b)  # noqa: E731
    z0 = torch.zeros_like(c)
    za, sa = anderson(f, z0, tol=1e-10, max_iter=300)
    zp, sp = fixed_point_iteration(f, z0, tol=1e-10, max_iter=300)
    for stats in (sa, sp):
        assert isinstance(stats, FixedPointStats)
        assert stats.iterations.shape == stats.residual.shape == stats.converged.shape == (3,)
        assert stats.iterations.dtype == torch.long and stats.converged.dtype == torch.bool
        assert bool(stats.converged.all()) and float(stats.residual.max()) <= 1e-10
    # The reported residual is the returned iterate's, and it is a fixed point of the map.
    fz = f(za)
    assert torch.allclose((fz - za).norm(dim=1) / fz.norm(dim=1), sa.residual, rtol=1e-6, atol=0)
    assert float((za - zp).norm() / zp.norm()) < 1e-8
    assert int(sa.iterations.sum()) * 3 < int(sp.iterations.sum()) * 2, (sa.iterations, sp.iterations)


def test_anderson_does_not_depend_on_the_scale_of_z():
    """The regularisation is relative, so an adjoint vector of size 1e-12 is solved like one of size 1."""
    w, b, c = _tanh_problem()
    runs = []
    for scale in (1.0, 1e-12):
        scaled = lambda z: scale * _tanh_map(z / scale, c, 0.5, w, b)  # noqa: E731
        z, stats = anderson(scaled, torch.zeros_like(c), tol=1e-10, max_iter=300)
        runs.append((z / scale, stats))
    assert torch.equal(runs[0][1].iterations, runs[1][1].iterations)
    assert float((runs[0][0] - runs[1][0]).norm() / runs[0][0].norm()) < 1e-9


def test_per_sample_stopping_freezes_a_sample_that_starts_at_its_fixed_point():
    w, b, c = _tanh_problem()
    calls = []

    def f(z):
        calls.append(1)
        return _tanh_map(z, c, 0.5, w, b)

    with torch.no_grad():
        z_star, _ = anderson(f, torch.zeros_like(c), tol=1e-14, max_iter=300)
    z0 = torch.zeros_like(c)
    z0[1] = z_star[1]
    calls.clear()
    z, stats = anderson(f, z0, tol=1e-10, max_iter=300)
    assert int(stats.iterations[1]) == 1  # its first residual already met the tolerance
    assert torch.equal(z[1], z0[1])  # and it was never touched again
    assert bool((stats.iterations[[0, 2]] > 5).all())
    assert len(calls) == int(stats.iterations.max())  # the loop ended when the last sample converged


def test_unconverged_solve_returns_its_best_iterate():
    w, b, c = _tanh_problem()
    f = lambda z: _tanh_map(z, c, 0.5, w, b)  # noqa: E731
    for solve in (anderson, fixed_point_iteration):
        z, stats = solve(f, torch.zeros_like(c), tol=1e-12, max_iter=4)
        fz = f(z)
        assert not bool(stats.converged.any()) and stats.iterations.tolist() == [4, 4, 4]
        assert torch.allclose((fz - z).norm(dim=1) / fz.norm(dim=1), stats.residual, rtol=1e-9, atol=0)
    summary = stats.summary()
    assert set(summary) == {"iterations", "residual", "residual_max", "converged"} and summary["iterations"] == 4.0


# ---------------------------------------------------------------------------------------------
# Implicit differentiation
# ---------------------------------------------------------------------------------------------


def test_functional_fixed_point_gradients_match_unrolled():
    """A plain callable closing over W and b (listed as params), a non-tensor argument: gradients w.r.t. c, W and b."""
    w, b, c = _tanh_problem()
    w.requires_grad_(True), b.requires_grad_(True), c.requires_grad_(True)
    weight = torch.randn_like(c)

    def f(z, inj, gain):
        return _tanh_map(z, inj, gain, w, b)

    z, stats = fixed_point(f, torch.zeros_like(c), c, 0.5, params=[w, b], forward_solver=TIGHT, backward_solver=TIGHT)
    assert bool(stats.converged.all())
    got = torch.autograd.grad((z * weight).sum(), [c, w, b])
    ref = torch.autograd.grad((_unrolled(f, torch.zeros_like(c), c, 0.5) * weight).sum(), [c, w, b])
    assert _rel_err(ref, got) < 1e-6


def test_implicit_gradients_of_a_conv_map_match_unrolled():
    torch.manual_seed(1)
    fmap, inject = _ConvMap().double().eval(), _inject().double().eval()
    deq = DEQFixedPoint(fmap, forward_solver=TIGHT, backward_solver=TIGHT)
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn_like(x)
    params = list(fmap.parameters()) + list(inject.parameters())

    z = deq(torch.zeros_like(x), inject(x))
    (z * weight).sum().backward()  # gradients land in .grad, as for any layer
    got = [x.grad, *[p.grad for p in params]]
    ref = torch.autograd.grad((_unrolled(fmap, torch.zeros_like(x), inject(x)) * weight).sum(), [x, *params])
    assert _rel_err(ref, got) < 1e-6
    fwd, bwd = deq.last_forward_stats, deq.last_backward_stats
    assert bool(fwd.converged.all()) and bool(bwd.converged.all())
    assert fwd.iterations.shape == bwd.iterations.shape == (2,) and int(bwd.iterations.min()) > 1


def _two_stages(x, stages):
    """LUSER-style loop: d_{k+1} = d_k + z*_k with z*_k the fixed point injected with Inject_k(d_k)."""
    d = x
    for solve, inject in stages:
        d = d + solve(torch.zeros_like(x), inject(d))
    return d


@pytest.mark.parametrize("shared", [False, True], ids=["different-maps", "shared-map"])
def test_two_stage_gradients_match_unrolled(shared):
    torch.manual_seed(2)
    maps = [_ConvMap().double().eval() for _ in range(2)]
    injects = [_inject().double().eval() for _ in range(2)]
    if shared:
        maps, injects = maps[:1] * 2, injects[:1] * 2
    deqs = [DEQFixedPoint(fmap, forward_solver=TIGHT, backward_solver=TIGHT) for fmap in maps[: 1 if shared else 2]]
    deqs = deqs * 2 if shared else deqs
    params = list(nn.ModuleList(maps + injects).parameters())  # deduplicated when shared
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn_like(x)

    out = _two_stages(x, list(zip(deqs, injects)))
    got = torch.autograd.grad((out * weight).sum(), [x, *params])
    unrolled_stages = [(lambda z0, inj, fmap=fmap: _unrolled(fmap, z0, inj), inject) for fmap, inject in zip(maps, injects)]
    ref_out = _two_stages(x, unrolled_stages)
    ref = torch.autograd.grad((ref_out * weight).sum(), [x, *params])
    assert _rel_err(ref, got) < 1e-6


def test_spectral_norm_in_training_mode_each_call_differentiates_its_own_map():
    """Shared map in training mode: each call updates the spectral-norm estimate once; its backward uses that one."""
    torch.manual_seed(3)
    fmap, inject = _ConvMap().double().train(), _inject().double().eval()
    for p in _sn_modules(fmap):  # a fresh estimate moves visibly with every power iteration
        p._u.copy_(nn.functional.normalize(torch.randn_like(p._u), dim=0))
    deq = DEQFixedPoint(fmap, forward_solver=TIGHT, backward_solver=TIGHT)
    params = list(fmap.parameters()) + list(inject.parameters())
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn_like(x)

    states = []
    d = x
    for _ in range(2):
        d = d + deq(torch.zeros_like(x), inject(d))
        states.append(_sn_state(fmap))
    got = torch.autograd.grad((d * weight).sum(), [x, *params])
    assert any(not torch.equal(a["_u"], b["_u"]) for a, b in zip(*states))

    def reference(stage_states):
        fmap.eval()
        d = x
        for state in stage_states:
            _load_sn_state(fmap, state)
            d = d + _unrolled(fmap, torch.zeros_like(x), inject(d))
        return torch.autograd.grad((d * weight).sum(), [x, *params])

    assert _rel_err(reference(states), got) < 1e-6
    assert _rel_err(reference([states[1], states[1]]), got) > 1e-8  # the test can tell the states apart (~1e-4)


def test_jacobian_free_backward_points_the_right_way():
    torch.manual_seed(4)
    fmap, inject = _ConvMap().double().eval(), _inject().double().eval()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn_like(x)
    params = list(fmap.parameters()) + list(inject.parameters())

    def flat_grad(backward):
        deq = DEQFixedPoint(fmap, forward_solver=TIGHT, backward=backward)
        z = deq(torch.zeros_like(x), inject(x))
        grads = torch.autograd.grad((z * weight).sum(), [x, *params])
        return torch.cat([g.flatten() for g in grads]), deq

    exact, _ = flat_grad("implicit")
    jfb, deq = flat_grad("jacobian_free")
    assert deq.last_backward_stats is None
    assert float(nn.functional.cosine_similarity(exact, jfb, dim=0)) > 0
    unrolled, _ = flat_grad("unrolled")
    assert float((unrolled - exact).norm() / exact.norm()) < 1e-6


def test_without_gradients_the_solve_only_records_its_stats():
    fmap = _ConvMap().eval()
    deq = DEQFixedPoint(fmap)
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        z = deq(torch.zeros_like(x), _inject()(x))
    assert z.grad_fn is None and z.shape == x.shape
    assert deq.last_forward_stats.residual.shape == (2,) and bool(deq.last_forward_stats.converged.all())


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_sn_conv_normalises_the_reshaped_weight(dims):
    conv = sn_conv(3, 5, 3, dims=dims).eval()
    x = torch.randn(2, 3, *([6] * dims))
    assert conv(x).shape == (2, 5, *([6] * dims))
    sigma = torch.linalg.matrix_norm(conv.weight.detach().reshape(5, -1), 2)
    assert abs(float(sigma) - 1) < 1e-2
