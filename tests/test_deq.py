"""Deep-equilibrium fixed points: Anderson, per-sample stopping, implicit gradients equal to unrolled ones."""
import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import learn2invert.nn.deq as deq_module
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


# ---------------------------------------------------------------------------------------------
# A map that changed between forward and backward; tensors a closure would cut off
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def warn_afresh(monkeypatch):
    """Forget which map definitions were warned about (once per definition), so each test sees its warnings."""
    monkeypatch.setattr(deq_module, "_WARNED_MAPS", set())


def _loop_problem(case):
    """Two solves in one forward pass: one map and two injections, or two maps (issue: closure over a loop variable)."""
    torch.manual_seed(6)
    maps = [_ConvMap(hidden=4).double().eval() for _ in range(2)]
    if case == "same-map":
        maps = maps[:1] * 2
    xs = [torch.randn(2, 4, 8, 8, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    params = list(nn.ModuleList(maps).parameters())  # deduplicated for the shared map
    weight = torch.randn(2, 1, 8, 8, dtype=torch.float64)
    z0 = torch.zeros(2, 1, 8, 8, dtype=torch.float64)
    return maps, xs, params, weight, z0


def _loop_loss(outs, weight):
    return sum((z * weight).sum() for z in outs)


@pytest.mark.parametrize("backward", ["implicit", "jacobian_free"])
@pytest.mark.parametrize("case", ["same-map", "two-maps"])
def test_a_closure_over_loop_variables_fails_loudly(case, backward, warn_afresh):
    """``lambda z: m(z, xi)`` in a loop: the backward would call the last map on the first fixed point.

    Before the check, on this problem, the parameter gradients were off by 0.98 (same map) and 1.0
    (two maps) against the unrolled reference and ``xi`` got none, silently.
    """
    maps, xs, params, weight, z0 = _loop_problem(case)
    with pytest.warns(UserWarning, match=r"closes over tensors .*\(xi\)"):  # xi requires grad, is no input
        outs = [
            fixed_point(lambda z: m(z, xi), z0, params=list(m.parameters()), forward_solver=TIGHT, backward=backward)[0]
            for m, xi in zip(maps, xs)
        ]
    with pytest.raises(RuntimeError, match="map changed between the forward solve and the backward") as err:
        torch.autograd.grad(_loop_loss(outs, weight), params, allow_unused=True)
    assert "closure over a loop variable" in str(err.value) and "fixed_point(f, z0, *inputs)" in str(err.value)


@pytest.mark.parametrize("form", ["fixed_point", "DEQFixedPoint"])
@pytest.mark.parametrize("case", ["same-map", "two-maps"])
def test_explicit_inputs_in_a_loop_match_unrolled(case, form):
    """The documented forms of the same loop: gradients w.r.t. both injections and all parameters to round-off."""
    maps, xs, params, weight, z0 = _loop_problem(case)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        if form == "fixed_point":
            outs = [fixed_point(m, z0, xi, forward_solver=TIGHT)[0] for m, xi in zip(maps, xs)]
        else:
            outs = [DEQFixedPoint(m, forward_solver=TIGHT)(z0, xi) for m, xi in zip(maps, xs)]
        got = torch.autograd.grad(_loop_loss(outs, weight), [*xs, *params])
    ref = torch.autograd.grad(_loop_loss([_unrolled(m, z0, xi) for m, xi in zip(maps, xs)], weight), [*xs, *params])
    assert _rel_err(ref, got) < 1e-10


def test_unrolled_backward_differentiates_a_closure_as_written():
    """Unrolled builds its graph in the forward: the closure's values at that time are the ones differentiated."""
    maps, xs, params, weight, z0 = _loop_problem("two-maps")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        outs = [
            fixed_point(lambda z: m(z, xi), z0, params=list(m.parameters()), forward_solver=TIGHT, backward="unrolled")[0]
            for m, xi in zip(maps, xs)
        ]
    got = torch.autograd.grad(_loop_loss(outs, weight), [*xs, *params])
    ref = torch.autograd.grad(_loop_loss([_unrolled(m, z0, xi) for m, xi in zip(maps, xs)], weight), [*xs, *params])
    assert _rel_err(ref, got) < 1e-10


def test_a_tensor_modified_in_place_after_the_forward_is_caught():
    """A closure over a constant tensor (no gradient wanted, so no warning) that is changed before backward."""
    w, b, c = _tanh_problem()
    c.requires_grad_(True)
    z, _ = fixed_point(lambda z, inj: _tanh_map(z, inj, 0.5, w, b), torch.zeros_like(c), c, forward_solver=TIGHT)
    with torch.no_grad():
        b.add_(0.01)  # not saved for backward, so autograd's version check cannot see it
    with pytest.raises(RuntimeError, match="modified in place"):
        torch.autograd.grad(z.sum(), c)


def test_an_unconverged_forward_solve_passes_the_check():
    """The bound is relative to the residual the forward reported, so stopping short of tol is no error."""
    w, b, c = _tanh_problem()
    c.requires_grad_(True)
    z, stats = fixed_point(
        lambda z, inj: _tanh_map(z, inj, 0.5, w, b), torch.zeros_like(c), c, forward_solver=FixedPointSolver(tol=1e-12, max_iter=3)
    )
    assert not bool(stats.converged.any()) and float(stats.residual.min()) > 1e-3
    (g,) = torch.autograd.grad(z.sum(), c)
    assert bool(torch.isfinite(g).all())


def test_closed_over_tensors_missing_from_params_are_warned_about_once(warn_afresh):
    w, b, c = _tanh_problem()
    w.requires_grad_(True), b.requires_grad_(True), c.requires_grad_(True)
    fmap = _ConvMap().double().eval()
    x = torch.randn(2, 1, 8, 8, dtype=torch.float64, requires_grad=True)
    inj = torch.randn(2, 4, 8, 8, dtype=torch.float64)

    def solve_tanh(params):
        return fixed_point(lambda z, inj: _tanh_map(z, inj, 0.5, w, b), torch.zeros_like(c), c, params=params)

    with pytest.warns(UserWarning, match=r"\(b\)"):  # w is listed, b is not
        solve_tanh([w])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        solve_tanh([w])  # the same definition again: warned once already
        solve_tanh([w, b])  # everything listed
        with torch.no_grad():  # no gradient wanted at all
            fixed_point(lambda z: fmap(z, inj), torch.zeros_like(x))
    # A module in the closure whose parameters are not listed (params default to none for a lambda).
    with pytest.warns(UserWarning, match=r"fmap\.data\.0\.bias"):
        fixed_point(lambda z, inj: fmap(z, inj), torch.zeros_like(x), inj + 0 * x)
    # A bound method of a module: its parameters are not found by default either.
    with pytest.warns(UserWarning, match=r"self\.mix"):
        fixed_point(fmap.forward, torch.zeros_like(x), inj + 0 * x)


def test_luser_and_deq4ip_pass_the_checks_with_their_loose_solves():
    """Their maps are modules with explicit inputs: no warning, and a forward that stops short of tol raises nothing."""
    from learn2invert.operators import GaussianBlur
    from learn2invert.solvers.deq4ip import DEQ4IP
    from learn2invert.solvers.unrolled import unrolled_solver

    torch.manual_seed(0)
    op = GaussianBlur(kernel_size=3, sigma=1.0)
    x = torch.rand(2, 3, 8, 8)
    y = op.A(x)
    luser = unrolled_solver(3, prox="luser", folds=2, shared=False, init="measurement", prox_params={"features": 8, "groups": 4})
    deq4ip = DEQ4IP(3, depth=3, features=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for solver in (luser, deq4ip):
            loss = ((solver(y, op)[-1] - x) ** 2).sum()
            loss.backward()
            assert solver.diagnostics()["fp_residual_max"] > 1e-3  # not converged: the case the bound allows for
            assert all(bool(torch.isfinite(p.grad).all()) for p in solver.parameters() if p.grad is not None)


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_sn_conv_normalises_the_reshaped_weight(dims):
    conv = sn_conv(3, 5, 3, dims=dims).eval()
    x = torch.randn(2, 3, *([6] * dims))
    assert conv(x).shape == (2, 5, *([6] * dims))
    sigma = torch.linalg.matrix_norm(conv.weight.detach().reshape(5, -1), 2)
    assert abs(float(sigma) - 1) < 1e-2
