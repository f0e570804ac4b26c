"""One data-consistency gradient for every solver: equal to the old A^T(y - A x)/sigma^2 on linear
operators, the true log-likelihood gradient on the nonlinear ones (phase retrieval, Beer-Lambert
CT with Poisson counts), and invertible i-RIM training equal to autograd with them."""
from pathlib import Path

import pytest
import torch

from learn2invert import operators
from learn2invert.operators import (BeerLambertCT, NoGradientError, NonlinearOperator, PhaseRetrieval, data_gradient,
                                    likelihood_gradient)
from learn2invert.solvers.irim import IRIM
from learn2invert.solvers.rim import RIM
from learn2invert.solvers.unrolled import UnrolledProximalGradient
from learn2invert.nn.prox.resnet import ResNetProx
from learn2invert.train.config import load_config
from learn2invert.operators.generator import Measurement

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
F64 = torch.float64


def _linear_operators():
    g = torch.Generator().manual_seed(0)
    mask = operators.masks.random_mask((8,), 4.0, 0.25, seed=0)
    maps = operators.simulated_coil_maps(4, (8, 8), dtype=F64)[None]
    return [
        (operators.Denoising(), (2, 1, 8, 8)),
        (operators.GaussianBlur(5, 1.0), (2, 3, 8, 8)),
        (operators.Inpainting(torch.rand(8, 8, generator=g) < 0.5), (2, 1, 8, 8)),
        (operators.SuperResolution(2), (2, 1, 8, 8)),
        (operators.RandomProjection(20, 64, "gaussian", seed=0), (2, 1, 8, 8)),
        (operators.RandomProjection(20, 64, "fourier", seed=0), (2, 1, 8, 8)),
        (operators.SingleCoilMRI(mask), (2, 2, 8, 8)),
        (operators.MultiCoilMRI(mask, maps), (2, 2, 8, 8)),
        (operators.ParallelBeamCT(8, 6), (2, 1, 8, 8)),
    ]


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_new_path_is_bit_identical_to_the_old_formula_on_linear_operators(dtype):
    g = torch.Generator().manual_seed(1)
    for op, shape in _linear_operators():
        op = op.to(dtype)
        x = torch.randn(shape, generator=g, dtype=dtype)
        y = op.A(torch.randn(shape, generator=g, dtype=dtype))
        s2 = torch.rand((shape[0], 1, 1, 1), generator=g, dtype=dtype) + 0.1
        old = op.A_adjoint(y - op.A(x)) / s2
        name = type(op).__name__
        assert torch.equal(data_gradient(op, x, y, s2), old), name
        assert torch.equal(data_gradient(op, x, y), op.A_adjoint(y - op.A(x))), name  # unrolled's undivided step
        assert torch.equal(likelihood_gradient(op, x, y, s2.sqrt()), op.A_adjoint(y - op.A(x)) / s2.sqrt() ** 2), name


def test_rim_and_irim_data_terms_equal_the_old_formula():
    mask = operators.masks.random_mask((8,), 4.0, 0.25, seed=0)
    op = operators.SingleCoilMRI(mask)
    x, y = torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
    s2 = torch.full((2, 1, 1, 1), 0.01)
    irim = IRIM(channels=2, steps=1, state_channels=4, hidden_channels=4, downsampling=(1,))
    assert torch.equal(irim.likelihood_gradient(x, y, op, s2), op.A_adjoint(y - op.A(x)) / (s2 + irim.eps))
    rim = RIM(channels=2, architecture="mri", steps=1, conv_channels=4, hidden_channels=4, output_init="random")
    assert torch.equal(rim.latent_gradient(x, y, op, s2), op.A_adjoint(y - op.A(x)) / (s2 + rim.eps))


# ------------------------------------------------------------------------------------ the operators
def _jvp(op, x, u):
    return torch.autograd.functional.jvp(op.A, x, u)[1]


@pytest.mark.parametrize("complex_input", [False, True])
def test_phase_retrieval_shapes_vjp_and_dot_product(complex_input):
    g = torch.Generator().manual_seed(2)
    op = PhaseRetrieval(oversampling=2, complex_input=complex_input)
    shape = (2, 2, 6, 5) if complex_input else (2, 3, 6, 5)
    x = torch.randn(shape, generator=g, dtype=F64)
    y = op.A(x)
    assert y.shape == ((2, 1, 12, 10) if complex_input else (2, 3, 12, 10)) and y.dtype == F64
    # Parseval: the orthonormal DFT of the zero-padded image keeps its energy.
    assert torch.allclose(y.pow(2).sum(), x.pow(2).sum(), rtol=1e-12)
    v, u = torch.randn(y.shape, generator=g, dtype=F64), torch.randn(shape, generator=g, dtype=F64)
    # The closed-form J^T v is autograd's vector-Jacobian product and the adjoint of the Jacobian.
    xg = x.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(op.A(xg), xg, v)
    assert torch.allclose(op.A_vjp(x, v), auto, rtol=0, atol=1e-12)
    lhs, rhs = torch.sum(_jvp(op, x, u) * v), torch.sum(u * op.A_vjp(x, v))
    assert abs(float(lhs - rhs)) / abs(float(lhs)) < 1e-12
    assert op.A_dagger(y).shape == shape
    # Where F x = 0 the modulus has no derivative: the gradient stays finite (subgradient 0).
    assert torch.isfinite(op.A_vjp(torch.zeros(shape, dtype=F64), v)).all()


def test_beer_lambert_ct_poisson_gradient_dot_product_and_start():
    g = torch.Generator().manual_seed(3)
    op = BeerLambertCT(12, 8, attenuation=0.1).to(F64)
    x = torch.rand((2, 1, 12, 12), generator=g, dtype=F64)
    lam = op.A(x)
    assert lam.shape == (2, 1, 8, op.radon.n_detectors) and bool((lam > 0).all() and (lam <= 1).all())
    # Linear part: the Radon transform's exact adjoint (float64 dot-product test).
    assert operators.adjoint_mismatch(op.radon, x, generator=g) < 1e-12
    # The Poisson log-likelihood gradient, counts of gain s2: a R^T (lambda - y) / s2.
    s2 = 1e-3
    y = s2 * torch.poisson(lam / s2, generator=g)
    x1 = torch.rand(x.shape, generator=g, dtype=F64)
    expected = op.attenuation * op.radon.A_adjoint(op.A(x1) - y) / s2
    grad = data_gradient(op, x1, y, s2)
    assert torch.allclose(grad, expected, rtol=1e-12, atol=1e-9)
    # ... which is minus the gradient of the Poisson negative log-likelihood, by autograd.
    xg = x1.clone().requires_grad_(True)
    lg = op.A(xg)
    nll = torch.sum(lg - y * torch.log(lg)) / s2
    (auto,) = torch.autograd.grad(nll, xg)
    assert torch.allclose(grad, -auto, rtol=1e-12, atol=1e-9)
    # Gaussian as a named option on the same operator.
    gauss = data_gradient(op, x1, y, s2, likelihood="gaussian")
    lg = op.A(xg)
    (auto,) = torch.autograd.grad(0.5 * torch.sum((lg - y) ** 2) / s2, xg)
    assert torch.allclose(gauss, -auto, rtol=1e-12, atol=1e-12)
    # Log-transform + FBP gives a usable start (well under the error of a zero image).
    assert float((op.A_dagger(lam) - x).norm() / x.norm()) < 0.6
    with pytest.raises(ValueError, match="likelihood"):
        data_gradient(op, x1, y, s2, likelihood="laplace")


def test_data_gradient_is_differentiable_twice_and_works_under_no_grad():
    op = BeerLambertCT(8, 5, attenuation=0.2).to(F64)
    x = torch.rand(1, 1, 8, 8, dtype=F64, requires_grad=True)
    y = op.A(torch.rand(1, 1, 8, 8, dtype=F64)).detach()
    g = data_gradient(op, x, y, 0.01)
    assert g.requires_grad  # kept in the graph: training back-propagates through the data term
    assert torch.autograd.gradcheck(lambda t: data_gradient(op, t, y, 0.01), (x,))
    with torch.no_grad():
        g0 = data_gradient(op, x.detach(), y, 0.01)
    assert not g0.requires_grad and torch.allclose(g0, g.detach())


class _NumpyOperator(NonlinearOperator):
    """A nonlinear model computed outside torch: no vjp, no autograd."""

    def A(self, x):
        return torch.from_numpy(x.detach().numpy() ** 2)


def test_a_nonlinear_operator_without_a_gradient_is_one_clear_error():
    x = torch.rand(1, 1, 4, 4, dtype=F64)
    with pytest.raises(NoGradientError, match="_NumpyOperator: cannot take the data-consistency gradient"):
        data_gradient(_NumpyOperator(), x, x, 1.0)
    rim = RIM(channels=1, steps=1, conv_channels=4, hidden_channels=4, norm="none", output_init="random").double()
    with pytest.raises(NoGradientError, match="_NumpyOperator"):
        rim(x, _NumpyOperator(), x0=x)
    with pytest.raises(NoGradientError, match="_NumpyOperator is nonlinear and has no A_dagger"):
        rim(x, _NumpyOperator())


# ------------------------------------------------------------------------- i-RIM invertible training
def _irim_grads(model, y, op, x0, target):
    model.zero_grad(set_to_none=True)
    est = model(y, op, x0=x0, sigma=0.1)[-1]
    torch.mean((est - target) ** 2).backward()
    return est.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("name", ["phase_retrieval", "beer_lambert_ct"])
def test_irim_invertible_gradients_equal_autograd_with_nonlinear_operators(name):
    torch.manual_seed(4)
    if name == "phase_retrieval":
        op, channels = PhaseRetrieval(), 1
        x = torch.rand(2, 1, 8, 8, dtype=F64)
        y = op.A(x) + 0.01 * torch.randn(op.A(x).shape, dtype=F64)
    else:
        op, channels = BeerLambertCT(8, 6, attenuation=0.2).to(F64), 1
        x = torch.rand(2, 1, 8, 8, dtype=F64)
        y = 1e-3 * torch.poisson(op.A(x) / 1e-3)
    x0 = 0.5 + 0.1 * torch.randn(x.shape, dtype=F64)  # a generic start: no zero Fourier coefficients
    model = IRIM(channels=channels, steps=2, state_channels=4, hidden_channels=4, downsampling=(1, 2),
                 identity_init=False).double()
    model.memory = "autograd"
    est_a, grads_a = _irim_grads(model, y, op, x0, x)
    model.memory = "invertible"
    est_i, grads_i = _irim_grads(model, y, op, x0, x)
    torch.testing.assert_close(est_i, est_a, rtol=0, atol=1e-10)
    errors = [float((ga - gi).norm() / ga.norm()) for ga, gi in zip(grads_a, grads_i)]
    assert max(errors) < 1e-6, errors
    assert all(g.abs().sum() > 0 for g in grads_i)  # phi included


def test_rim_and_unrolled_run_on_nonlinear_operators_from_their_start():
    torch.manual_seed(5)
    op = PhaseRetrieval()
    x = torch.rand(2, 1, 8, 8)
    y = op.A(x)
    rim = RIM(channels=1, steps=2, conv_channels=4, hidden_channels=4, norm="none", output_init="random")
    assert rim(y, op)[-1].shape == x.shape  # starts from A_dagger(y)
    solver = UnrolledProximalGradient([ResNetProx(1, features=4)], folds=2, step_units="lipschitz")
    out = solver(y, op)[-1]
    assert out.shape == x.shape and torch.isfinite(out).all()


# ------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("config", ["phase_retrieval_rim.yaml", "beer_lambert_ct_irim.yaml"])
def test_nonlinear_configs_simulate_and_run(config):
    cfg = load_config(CONFIGS / config)
    shape = (1, cfg["data"]["patch_size"], cfg["data"]["patch_size"])
    measurement = Measurement(cfg, shape)
    x = torch.rand((2, *shape))
    y, op, sigma = measurement(x, torch.Generator().manual_seed(0))
    assert torch.isfinite(y).all() and sigma.shape == (2, 1, 1, 1)
    if cfg["operator"]["name"] == "beer_lambert_ct":
        # Poisson counts of gain sigma^2: every measurement is a whole number of counts.
        counts = y / sigma**2
        assert torch.allclose(counts, counts.round(), atol=1e-3) and (y >= 0).all()
        assert float((y - op.A(x)).std()) < 2 * float(sigma.max())


def test_poisson_counts_have_the_configured_noise_level():
    cfg = load_config(CONFIGS / "beer_lambert_ct_irim.yaml")
    cfg["operator"]["noise_sigma"] = 0.05
    measurement = Measurement(cfg, (1, 32, 32))
    x = torch.zeros(4, 1, 32, 32)  # no attenuation: every ray keeps A(x) = 1, variance sigma^2
    y, op, sigma = measurement(x, torch.Generator().manual_seed(0))
    assert abs(float((y - 1).std()) - 0.05) < 0.005 and torch.allclose(sigma, torch.full_like(sigma, 0.05))


@pytest.mark.parametrize("config", ["phase_retrieval_rim.yaml", "beer_lambert_ct_irim.yaml"])
def test_nonlinear_configs_train_and_validate(config, tmp_path):
    from learn2invert.train import loop

    size = "16" if config.startswith("phase") else "8"
    overrides = (f"data.patch_size={size}", "data.train_length=8", "data.val_length=4", "train.batch_size=4",
                 "train.max_steps=2", "solver.params.steps=2")
    result = loop.train(CONFIGS / config, tmp_path / "run", overrides=overrides, show_progress=False)
    assert (Path(result["run_dir"]) / "model.safetensors").is_file()


# ------------------------------------------------------------------------------ deepinv physics
class _DeepinvStylePhysics(torch.nn.Module):
    """A nonlinear physics shaped as deepinv's ``Physics``: ``A(x) = |B x|^2`` and deepinv's default
    ``A_vjp`` by ``torch.func.vjp``; no ``A_adjoint``, no ``linear`` flag."""

    def __init__(self):
        super().__init__()
        self.B = torch.randn(40, 64, generator=torch.Generator().manual_seed(0), dtype=F64) / 8

    def A(self, x):  # noqa: N802
        return (x.flatten(1) @ self.B.T).pow(2).reshape(x.shape[0], 1, 40)

    def A_vjp(self, x, v):  # noqa: N802
        _, vjp = torch.func.vjp(self.A, x)
        return vjp(v)[0]


def test_deepinv_style_physics_take_their_vjp_and_train_the_irim_invertibly():
    torch.manual_seed(6)
    op = _DeepinvStylePhysics()
    x = torch.rand(2, 1, 8, 8, dtype=F64)
    y = op.A(x)
    x0 = 0.5 + 0.1 * torch.randn(x.shape, dtype=F64)
    xg = x0.clone().requires_grad_(True)
    (auto,) = torch.autograd.grad(-0.5 * torch.sum((op.A(xg) - y) ** 2), xg)
    torch.testing.assert_close(data_gradient(op, x0, y), auto, rtol=1e-12, atol=1e-14)
    # An A_adjoint that is not the Jacobian's transpose is never used where A_vjp exists.
    op.A_adjoint = lambda v: torch.zeros_like(x0)
    torch.testing.assert_close(data_gradient(op, x0, y), auto, rtol=1e-12, atol=1e-14)
    model = IRIM(channels=1, steps=2, state_channels=4, hidden_channels=4, downsampling=(1, 2),
                 identity_init=False).double()
    model.memory = "autograd"
    _, grads_a = _irim_grads(model, y, op, x0, x)
    model.memory = "invertible"
    _, grads_i = _irim_grads(model, y, op, x0, x)
    assert max(float((a - b).norm() / a.norm()) for a, b in zip(grads_a, grads_i)) < 1e-6


def test_real_deepinv_physics_plug_in():
    dinv = pytest.importorskip("deepinv")
    x = torch.rand(1, 1, 6, 6, dtype=F64)
    nonlinear = dinv.physics.Physics(A=lambda t: torch.exp(-t))
    y = nonlinear.A(torch.rand(1, 1, 6, 6, dtype=F64))
    expected = -torch.exp(-x) * (y - torch.exp(-x))  # J^T (y - A x), J = diag(-exp(-x))
    torch.testing.assert_close(data_gradient(nonlinear, x, y), expected)
    linear = dinv.physics.Denoising()
    assert torch.equal(data_gradient(linear, x, y, 0.5), linear.A_adjoint(y - linear.A(x)) / 0.5)


def test_shipped_mri_models_run_unchanged_on_deepinvs_mri_physics():
    # deepinv's MRI (x and y as (B, 2, H, W) real/imaginary, centred orthonormal FFT) is the same
    # forward model as SingleCoilMRI: the shipped models take it as it is.
    dinv = pytest.importorskip("deepinv")
    from learn2invert import operators, pretrained

    x = torch.rand(1, 2, 64, 64, generator=torch.Generator().manual_seed(0))
    mask = operators.masks.random_mask((64,), acceleration=4, center_fraction=0.08, seed=0)  # (64,) columns
    ours = operators.SingleCoilMRI(mask)
    theirs = dinv.physics.MRI(mask=mask.reshape(1, 64).expand(64, 64).float(), img_size=(2, 64, 64))
    y = ours.A(x)
    torch.testing.assert_close(theirs.A(x), y, rtol=0, atol=1e-6)
    torch.testing.assert_close(theirs.A_adjoint(y), ours.A_adjoint(y), rtol=0, atol=1e-6)
    for name in ("mri_rim", "mri_irim", "mri_admm"):
        model = pretrained.load(name)
        with torch.no_grad():
            torch.testing.assert_close(model(y, theirs, sigma=0.005)[-1], model(y, ours, sigma=0.005)[-1],
                                       rtol=0, atol=1e-4)
