"""Any operator, sensibly scaled: a user's class from a config, operators with only A and A_adjoint
in every solver, no A_adjoint(y) when x0 is given, and step sizes in units of 1/||A||^2."""
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from learn2invert import operators
from learn2invert.nn.prox.resnet import ResNetProx
from learn2invert.solvers.admm import ADMMNet
from learn2invert.solvers.classical import tikhonov
from learn2invert.solvers.irim import IRIM
from learn2invert.solvers.deq4ip import DEQ4IP
from learn2invert.solvers.rim import RIM
from learn2invert.solvers.tv import tv_reconstruct
from learn2invert.solvers.unrolled import UnrolledProximalGradient
from learn2invert.train import loop
from learn2invert.train.config import ConfigError, load_config
from learn2invert.operators.generator import Measurement

SMOKE = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"

USER_MODULE = '''
import torch


class Subsample:
    """A user's linear operator, not an nn.Module and without A_adjoint_A: keep every k-th column."""

    def __init__(self, every, image_shape):
        self.every, self.image_shape = every, image_shape

    def A(self, x):
        return x[..., :: self.every]

    def A_adjoint(self, y):
        out = y.new_zeros((*y.shape[:-1], self.image_shape[-1]))
        out[..., :: self.every] = y
        return out


class Squares:
    """A nonlinear model computed in NumPy: no A_adjoint, no A_vjp, nothing autograd can differentiate."""

    linear = False

    def A(self, x):
        return torch.from_numpy(x.numpy() ** 2)
'''


@pytest.fixture()
def user_module(tmp_path, monkeypatch):
    (tmp_path / "my_physics.py").write_text(textwrap.dedent(USER_MODULE))
    (tmp_path / "broken_physics.py").write_text("import not_a_real_package_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_physics"
    for name in ("my_physics", "broken_physics"):
        sys.modules.pop(name, None)


def test_a_users_operator_class_trains_from_a_config(user_module, tmp_path):
    overrides = ("operator.name=my_physics:Subsample", "operator.params={every: 2}", "operator.noise_sigma=0.05",
                 "data.train_length=16", "data.val_length=4", "data.patch_size=8", "train.batch_size=8",
                 "train.max_steps=2", "solver.params.steps=2", "solver.params.conv_channels=4",
                 "solver.params.hidden_channels=4", "solver.params.init=adjoint")
    config = load_config(SMOKE, overrides)
    y, op, sigma = Measurement(config, (1, 8, 8))(torch.rand(2, 1, 8, 8), torch.Generator().manual_seed(0))
    assert type(op).__name__ == "Subsample" and op.image_shape == (1, 8, 8) and y.shape == (2, 1, 8, 4)
    result = loop.train(SMOKE, tmp_path / "run", overrides=overrides, show_progress=False)
    assert (Path(result["run_dir"]) / "model.safetensors").is_file()


def test_an_operator_class_that_fails_to_import_is_one_clear_error(user_module):
    for name, what in (("broken_physics:Op", "ModuleNotFoundError"), ("my_physics:Missing", "AttributeError"),
                       ("no_such_module_abc:Op", "ModuleNotFoundError")):
        config = load_config(SMOKE, (f"operator.name={name}",))
        with pytest.raises(ConfigError, match=f"'operator.name': cannot import the operator class '{name}' \\({what}"):
            Measurement(config, (1, 16, 16))
    config = load_config(SMOKE, ("operator.name=torch:Tensor",))
    with pytest.raises(ConfigError, match="has no method A"):
        Measurement(config, (1, 16, 16))
    config = load_config(SMOKE, ("operator.name=my_physics:Squares", "operator.params={}"))
    with pytest.raises(ConfigError, match="Squares: cannot take the data-consistency gradient"):
        Measurement(config, (1, 16, 16))


class _Recording:
    """A linear operator (column subsampling) with only A and A_adjoint that records A_adjoint's inputs."""

    def __init__(self, width=8):
        self.width, self.adjoint_inputs = width, []

    def A(self, x):
        return x[..., ::2]

    def A_adjoint(self, y):
        self.adjoint_inputs.append(y)
        out = y.new_zeros((*y.shape[:-1], self.width))
        out[..., ::2] = y
        return out


def test_operators_without_a_normal_operator_work_in_admm_tv_and_tikhonov():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8)
    op = _Recording()
    y = op.A(x)
    assert tikhonov(op, y, 0.1).shape == x.shape
    assert tv_reconstruct(op, y, 0.01, iterations=5).shape == x.shape
    assert ADMMNet(channels=1, stages=2, features=4)(y, op)[-1].shape == x.shape


def test_rim_and_irim_given_x0_never_back_project_y():
    torch.manual_seed(0)
    x = torch.rand(2, 2, 8, 8)
    op = _Recording()
    y = op.A(x)
    x0 = torch.zeros_like(x)
    RIM(channels=2, steps=2, conv_channels=4, hidden_channels=4, norm="none", output_init="random")(y, op, x0=x0)
    IRIM(channels=2, steps=2, state_channels=4, hidden_channels=4, downsampling=(1,))(y, op, x0=x0)
    assert op.adjoint_inputs and not any(v is y for v in op.adjoint_inputs)  # residuals only, never y itself
    RIM(channels=2, steps=1, conv_channels=4, hidden_channels=4, norm="none", output_init="random")(y, op)
    assert any(v is y for v in op.adjoint_inputs)  # without x0 the start is A^T y


# --------------------------------------------------------------------------------- scaling
def _problem(name):
    g = torch.Generator().manual_seed(0)
    if name == "ct":
        from learn2invert.data import EllipsesDataset

        x = torch.stack([EllipsesDataset(size=32, length=4, seed=0)[i] for i in range(4)])
        op = operators.ParallelBeamCT(32, 18)
        sigma = 0.1
    else:
        x = torch.rand((4, 1, 16, 16), generator=g)
        op = operators.RandomProjection(128, 256, "gaussian", seed=0)  # unnormalised: ||A||^2 ~ 600
        sigma = 1.0
    y = op.A(x)
    return x, op, y + sigma * torch.randn(y.shape, generator=g)


def _mse(a, b):
    return float(torch.mean((a - b) ** 2))


def start_quality(name):
    """MSE of the best-scaled back-projection c A^T y and of untrained unrolled (4 folds), DEQ4IP,
    ADMM-Net, i-RIM and RIM solvers, with steps in absolute units and in units of 1/||A||^2."""
    x, op, y = _problem(name)
    aty = op.A_adjoint(y)
    c = float(torch.sum(aty * x) / torch.sum(aty * aty))  # least-squares scale: the adjoint at its best
    torch.manual_seed(0)
    prox = ResNetProx(1, features=4)
    default = UnrolledProximalGradient([prox], folds=4).eval()  # Lipschitz units unless told otherwise
    absolute = UnrolledProximalGradient([prox], folds=4, step_units="absolute").eval()
    with torch.no_grad():
        q = {"adjoint": _mse(c * aty, x), "lipschitz": _mse(default(y, op)[-1], x),
             "absolute": _mse(absolute(y, op)[-1], x)}
        torch.manual_seed(0)
        q["deq4ip_lipschitz"] = _mse(DEQ4IP(1, depth=4, features=8).eval()(y, op)[-1], x)
        torch.manual_seed(0)
        q["admm_lipschitz"] = _mse(ADMMNet(1, stages=2, features=4).eval()(y, op)[-1], x)
        irim = IRIM(channels=1, steps=2, state_channels=4, hidden_channels=4, downsampling=(1, 2), init="scaled_adjoint")
        q["irim_scaled_adjoint"] = _mse(irim(y, op)[-1], x)
        rim = RIM(channels=1, steps=2, conv_channels=4, hidden_channels=4, norm="none", init="scaled_adjoint")
        q["rim_scaled_adjoint"] = _mse(rim(y, op)[-1], x)  # zero output layer by default: its start
    return q


@pytest.mark.parametrize("name", ["ct", "random_projection"])
def test_untrained_solvers_start_near_the_adjoint_by_default(name):
    q = start_quality(name)
    for key in ("lipschitz", "deq4ip_lipschitz", "admm_lipschitz", "irim_scaled_adjoint", "rim_scaled_adjoint"):
        assert q[key] < 2 * q["adjoint"], (key, q)
    assert q["absolute"] > 1e3 * q["adjoint"], q  # what step_init = 1 in absolute units gives there


def test_new_runs_record_lipschitz_units_and_older_runs_load_in_absolute_ones(tmp_path):
    # Raw N(0, 1) projections (||A||^2 about 2.6 here): the two units give different outputs.
    overrides = ("solver={name: unrolled, params: {prox: resnet, folds: 2, init: adjoint, prox_params: {features: 4}}}",
                 "data.train_length=8", "data.val_length=4", "data.patch_size=8", "train.batch_size=4",
                 "train.max_steps=1")
    assert load_config(SMOKE, overrides)["solver"]["params"]["step_units"] == "lipschitz"
    run = tmp_path / "run"
    loop.train(SMOKE, run, overrides=overrides, show_progress=False)
    assert "step_units: lipschitz" in (run / "config.yaml").read_text()  # the folder says what its weights expect
    from learn2invert.inference import load_solver
    assert load_solver(run)[0].step_units == "lipschitz"
    # A run saved before Lipschitz units were the default has no key: it was trained in absolute units.
    old = (run / "config.yaml").read_text().replace("step_units: lipschitz", "")
    (run / "config.yaml").write_text(old)
    assert "step_units" not in old and load_solver(run)[0].step_units == "absolute"
    assert load_config(run / "config.yaml", saved=True)["solver"]["params"]["step_units"] == "absolute"
    # Fine-tuning from it keeps its units unless the config sets them; another solver gets the default.
    tune = (*overrides, f"train.init_weights={run}")
    assert load_config(SMOKE, tune)["solver"]["params"]["step_units"] == "absolute"
    assert load_config(SMOKE, (*tune, "solver.params.step_units=lipschitz"))["solver"]["params"]["step_units"] == "lipschitz"
    assert load_config(SMOKE, (f"train.init_weights={run}",))["solver"]["params"]["eps_units"] == "lipschitz"  # a RIM
    tuned = tmp_path / "tuned"
    loop.train(SMOKE, tuned, overrides=tune, show_progress=False)
    assert load_solver(tuned)[0].step_units == "absolute"


def test_saved_rim_runs_keep_the_initialisation_and_units_their_weights_came_from(tmp_path):
    # The RIM's zeroed output layer and its noise floor in units of ||A||^2 are new defaults; a run
    # folder saved before them has no keys and must load as it was trained.
    overrides = ("data.train_length=8", "data.val_length=4", "data.patch_size=8", "train.batch_size=4",
                 "train.max_steps=1")
    run = tmp_path / "run"
    loop.train(SMOKE, run, overrides=overrides, show_progress=False)  # smoke.yaml trains a RIM
    text = (run / "config.yaml").read_text()
    assert "output_init: zero" in text and "eps_units: lipschitz" in text
    from learn2invert.inference import load_solver
    assert load_solver(run)[0].eps_units == "lipschitz"
    (run / "config.yaml").write_text(text.replace("output_init: zero", "").replace("eps_units: lipschitz", ""))
    params = load_config(run / "config.yaml", saved=True)["solver"]["params"]
    assert params["output_init"] == "random" and params["eps_units"] == "absolute"
    assert load_solver(run)[0].eps_units == "absolute"


def test_rim_noise_floor_counts_in_units_of_the_operator_norm():
    # Raw N(0, 1) projections, ||A||^2 about 600 here: eps ||A||^2 keeps the gradient the network
    # sees in the units of x; in absolute units it is ||A||^2 times larger.
    x, op, y = _problem("random_projection")
    torch.manual_seed(0)
    rim = RIM(channels=1, steps=1, conv_channels=4, hidden_channels=4, norm="none", eps_init=1.0)
    x0 = torch.zeros_like(x)
    norm_squared = operators.operator_norm_squared(op, x0)
    lipschitz = rim.data_gradient(x0, y, op, torch.tensor(1e-6))
    rim.eps_units = "absolute"
    absolute = rim.data_gradient(x0, y, op, torch.tensor(1e-6))
    torch.testing.assert_close(absolute, lipschitz * norm_squared, rtol=1e-4, atol=0)
    assert norm_squared > 100
    with pytest.raises(ValueError, match="eps_units"):
        RIM(eps_units="relative")


@pytest.mark.parametrize("memory", ["autograd", "checkpoint", "invertible"])
def test_rim_and_irim_look_up_the_operator_norm_once_per_call(memory, monkeypatch):
    # An operator that cannot be cached (no weak reference) would otherwise repeat the power
    # iteration at every step; the unit of eps is fixed for the whole call.
    from learn2invert.solvers import base
    calls, lookup = [], base.lipschitz_scale
    monkeypatch.setattr(base, "lipschitz_scale", lambda op, x: calls.append(1) or lookup(op, x))
    x, op, y = _problem("random_projection")
    torch.manual_seed(0)
    if memory == "invertible":
        solver = IRIM(channels=1, steps=3, state_channels=4, hidden_channels=4, downsampling=(1,))
    else:
        solver = RIM(channels=1, steps=3, conv_channels=4, hidden_channels=4, norm="none", memory=memory,
                     output_init="random")
    solver(y, op)[-1].square().mean().backward()
    assert len(calls) == 1 and solver.phi.grad is not None  # eps still trains


def test_normalised_operators_keep_factor_one_and_norms_are_cached():
    mask = operators.masks.random_mask((8,), 4.0, 0.25, seed=0)
    mri = operators.SingleCoilMRI(mask)
    x = torch.randn(2, 2, 8, 8)
    y = mri.A(x)
    torch.manual_seed(0)
    prox = ResNetProx(2, features=4)
    a = UnrolledProximalGradient([prox], folds=3, step_units="absolute")(y, mri)
    b = UnrolledProximalGradient([prox], folds=3)(y, mri)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    torch.manual_seed(0)
    deq = DEQ4IP(2, depth=3, features=4, step_units="absolute").eval()
    deq_lipschitz = DEQ4IP(2, depth=3, features=4).eval()
    deq_lipschitz.load_state_dict(deq.state_dict())
    with torch.no_grad():
        assert torch.equal(deq(y, mri)[-1], deq_lipschitz(y, mri)[-1])
    torch.manual_seed(0)
    admm = ADMMNet(2, stages=2, features=4, step_units="absolute")
    admm_lipschitz = ADMMNet(2, stages=2, features=4)
    admm_lipschitz.load_state_dict(admm.state_dict())
    with torch.no_grad():
        assert torch.equal(admm(y, mri)[-1], admm_lipschitz(y, mri)[-1])
    irim = IRIM(channels=2, steps=1, state_channels=4, hidden_channels=4, downsampling=(1,), init="adjoint")
    scaled = IRIM(channels=2, steps=1, state_channels=4, hidden_channels=4, downsampling=(1,), init="scaled_adjoint")
    scaled.load_state_dict(irim.state_dict())
    with torch.no_grad():
        assert torch.equal(irim(y, mri)[-1], scaled(y, mri)[-1])
    # The noise floor eps of the RIM and i-RIM: eps ||A||^2 (the default) is eps on these operators.
    for build in (lambda units: IRIM(channels=2, steps=1, state_channels=4, hidden_channels=4, downsampling=(1,),
                                     eps_units=units),
                  lambda units: RIM(channels=2, steps=2, conv_channels=4, hidden_channels=4, norm="none",
                                    output_init="random", eps_units=units)):
        torch.manual_seed(0)
        absolute = build("absolute")
        lipschitz = build("lipschitz")
        lipschitz.load_state_dict(absolute.state_dict())
        with torch.no_grad():
            assert torch.equal(absolute(y, mri, sigma=0.1)[-1], lipschitz(y, mri, sigma=0.1)[-1])
    for op in (mri, operators.Denoising(), operators.Inpainting(torch.ones(8, 8, dtype=torch.bool))):
        assert operators.operator_norm_squared(op, x) == 1.0
    ct = operators.ParallelBeamCT(16, 10)
    like = torch.zeros(1, 1, 16, 16)
    first = operators.operator_norm_squared(ct, like)
    v = torch.randn(1, 1, 16, 16)
    for _ in range(200):  # a long power iteration agrees with the cached 30-step estimate
        v = ct.A_adjoint(ct.A(v / v.norm()))
    assert abs(first - float(v.norm())) / first < 1e-3
    assert operators.operator_norm_squared(ct, like) == first
    with pytest.raises(ValueError, match="step_units"):
        UnrolledProximalGradient([prox], folds=2, step_units="auto")
