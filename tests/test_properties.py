"""Property tests: every operator and solver, fed random shapes, dtypes, NaN/Inf and empty batches,
either works (a finite result of the documented shape and dtype) or raises a ``ValueError`` that
names the operator or solver; nothing crashes inside torch and nothing comes back NaN silently.

The input policy under test is the one documented in :mod:`learn2invert.operators.base`:
operators check layouts and propagate NaN/Inf (no value scan per call), solvers refuse non-finite
``y`` / ``x0`` once per call, ``B = 0`` works everywhere, float16 / bfloat16 are accepted by the
operators (computed, and returned, in float32 where a kernel lacks them) and by the classical
solvers (solved in float32, returned in the dtype of ``y``), and learned solvers need the dtype
of their parameters.

Hypothesis runs derandomized (the same examples every run) with small example counts, so the
whole file stays well under a minute on one core.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from learn2invert.operators import (
    Denoising,
    FiniteDifference,
    GaussianBlur,
    Inpainting,
    ParallelBeamCT,
    RandomProjection,
    SingleCoilMRI,
    SuperResolution,
    centered_hole_mask,
)
from learn2invert.operators.base import check_finite, check_tensor
from learn2invert.solvers.admm import ADMMNet
from learn2invert.solvers.classical import Adjoint, TikhonovSolver, conjugate_gradient, tikhonov
from learn2invert.solvers.irim import IRIM
from learn2invert.solvers.deq4ip import DEQ4IP
from learn2invert.solvers.rim import RIM
from learn2invert.solvers.tv import TVSolver, tv_reconstruct
from learn2invert.solvers.unet import UNet
from learn2invert.solvers.unrolled import unrolled_solver


def _settings(examples: int) -> settings:
    # conftest's autouse seeding fixture is function scoped: harmless here (every example seeds
    # its own generator), hence the suppressed health check.
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
ALL_DTYPES = FLOATS + (torch.int64, torch.complex64, torch.bool)


def _tensor(shape, dtype, seed: int, scale: float = 1.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    values = torch.randn(tuple(shape), generator=g, dtype=torch.float64) * scale
    if dtype == torch.complex64:
        return torch.complex(values, values.flip(-1) if values.dim() else values).to(dtype)
    if dtype == torch.bool:
        return values > 0
    if dtype == torch.int64:
        return values.round().to(dtype)
    return values.to(dtype)


def _poison(t: torch.Tensor, seed: int, value: float) -> torch.Tensor:
    """A copy of ``t`` with one entry (chosen by ``seed``) set to NaN or +-Inf."""
    flat = t.detach().clone().reshape(-1)
    flat[seed % flat.numel()] = value
    return flat.reshape(t.shape)


# ----------------------------------------------------------------------------------- operators
@dataclasses.dataclass
class OpSpec:
    """An operator with a strategy for valid image shapes and its documented output shapes."""

    op: torch.nn.Module
    images: st.SearchStrategy  # valid per-sample image shapes (without B)
    a_shape: Callable[[tuple], tuple]  # x.shape -> A(x).shape
    at_shape: Callable[[tuple], tuple]  # y.shape -> A_adjoint(y).shape
    float32_inside: bool = False  # computes float16 / bfloat16 in float32 and returns float32

    def out_dtype(self, dtype: torch.dtype) -> torch.dtype:
        return torch.float32 if self.float32_inside and dtype in (torch.float16, torch.bfloat16) else dtype


_sizes = st.integers(1, 9)
_channels = st.integers(1, 3)
_MRI_MASK = torch.rand(6, 7, generator=torch.Generator().manual_seed(3)) > 0.5
_CT = ParallelBeamCT(7, 5)
_SR2, _SR3 = SuperResolution(2), SuperResolution(3, kernel="bilinear", padding="circular")
_RP_G = RandomProjection(10, 30, seed=0, image_shape=(1, 5, 6))
_RP_F = RandomProjection(12, 32, kind="fourier", seed=0, image_shape=(2, 4, 4), normalize=True)


def _same(shape):
    return tuple(shape)


OPERATORS: dict[str, OpSpec] = {
    "denoising": OpSpec(Denoising(), st.tuples(_channels).flatmap(
        lambda c: st.lists(_sizes, min_size=0, max_size=3).map(lambda s: (*c, *s))), _same, _same),
    "blur_circular": OpSpec(GaussianBlur(5, 1.0), st.tuples(_channels, st.integers(2, 9), st.integers(2, 9)),
                            _same, _same),
    "blur_zeros": OpSpec(GaussianBlur(3, 2.0, padding="zeros"), st.tuples(_channels, _sizes, _sizes), _same, _same),
    "inpainting": OpSpec(Inpainting(centered_hole_mask(6, 7, 2)), st.tuples(_channels, st.just(6), st.just(7)),
                         _same, _same),
    "superres_2": OpSpec(_SR2, st.tuples(_channels, st.integers(1, 4), st.integers(1, 4)).map(
        lambda s: (s[0], 2 * s[1], 2 * s[2])),
        lambda s: (*s[:2], s[2] // 2, s[3] // 2), lambda s: (*s[:2], 2 * s[2], 2 * s[3])),
    "superres_3_circular": OpSpec(_SR3, st.tuples(_channels, st.integers(1, 3), st.integers(1, 3)).map(
        lambda s: (s[0], 3 * s[1], 3 * s[2])),
        lambda s: (*s[:2], s[2] // 3, s[3] // 3), lambda s: (*s[:2], 3 * s[2], 3 * s[3])),
    "random_projection": OpSpec(_RP_G, st.just((1, 5, 6)), lambda s: (s[0], 10), lambda s: (s[0], 1, 5, 6)),
    "random_projection_fourier": OpSpec(_RP_F, st.just((2, 4, 4)), lambda s: (s[0], 2, 12),
                                        lambda s: (s[0], 2, 4, 4), float32_inside=True),
    "mri": OpSpec(SingleCoilMRI(_MRI_MASK), st.one_of(st.just((2, 6, 7)), st.tuples(
        st.just(2), st.integers(1, 3), st.just(6), st.just(7))), _same, _same, float32_inside=True),
    "mri_columns": OpSpec(SingleCoilMRI(torch.tensor([1, 0, 1, 1, 0, 0, 1, 1])), st.tuples(
        st.just(2), _sizes, st.just(8)), _same, _same, float32_inside=True),
    "ct": OpSpec(_CT, st.tuples(_channels, st.just(7), st.just(7)),
                 lambda s: (*s[:2], _CT.n_angles, _CT.n_detectors), lambda s: (*s[:2], 7, 7), float32_inside=True),
    "finite_difference": OpSpec(FiniteDifference(), st.tuples(_channels).flatmap(
        lambda c: st.lists(_sizes, min_size=2, max_size=3).map(lambda s: (*c, *s))),
        lambda s: (s[0], s[1], len(s) - 2, *s[2:]), lambda s: (s[0], s[1], *s[3:])),
}
OP_NAMES = sorted(OPERATORS)


def _assert_clear_error(error: ValueError, names: tuple[str, ...]) -> None:
    message = str(error)
    assert any(name in message for name in names), f"the message names none of {names}: {message!r}"
    # ... and what was expected: a layout such as "(B, C, H, W)", an exact shape, or a dtype
    assert "shape" in message or "dtype" in message or "NaN" in message, f"no expected shape in {message!r}"


@_settings(250)
@given(name=st.sampled_from(OP_NAMES), batch=st.integers(0, 3), dtype=st.sampled_from(FLOATS),
       scale=st.sampled_from([1e-3, 1.0, 10.0]), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_operators_work_on_valid_finite_input(name, batch, dtype, scale, seed, data):
    """Documented shape, any float dtype, B = 0..3: A, A_adjoint and A_adjoint_A give finite
    tensors of the documented shape (an empty batch for B = 0) in the input dtype, or float32
    for float16 / bfloat16 input to the operators that compute those in float32."""
    spec = OPERATORS[name]
    shape = (batch, *data.draw(spec.images, label="image shape"))
    x = _tensor(shape, dtype, seed, scale)
    ax = spec.op.A(x)
    assert ax.shape == spec.a_shape(shape) and ax.dtype == spec.out_dtype(dtype)
    y = _tensor(ax.shape, dtype, seed + 1, scale)
    aty = spec.op.A_adjoint(y)
    assert aty.shape == spec.at_shape(tuple(y.shape)) == shape and aty.dtype == spec.out_dtype(dtype)
    atax = spec.op.A_adjoint_A(x)
    assert atax.shape == shape and atax.dtype == spec.out_dtype(dtype)
    for out in (ax, aty, atax):
        assert bool(torch.isfinite(out).all())


@st.composite
def _near_valid_shapes(draw, spec: OpSpec, measurement: bool = False) -> tuple:
    """A valid image (or measurement) shape, then maybe one size changed (0, 1 or +-1), a dim
    dropped or one added."""
    shape = [draw(st.integers(0, 3)), *draw(spec.images)]
    if measurement:
        shape = list(spec.a_shape(tuple(shape)))
    change = draw(st.sampled_from(["none", "size", "drop", "add"]))
    if change == "size":
        i = draw(st.integers(0, len(shape) - 1))
        shape[i] = draw(st.sampled_from([0, 1, shape[i] + 1, max(shape[i] - 1, 0)]))
    elif change == "drop" and len(shape) > 1:
        del shape[draw(st.integers(0, len(shape) - 1))]
    elif change == "add":
        shape.insert(draw(st.integers(0, len(shape))), draw(st.integers(1, 3)))
    return tuple(shape)


@st.composite
def _operator_inputs(draw, spec: OpSpec, method: str):
    """Anything a caller might pass: tensors of near-valid or random shape, any dtype, maybe
    holding NaN/Inf, or no tensor at all."""
    kind = draw(st.sampled_from(["near", "near", "near", "random", "not a tensor"]))
    if kind == "not a tensor":
        return draw(st.sampled_from([None, 1.5, [[1.0, 2.0]], np.zeros((1, 1, 6, 7), np.float32)]))
    if kind == "random":
        shape = tuple(draw(st.lists(st.integers(0, 8), min_size=0, max_size=6)))
    else:
        shape = draw(_near_valid_shapes(spec, measurement=method == "A_adjoint"))
    dtype = draw(st.sampled_from(ALL_DTYPES))
    x = _tensor(shape, dtype, draw(st.integers(0, 2**31 - 1)))
    if x.is_floating_point() and x.numel() and draw(st.booleans()):
        x = _poison(x, draw(st.integers(0, 10**6)), draw(st.sampled_from([float("nan"), float("inf"), -float("inf")])))
    return x


@_settings(500)
@given(name=st.sampled_from(OP_NAMES), method=st.sampled_from(["A", "A_adjoint", "A_adjoint_A"]), data=st.data())
def test_operators_work_or_raise_a_clear_value_error(name, method, data):
    """Any input: either a ValueError naming the operator and its expected layout (a TypeError
    is allowed only for non-tensors), or a result of the documented shape and dtype.
    NaN/Inf are not refused by operators (policy): they propagate, finite inputs stay finite."""
    spec = OPERATORS[name]
    x = data.draw(_operator_inputs(spec, method), label="input")
    try:
        out = getattr(spec.op, method)(x)
    except ValueError as error:
        _assert_clear_error(error, (type(spec.op).__name__,))
        return
    except TypeError:
        assert not isinstance(x, torch.Tensor), "TypeError for a tensor input"
        return
    assert isinstance(x, torch.Tensor) and x.is_floating_point(), f"accepted {getattr(x, 'dtype', x)!r}"
    expected = {"A": spec.a_shape, "A_adjoint": spec.at_shape, "A_adjoint_A": _same}[method](tuple(x.shape))
    assert out.shape == expected and out.dtype == spec.out_dtype(x.dtype)
    if bool(torch.isfinite(x).all()):
        assert bool(torch.isfinite(out).all())


@_settings(100)
@given(name=st.sampled_from(OP_NAMES), seed=st.integers(0, 2**31 - 1),
       value=st.sampled_from([float("nan"), float("inf"), -float("inf")]), data=st.data())
def test_operators_propagate_non_finite_values(name, seed, value, data):
    """Operators do not scan values (the documented policy): NaN/Inf input gives a result of the
    documented shape, no exception, and never a silently finite A^T A x for the identity-like
    operators whose every output depends on the poisoned entry's pixel."""
    spec = OPERATORS[name]
    shape = (2, *data.draw(spec.images))
    x = _poison(_tensor(shape, torch.float32, seed), seed, value)
    assert spec.op.A(x).shape == spec.a_shape(shape)
    atax = spec.op.A_adjoint_A(x)
    assert atax.shape == shape
    if name in ("denoising", "blur_circular", "blur_zeros"):
        assert not bool(torch.isfinite(atax).all())


# ------------------------------------------------------------------------------------- solvers
@dataclasses.dataclass
class Problem:
    op: torch.nn.Module
    channels: int
    sizes: tuple[tuple[int, int], ...]  # image sizes (H, W) the operator takes


_FREE = tuple((h, w) for h in range(1, 11) for w in range(1, 11))
PROBLEMS: dict[str, Problem] = {
    "denoising": Problem(Denoising(), 1, _FREE),
    "blur": Problem(GaussianBlur(3, 1.0), 3, _FREE),
    "inpainting": Problem(Inpainting(centered_hole_mask(8, 6, 2)), 1, ((8, 6),)),
    "superres": Problem(SuperResolution(2), 1, tuple((h, w) for h, w in _FREE if h % 2 == 0 and w % 2 == 0)),
    "mri": Problem(SingleCoilMRI(torch.rand(8, 8, generator=torch.Generator().manual_seed(5)) > 0.6), 2, ((8, 8),)),
    "ct": Problem(ParallelBeamCT(8, 4), 1, ((8, 8),)),
    "random_projection": Problem(RandomProjection(24, 64, seed=1, normalize=True), 1, ((8, 8),)),
}


def _unet_fits(h: int, w: int) -> bool:  # depth 2, instance norm: H, W >= 4 and > 1 bottleneck pixel
    return h >= 4 and w >= 4 and (-(-h // 4)) * (-(-w // 4)) >= 2


@dataclasses.dataclass
class SolverSpec:
    build: Callable[..., Callable]  # (channels, dtype=float32) -> solver(y, op, x0=None)
    fits: Callable[[int, int], bool]
    names: tuple[str, ...]  # any of them must appear in its error messages
    learned: bool = True
    max_scale: float = float("inf")  # largest data scale it is meant for


def _learned(make):
    def build(channels, dtype=torch.float32):
        model = make(channels).to(dtype)

        def run(y, op, x0=None):
            with torch.no_grad():
                return model(y, op, x0=x0, sigma=0.1)
        return run
    return build


def _classical(make):
    """A training-free Solver: the same call as the learned ones, any float dtype."""
    def build(channels, dtype=None):
        solver = make(channels)
        return lambda y, op, x0=None: solver(y, op, x0=x0)
    return build


_TINY_GLOW = {"image_size": 8, "levels": 1, "depth": 1, "hidden": 4}


# Random output layers: a RIM whose update starts at zero would pass the properties below trivially.
_RANDOM = {"conv_channels": 4, "hidden_channels": 4, "output_init": "random"}

SOLVERS: dict[str, SolverSpec] = {
    "rim_strided": SolverSpec(_learned(lambda c: RIM(c, steps=2, norm="none", **_RANDOM)),
                              lambda h, w: True, ("RIM",)),
    "rim_batchnorm": SolverSpec(_learned(lambda c: RIM(c, steps=1, **_RANDOM)),
                                lambda h, w: True, ("RIM",)),
    "rim_mri": SolverSpec(_learned(lambda c: RIM(c, steps=2, architecture="mri", **_RANDOM)),
                          lambda h, w: True, ("RIM",)),
    "irim": SolverSpec(_learned(lambda c: IRIM(c, steps=2, state_channels=2 * c + 2, hidden_channels=4,
                                                downsampling=(1, 2), init="adjoint")),
                       lambda h, w: h % 2 == 0 and w % 2 == 0, ("IRIM", "i-RIM")),
    "unet": SolverSpec(_learned(lambda c: UNet(c, features=4, depth=2)), _unet_fits, ("UNet",)),
    "admm": SolverSpec(_learned(lambda c: ADMMNet(c, stages=2, features=4, cg_iterations=3)),
                       lambda h, w: True, ("ADMMNet", "ADMM-Net")),
    # batch-normalised proxes in eval mode: in training mode a 1-pixel batch is torch's error, not ours
    "unrolled_resnet": SolverSpec(_learned(lambda c: unrolled_solver(c, prox="resnet", folds=2,
                                                                     prox_params={"features": 4, "blocks": 1}).eval()),
                                  lambda h, w: True, ("UnrolledProximalGradient",)),
    "unrolled_dncnn": SolverSpec(_learned(lambda c: unrolled_solver(c, prox="dncnn", folds=2, shared=True,
                                                                    prox_params={"depth": 3, "features": 4,
                                                                                 "batch_norm": False})),
                                 lambda h, w: True, ("UnrolledProximalGradient",)),
    "luser": SolverSpec(_learned(lambda c: unrolled_solver(c, prox="luser", folds=2, shared=True, prox_params={
                            "features": 4, "groups": 2, "forward_solver": {"max_iter": 4}})),
                        lambda h, w: True, ("UnrolledProximalGradient",)),
    "deq4ip": SolverSpec(_learned(lambda c: DEQ4IP(c, depth=3, features=4, forward_solver={"max_iter": 4})),
                         lambda h, w: True, ("DEQ4IP",)),
    "glow": SolverSpec(_learned(lambda c: unrolled_solver(c, prox="glow", folds=2, init="prox", prox_params=_TINY_GLOW)),
                       lambda h, w: h % 2 == 0 and w % 2 == 0, ("UnrolledProximalGradient", "GlowProx"),
                       max_scale=1e3),  # the flow prior models images in [0, 1]: 1e20 overflows its affine couplings
    "tv": SolverSpec(_classical(lambda c: TVSolver(0.05, iterations=4, inner_iterations=3, channels=c)),
                     lambda h, w: True, ("tv_reconstruct", "TV"), learned=False),
    "tikhonov": SolverSpec(_classical(lambda c: TikhonovSolver(0.1, iterations=5, channels=c)), lambda h, w: True, ("tikhonov",),
                           learned=False),
    "adjoint": SolverSpec(_classical(lambda c: Adjoint(channels=c)), lambda h, w: True, ("Adjoint",), learned=False),
}
SOLVER_NAMES = sorted(SOLVERS)
PROBLEM_NAMES = sorted(PROBLEMS)


@st.composite
def _problem_cases(draw):
    """(solver name, problem name, image shape) with a shape both of them take."""
    solver = draw(st.sampled_from(SOLVER_NAMES))
    problem = draw(st.sampled_from(PROBLEM_NAMES))
    spec, prob = SOLVERS[solver], PROBLEMS[problem]
    sizes = [s for s in prob.sizes if spec.fits(*s)]
    if solver == "rim_batchnorm":  # training-mode batch norm needs > 1 value per channel (checked)
        sizes = [s for s in sizes if s[0] > 2 or s[1] > 2]
    h, w = draw(st.sampled_from(sizes))
    batch = draw(st.integers(0, 3))
    return solver, problem, (batch, prob.channels, h, w)


def _measure(problem: Problem, shape, seed: int, scale: float, dtype=torch.float32):
    """(x, y = A x): a non-negative image of the given shape and scale, y in ``dtype``."""
    x = _tensor(shape, torch.float64, seed).abs().to(torch.float32) * scale
    y = problem.op.A(x)
    return x, y.to(dtype)


@_settings(400)
@given(case=_problem_cases(), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_solvers_give_finite_results_of_the_image_shape(case, seed, data):
    """Valid finite y (tiny or huge values too, B = 0 too, float32 or float64 with a model of that
    dtype, float16 / bfloat16 for the classical solvers): every iterate is finite, of the image
    shape and of the data's dtype."""
    solver, problem, shape = case
    prob, spec = PROBLEMS[problem], SOLVERS[solver]
    dtype = data.draw(st.sampled_from(FLOATS[:2] if spec.learned else FLOATS), label="dtype")
    # float16 holds at most 65504: no huge values there (they would be Inf, refused as such)
    scales = [1e-20, 1e-3, 1.0, 1e3, 1e20] if dtype in FLOATS[:2] else [1e-3, 1.0, 1e3]
    scales = [s for s in scales if s <= spec.max_scale]
    _, y = _measure(prob, shape, seed, data.draw(st.sampled_from(scales), label="scale"), dtype)
    iterates = spec.build(prob.channels, dtype)(y, prob.op)
    assert isinstance(iterates, list) and iterates
    for x in iterates:
        assert x.shape == shape and x.dtype == dtype
        assert bool(torch.isfinite(x).all()), f"{solver} on {problem} returned NaN/Inf for finite data"


@_settings(250)
@given(case=_problem_cases(), seed=st.integers(0, 2**31 - 1), where=st.sampled_from(["y", "x0"]),
       value=st.sampled_from([float("nan"), float("inf"), -float("inf")]))
def test_solvers_refuse_non_finite_data(case, seed, where, value):
    """NaN or Inf in y or in a given x0 raise a ValueError naming the solver and the problem."""
    solver, problem, shape = case
    prob, spec = PROBLEMS[problem], SOLVERS[solver]
    x, y = _measure(prob, (max(shape[0], 1), *shape[1:]), seed, 1.0)
    x0 = None
    if where == "y":
        y = _poison(y, seed, value)
    else:
        x0 = _poison(x, seed, value)
    with pytest.raises(ValueError, match="NaN") as info:
        spec.build(prob.channels)(y, prob.op, x0=x0)
    assert any(name in str(info.value) for name in spec.names)
    assert "infinite" in str(info.value)


@st.composite
def _solver_inputs(draw, problem: Problem, shape):
    """Measurements of the right shape in another dtype, of a near-valid shape, or no tensor."""
    kind = draw(st.sampled_from(["dtype", "shape", "shape", "not a tensor"]))
    _, y = _measure(problem, shape, draw(st.integers(0, 2**31 - 1)), 1.0)
    if kind == "not a tensor":
        return draw(st.sampled_from([None, 3.0, y.tolist(), y.numpy()]))
    if kind == "dtype":
        return _tensor(y.shape, draw(st.sampled_from(ALL_DTYPES)), draw(st.integers(0, 100)))
    dims = list(y.shape)
    change = draw(st.sampled_from(["size", "drop", "add"]))
    i = draw(st.integers(0, len(dims) - 1))
    if change == "size":
        dims[i] = draw(st.sampled_from([0, 1, dims[i] + 1, max(dims[i] - 1, 0)]))
    elif change == "drop":
        del dims[i]
    else:
        dims.insert(i, draw(st.integers(1, 3)))
    return _tensor(dims, torch.float32, draw(st.integers(0, 100)))


@_settings(500)
@given(case=_problem_cases(), data=st.data())
def test_solvers_work_or_raise_a_clear_value_error(case, data):
    """y of the wrong dtype, rank or size, or not a tensor at all: a ValueError naming the solver
    or the operator, or (when the operator takes that shape) a finite result with the image
    rank. Learned solvers refuse dtypes other than their parameters'; the classical ones accept
    every float dtype and return it."""
    solver, problem, shape = case
    prob, spec = PROBLEMS[problem], SOLVERS[solver]
    y = data.draw(_solver_inputs(prob, shape), label="y")
    try:
        iterates = spec.build(prob.channels)(y, prob.op)
    except ValueError as error:
        _assert_clear_error(error, (*spec.names, type(prob.op).__name__))
        return
    except TypeError:
        assert not isinstance(y, torch.Tensor), "TypeError for a tensor input"
        return
    assert isinstance(y, torch.Tensor) and y.is_floating_point()
    if spec.learned:
        assert y.dtype == torch.float32
    x = iterates[-1]
    # (an image, or a volume where the operator takes one: MRI accepts (B, 2, D, H, W) too)
    assert x.dim() in (4, 5) and x.shape[:2] == (y.shape[0], prob.channels) and x.dtype == y.dtype
    assert bool(torch.isfinite(x).all())


@_settings(250)
@given(case=_problem_cases(), data=st.data())
def test_solvers_check_the_start_image(case, data):
    """x0 of another shape than the image, or of another dtype: a ValueError naming the solver
    or the operator (before: ADMM and Tikhonov broadcast it into a torch RuntimeError), or a
    finite result of the x0 shape (the U-Net only post-processes x0)."""
    solver, problem, shape = case
    prob, spec = PROBLEMS[problem], SOLVERS[solver]
    x, y = _measure(prob, (max(shape[0], 1), *shape[1:]), data.draw(st.integers(0, 2**31 - 1)), 1.0)
    x0 = _tensor(data.draw(_near_valid_shapes(OpSpec(prob.op, st.just(shape[1:]), _same, _same))),
                 data.draw(st.sampled_from(ALL_DTYPES)), 0)
    try:
        out = spec.build(prob.channels)(y, prob.op, x0=x0)[-1]
    except ValueError as error:
        _assert_clear_error(error, (*spec.names, type(prob.op).__name__))
        return
    assert x0.is_floating_point()
    assert out.shape == (x.shape if solver != "unet" else x0.shape) and bool(torch.isfinite(out).all())


# ---------------------------------------------------------------------- targeted regressions
def test_classical_solvers_in_float16_match_float32():
    """float16 data are solved in float32: before, the CG / objective sums overflowed float16 at
    128 x 128 and the result was off by up to ~20 % of the image range without any NaN."""
    g = torch.Generator().manual_seed(0)
    op = GaussianBlur(5, 2.0)
    y = op.A(torch.rand(1, 1, 128, 128, generator=g) * 4) + 0.05 * torch.randn(1, 1, 128, 128, generator=g)
    for solve in (lambda t: tikhonov(op, t, 0.1, iterations=30), lambda t: tv_reconstruct(op, t, 0.05, iterations=10)):
        half = solve(y.half())
        assert half.dtype == torch.float16
        assert float((half.float() - solve(y)).abs().max()) < 0.01


def test_conjugate_gradient_is_scale_invariant():
    """CG on huge data (squares overflow float32) gives the scaled solution, not NaN, and for
    ordinary data exactly what it gives on the data times a power of two."""
    g = torch.Generator().manual_seed(1)
    b = torch.randn(2, 1, 6, 6, generator=g)
    op = GaussianBlur(3, 1.0)

    def normal(v):
        return op.A_adjoint_A(v) + 0.5 * v

    x = conjugate_gradient(normal, b, iterations=20, tolerance=0.0)
    huge = conjugate_gradient(normal, b * 2.0**100, iterations=20, tolerance=0.0)
    assert bool(torch.isfinite(huge).all())
    assert torch.equal(huge, x * 2.0**100)
    with pytest.raises(ValueError, match="x0 must have the shape of b"):
        conjugate_gradient(normal, b, x0=b[:1])


def test_check_helpers_name_the_owner_and_count_bad_values():
    with pytest.raises(ValueError, match=r"^MyOp: x must have shape \(B, C, H, W\) with no empty dimension"):
        check_tensor(torch.zeros(1, 0, 4, 4), "x", "(B, C, H, W)", owner="MyOp")
    check_tensor(torch.zeros(0, 1, 4, 4), "x", "(B, C, H, W)")  # an empty batch is fine
    with pytest.raises(ValueError, match=r"^solver: y contains 1 NaN and 2 infinite value\(s\) out of 6"):
        check_finite(torch.tensor([0.0, float("nan"), float("inf"), -float("inf"), 1.0, 2.0]), "y", "solver")
    check_finite(torch.zeros(0), "y")


def test_mri_reduced_precision_and_empty_batch():
    """The cases that crashed inside torch before: float16 / bfloat16 (no CPU half FFT, no
    bfloat16 FFT at all, no half sparse products) and B = 0 (MKL rejects an empty FFT batch)."""
    op = SingleCoilMRI(_MRI_MASK)
    x = torch.randn(2, 2, 6, 7)
    for dtype in (torch.float16, torch.bfloat16):
        out = op.A_adjoint_A(x.to(dtype))
        assert out.dtype == torch.float32  # computed in float32, not rounded back
        torch.testing.assert_close(out, op.A_adjoint_A(x.to(dtype).float()))
    assert op.A(x[:0]).shape == (0, 2, 6, 7) and op.A_adjoint(x[:0]).shape == (0, 2, 6, 7)
    assert _CT.A(torch.zeros(0, 3, 7, 7)).shape == (0, 3, 5, _CT.n_detectors)
    assert _CT.fbp(torch.zeros(0, 1, 5, _CT.n_detectors)).shape == (0, 1, 7, 7)
    assert _CT.fbp(_CT.A(torch.rand(1, 1, 7, 7)).half()).dtype == torch.float32


@pytest.mark.parametrize("solver", ["rim_strided", "irim", "unet", "admm"])
def test_learned_solvers_accept_autocast_precision(solver):
    """Under torch.autocast the data may come back from autocast layers (e.g. a blur's conv) in
    bfloat16: the parameter-dtype check steps aside and the result stays finite."""
    prob = PROBLEMS["blur"]
    _, y = _measure(prob, (2, 3, 8, 8), 0, 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = SOLVERS[solver].build(3)(y, prob.op)[-1]
    assert out.shape == (2, 3, 8, 8) and bool(torch.isfinite(out).all())
