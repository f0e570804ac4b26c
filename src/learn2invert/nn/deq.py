"""Deep-equilibrium fixed points ``z* = f(z*, *inputs)`` with implicit differentiation.

LUSER (Guan et al. 2022, Sec. 3) replaces the learned proximal network of each unrolled
stage by a shallow equilibrium model: ``r* = Mix(Data(r*) ++ Inject(d_k))``, solved with
Anderson acceleration (Walker & Ni 2011) and trained by implicit differentiation (Bai et al.
2019), so that training memory does not grow with the number of fixed-point iterations.

Forward: the solver runs without an autograd graph and keeps only ``z*``.

Backward (``backward="implicit"``): with ``J = df/dz`` at ``z*`` and the incoming gradient
``v = dL/dz*``, the implicit function theorem gives ``dL/d(inputs, params) = u^T df/d(inputs,
params)`` where ``u`` solves the adjoint fixed point ``u = J^T u + v``. The backward evaluates
``f`` once at ``z*`` under autograd, solves for ``u`` with the same Anderson solver (its own
settings), each step a vector-Jacobian product through that one graph, and back-propagates
``u`` through the graph to the inputs and parameters. Alternatives: ``"jacobian_free"`` (Fung
et al. 2021: ``u = v``, i.e. ``J`` taken as zero; cheap, a descent direction only) and
``"unrolled"`` (plain iteration under autograd: exact for the iterations run, memory linear in
their number; a reference).

Design: the core is a ``torch.autograd.Function`` whose tensor arguments are the injection
inputs *and* ``f``'s parameters, and whose backward returns their gradients. So everything is
an ordinary autograd edge: ``loss.backward()`` and ``torch.autograd.grad(loss, params)`` both
work, parameter hooks fire as usual, and each call carries its own ``f``, inputs and solver
settings in its own context object; nothing is captured globally or looked up late. A module
can be called several times in one forward pass (a K-stage loop with one fixed point per
stage, shared weights or not) and each backward differentiates exactly its own call. (The
"re-attach" alternative, ``z = f(z*, x)`` plus a tensor hook, would also work per call but
keeps ``f``'s graph alive from forward to backward and spends a wasted gradient on a
temporary leaf; here the one graph of ``f`` exists during backward only.)

The price of passing parameters explicitly: gradients reach only the tensors listed in
``params`` (default: ``f.parameters()`` when ``f`` is an ``nn.Module``) and the tensors in
``inputs``. A plain callable that closes over other tensors needing gradients must list them.
No gradient flows to ``z0``: the fixed point does not depend on where the solver starts.
Where it is cheap to see, :func:`fixed_point` warns (once per map definition) about tensors
that would lose their gradient this way: those requiring grad that sit in a function's closure
cells (directly, in a list, tuple or dict there, or as parameters of an ``nn.Module`` there, or
of the module a bound method belongs to) and are neither in ``inputs`` nor in ``params``.
Globals and attributes reached at call time are not inspected.

The map is called again in the backward, so it must still be the same map then. Prefer the
explicit form ``fixed_point(f, z0, *inputs)`` with ``f(z, *inputs)``, or one
:class:`DEQFixedPoint` per map: a closure such as ``lambda z: m(z, x)`` written inside a loop
is evaluated in the backward with ``m`` and ``x`` naming the *last* loop values, and a closure
over a tensor modified in place after the forward sees the new values (tensors in ``inputs``
and ``params`` are saved for backward and so protected by autograd's version check). The
implicit and Jacobian-free backwards therefore check the one evaluation ``f(z*)`` they need
anyway: if the relative residual ``||f(z*) - z*|| / ||f(z*)||`` of some sample exceeds
``max(10 r, tol, 64 eps)``, with ``r`` the residual the forward solve reported for it
(:class:`FixedPointStats`), ``tol`` the forward solver's tolerance and ``eps`` the machine
epsilon of the lowest precision involved (autocast in the forward included, since the backward
runs outside autocast), they raise a ``RuntimeError`` rather than return gradients of another
map. Without a change the two residuals agree to round-off (same map, same point), so a solve
that stopped short of ``tol`` passes; conversely a change too small to raise the residual above
that bound (e.g. after a poorly converged forward) goes unnoticed. ``"unrolled"`` builds its
graph in the forward and needs no check.

Spectral norm (and any parametrization whose output depends on training mode or buffers): in
training mode ``torch.nn.utils.parametrizations.spectral_norm`` runs a power iteration at
*every* weight access, which would change the map at every solver step and again in the
backward. For an ``nn.Module`` map, each call therefore performs one power iteration up front
(training mode only, as one forward of the plain layer would), snapshots the parametrization
buffers (``u``, ``v``) and evaluates ``f`` with the parametrizations in eval mode on that
snapshot, in the forward solve and again in that call's backward. The map is then one fixed
function per call, even when a later call (shared weights) has updated the buffers before this
call's backward runs.

``f`` must treat batch samples independently (GroupNorm yes, BatchNorm in training mode no) and
be deterministic (no dropout): the solvers stop per sample and assume ``f`` is a fixed map.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import spectral_norm

BACKWARD_MODES = ("implicit", "jacobian_free", "unrolled")

# The backward's check that the map did not change (module docstring): a residual of f(z*) above
# max(CHANGE_FACTOR * forward residual, tol, CHANGE_EPS * eps) means the map is not the one solved.
# Unchanged, the two residuals agree to round-off; a map that really changed (another closure
# value, another stage's weights) typically leaves residuals of order 1e-2 to 1.
CHANGE_FACTOR = 10.0
CHANGE_EPS = 64.0


# --------------------------------------------------------------------------------------------
# Solvers
# --------------------------------------------------------------------------------------------


@dataclass
class FixedPointStats:
    """Per-sample outcome of one fixed-point solve (all tensors ``(B,)``, detached).

    Attributes:
        iterations: evaluations of the map spent on each sample until it stopped (long).
        residual: relative residual ``||f(z) - z|| / ||f(z)||`` of the returned iterate.
        converged: ``residual <= tol``.
    """

    iterations: Tensor
    residual: Tensor
    converged: Tensor

    def summary(self) -> dict[str, float]:
        """Scalars for a training log: mean iterations, mean and max residual, converged fraction."""
        return {
            "iterations": float(self.iterations.double().mean()),
            "residual": float(self.residual.double().mean()),
            "residual_max": float(self.residual.double().max()),
            "converged": float(self.converged.double().mean()),
        }


def summarise_stats(stats: list[FixedPointStats]) -> dict[str, float]:
    """Mean iterations, mean and worst relative residual over the fixed-point solves of one forward
    pass (``fp_iterations``, ``fp_residual``, ``fp_residual_max``); ``{}`` for no solves or an empty batch."""
    if not stats:
        return {}
    iterations = torch.cat([s.iterations for s in stats]).double()
    residual = torch.cat([s.residual for s in stats]).double()
    if residual.numel() == 0:
        return {}
    return {"fp_iterations": float(iterations.mean()), "fp_residual": float(residual.mean()),
            "fp_residual_max": float(residual.max())}


def _rows(t: Tensor) -> Tensor:
    """``(B, ...) -> (B, N)``; unlike ``reshape(B, -1)`` also for an empty batch B = 0."""
    return t.reshape(t.shape[0], t.shape[1:].numel())


def _relative_residual(fx: Tensor, x: Tensor) -> Tensor:
    """``||fx - x|| / ||fx||`` per row of ``(B, N)`` tensors; 0 where both are 0."""
    tiny = torch.finfo(fx.dtype).tiny
    return (fx - x).norm(dim=1) / fx.norm(dim=1).clamp_min(tiny)


def _iterate(
    f: Callable[[Tensor], Tensor],
    x0: Tensor,
    tol: float,
    max_iter: int,
    propose: Callable[[int, Tensor, Tensor], Tensor],
) -> tuple[Tensor, FixedPointStats]:
    """The loop shared by the solvers: evaluate, keep the best iterate, stop per sample, propose the next.

    ``propose(k, x, fx)`` gets the flattened ``(B, N)`` iterate and its image at step ``k`` and
    returns the next iterate. A sample stops once its residual is ``<= tol``; from then on it
    sits on its best iterate, so the map (which sees the whole batch) is evaluated there, at a
    point known to be finite, and its value never changes again. Only out-of-place operations
    touch the iterates, so the loop can run under autograd (``backward="unrolled"``).
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    if x0.dim() == 0:
        raise ValueError("x0 needs a batch dimension: shape (B, ...)")
    shape, batch = x0.shape, x0.shape[0]

    def flat_f(x: Tensor) -> Tensor:
        out = f(x.view(shape))
        if out.shape != shape:
            raise ValueError(f"the map must keep the shape {tuple(shape)}, got {tuple(out.shape)}")
        return _rows(out)

    x = _rows(x0)
    best_x = x
    best_res = torch.full((batch,), float("inf"), dtype=x.dtype, device=x.device)
    iterations = torch.zeros(batch, dtype=torch.long, device=x.device)
    active = torch.ones(batch, dtype=torch.bool, device=x.device)
    for k in range(max_iter):
        fx = flat_f(x)
        res = _relative_residual(fx.detach(), x.detach())
        iterations = torch.where(active, k + 1, iterations)
        improved = active & (res < best_res)  # a NaN residual never improves
        best_x = torch.where(improved[:, None], x, best_x)
        best_res = torch.where(improved, res, best_res)
        active = active & ~(res <= tol)
        if k == max_iter - 1 or not bool(active.any()):
            break
        x = torch.where(active[:, None], propose(k, x, fx), best_x)
    stats = FixedPointStats(iterations=iterations, residual=best_res.detach(), converged=best_res.detach() <= tol)
    return best_x.view(shape), stats


def fixed_point_iteration(
    f: Callable[[Tensor], Tensor], x0: Tensor, tol: float = 1e-4, max_iter: int = 50
) -> tuple[Tensor, FixedPointStats]:
    """Plain (Picard) iteration ``z <- f(z)`` with per-sample stopping.

    Args:
        f: maps ``(B, ...)`` to the same shape; samples must not interact.
        x0: starting point ``(B, ...)``.
        tol: a sample stops once ``||f(z) - z|| / ||f(z)|| <= tol``.
        max_iter: most evaluations of ``f``.

    Returns:
        ``(z, stats)``: per sample the iterate with the lowest relative residual, shape of ``x0``,
        and :class:`FixedPointStats`. Differentiable by autograd when run with gradients enabled.
    """
    return _iterate(f, x0, tol, max_iter, lambda k, x, fx: fx)


def anderson(
    f: Callable[[Tensor], Tensor],
    x0: Tensor,
    m: int = 5,
    lam: float = 1e-4,
    beta: float = 1.0,
    tol: float = 1e-4,
    max_iter: int = 50,
) -> tuple[Tensor, FixedPointStats]:
    """Batched Anderson acceleration for ``z = f(z)`` (Walker & Ni 2011), per-sample stopping.

    With the last ``n <= m`` iterates ``x_i``, their images ``f_i`` and residuals
    ``g_i = f_i - x_i``, the next iterate is ``sum_i a_i (beta f_i + (1 - beta) x_i)`` where ``a``
    minimises ``||sum_i a_i g_i||^2 + lam * s * ||a||^2`` subject to ``sum_i a_i = 1``. The
    Tikhonov weight is relative: ``s`` is the mean ``||g_i||^2`` of the sample's history, so the
    same ``lam`` works whatever the scale of ``z`` (adjoint vectors in a backward pass can be
    tiny); the small ``n x n`` system is solved in float64. The first step (``n = 1``) is a
    damped plain step. A sample whose system cannot be solved falls back to a plain step.

    Args:
        f: maps ``(B, ...)`` to the same shape; samples must not interact.
        x0: starting point ``(B, ...)``.
        m: history length (``m = 1`` is plain iteration with damping ``beta``).
        lam: relative regularisation of the least-squares problem.
        beta: mixing (damping) parameter; 1 uses the images ``f_i`` only.
        tol: a sample stops once ``||f(z) - z|| / ||f(z)|| <= tol``.
        max_iter: most evaluations of ``f``.

    Returns:
        ``(z, stats)``: per sample the iterate with the lowest relative residual, shape of ``x0``,
        and :class:`FixedPointStats`. Not meant to run under autograd (the history is updated in
        place); use it under ``torch.no_grad()`` or through :func:`fixed_point`.
    """
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    batch = x0.shape[0]
    numel = x0[0].numel() if batch else 0
    X = x0.new_zeros(batch, m, numel)  # ring buffers of the last m iterates and their images
    F = x0.new_zeros(batch, m, numel)

    def propose(k: int, x: Tensor, fx: Tensor) -> Tensor:
        X[:, k % m] = x
        F[:, k % m] = fx
        n = min(k + 1, m)
        G = F[:, :n] - X[:, :n]
        gram = torch.bmm(G, G.transpose(1, 2)).double()  # (B, n, n)
        scale = gram.diagonal(dim1=1, dim2=2).mean(dim=1).clamp_min(torch.finfo(torch.float64).tiny)
        eye = torch.eye(n, dtype=torch.float64, device=x.device)
        # a = A^-1 1 / (1^T A^-1 1) solves the constrained least squares; A is SPD.
        w, _ = torch.linalg.solve_ex(gram / scale[:, None, None] + lam * eye, gram.new_ones(gram.shape[0], n, 1))
        alpha = w[:, :, 0] / w[:, :, 0].sum(dim=1, keepdim=True)
        plain = torch.zeros_like(alpha)
        plain[:, k % m] = 1.0
        alpha = torch.where(torch.isfinite(alpha).all(dim=1, keepdim=True), alpha, plain).to(x.dtype)
        mixed = torch.bmm(alpha[:, None], F[:, :n])[:, 0]
        if beta != 1.0:
            mixed = beta * mixed + (1.0 - beta) * torch.bmm(alpha[:, None], X[:, :n])[:, 0]
        return mixed

    return _iterate(f, x0, tol, max_iter, propose)


@dataclass(frozen=True)
class FixedPointSolver:
    """Settings of one solve; calling it runs the solver: ``solver(f, x0) -> (z, stats)``.

    ``method`` is ``"anderson"`` (uses ``m``, ``lam``, ``beta``) or ``"iteration"`` (plain).
    """

    method: str = "anderson"
    tol: float = 1e-4
    max_iter: int = 50
    m: int = 5
    lam: float = 1e-4
    beta: float = 1.0

    @classmethod
    def from_settings(cls, settings: dict | None, tol: float, max_iter: int) -> "FixedPointSolver":
        """A solver from a config's settings (``forward_solver: {...}``) over the defaults ``tol``, ``max_iter``."""
        return cls(**{"tol": tol, "max_iter": max_iter, **(settings or {})})

    def __post_init__(self) -> None:
        if self.method not in ("anderson", "iteration"):
            raise ValueError(f"method must be 'anderson' or 'iteration', got {self.method!r}")

    def __call__(self, f: Callable[[Tensor], Tensor], x0: Tensor) -> tuple[Tensor, FixedPointStats]:
        if self.method == "iteration":
            return fixed_point_iteration(f, x0, tol=self.tol, max_iter=self.max_iter)
        return anderson(f, x0, m=self.m, lam=self.lam, beta=self.beta, tol=self.tol, max_iter=self.max_iter)


# --------------------------------------------------------------------------------------------
# Implicit differentiation
# --------------------------------------------------------------------------------------------


class _FrozenParametrizations:
    """One call's view of the parametrizations (spectral norm) inside a module map.

    Built at the start of a call: parametrizations in training mode get their one update (a
    power iteration, triggered by reading the weight), then every parametrization's buffers are
    snapshotted. Used as a context manager around each evaluation of the map, in forward and in
    backward: parametrizations in eval mode, buffers swapped for the snapshot (by rebinding, not
    copying, so no tensor saved by another graph is modified), everything restored on exit.
    """

    def __init__(self, f: Any) -> None:
        self._entries: list[tuple[nn.Module, dict[str, Tensor]]] = []
        self._saved: list[tuple[bool, dict[str, Tensor]]] = []
        if not isinstance(f, nn.Module):
            return
        for module in f.modules():
            if not parametrize.is_parametrized(module):
                continue
            lists = list(module.parametrizations.items())
            if any(p.training for _, plist in lists for p in plist):
                with torch.no_grad():
                    for name, _ in lists:
                        getattr(module, name)
            for _, plist in lists:
                for p in plist:
                    snapshot = {k: b.detach().clone() for k, b in p.named_buffers(recurse=False)}
                    self._entries.append((p, snapshot))

    def __enter__(self) -> "_FrozenParametrizations":
        self._saved = []
        for p, snapshot in self._entries:
            self._saved.append((p.training, dict(p.named_buffers(recurse=False))))
            p.training = False
            for k, t in snapshot.items():
                setattr(p, k, t)
        return self

    def __exit__(self, *exc: Any) -> None:
        for (p, _), (training, buffers) in zip(self._entries, self._saved):
            p.training = training
            for k, t in buffers.items():
                setattr(p, k, t)
        self._saved = []


class _Call:
    """Everything one fixed-point call needs in its backward (kept on the autograd context).

    ``forward_stats`` and ``autocast_dtypes`` (the autocast dtypes active during the forward
    solve, which the backward does not re-enter) are filled in by the forward.
    """

    def __init__(self, f, forward_solver, backward_solver, backward, frozen, n_inputs, on_backward_stats):
        self.f = f
        self.forward_solver = forward_solver
        self.backward_solver = backward_solver
        self.backward = backward
        self.frozen = frozen
        self.n_inputs = n_inputs
        self.on_backward_stats = on_backward_stats
        self.forward_stats: FixedPointStats | None = None
        self.autocast_dtypes: list[torch.dtype] = []


def _check_map_unchanged(call: _Call, z_star: Tensor, fz: Tensor) -> None:
    """Raise if the stored fixed point is no longer one of the map as the backward evaluates it.

    The rule and its bound ``max(CHANGE_FACTOR * r, tol, CHANGE_EPS * eps)`` are in the module
    docstring. Samples whose forward residual is not finite (a diverged solve) are not judged:
    there is nothing to compare with. Costs one reduction and one host sync per backward (the
    adjoint solve syncs at every step anyway).

    Args:
        call: the call; its ``forward_stats.residual`` ``(B,)``, forward tolerance and autocast dtypes.
        z_star: the fixed point returned by the forward, ``(B, ...)``.
        fz: ``f(z*)`` as evaluated in the backward (any shape; a different one means a different map).
    """
    if fz.shape != z_star.shape:
        raise RuntimeError(
            f"fixed_point: the map changed between the forward solve and the backward: it now returns "
            f"shape {tuple(fz.shape)} at the fixed point of shape {tuple(z_star.shape)}. {_CHANGED_HINT}"
        )
    batch = z_star.shape[0]
    dtype = torch.promote_types(fz.dtype, z_star.dtype)
    with torch.no_grad():
        res = _relative_residual(_rows(fz.detach()).to(dtype), _rows(z_star).to(dtype))
        forward_res = call.forward_stats.residual.to(device=res.device, dtype=res.dtype)
        eps = max(torch.finfo(d.to_real()).eps for d in (fz.dtype, z_star.dtype, *call.autocast_dtypes))
        bound = (CHANGE_FACTOR * forward_res).clamp_min(max(call.forward_solver.tol, CHANGE_EPS * eps))
        changed = torch.isfinite(forward_res) & ~(res <= bound)  # a NaN residual now counts as changed
        if not bool(changed.any()):
            return
        worst = int(torch.where(changed, res / bound, torch.full_like(res, -1.0)).nan_to_num(float("inf")).argmax())
    raise RuntimeError(
        f"fixed_point: the map changed between the forward solve and the backward: the fixed point "
        f"z* the forward returned has relative residual ||f(z*) - z*|| / ||f(z*)|| = {float(res[worst]):.3g} "
        f"under the map as called in the backward, against {float(forward_res[worst]):.3g} when the forward "
        f"solve returned it (sample {worst}, {int(changed.sum())} of {batch} samples above the bound "
        f"{float(bound[worst]):.3g}). Its gradient would be that of another map. {_CHANGED_HINT}"
    )


_CHANGED_HINT = (
    "Likely cause: the map is a closure over a loop variable (e.g. `lambda z: m(z, x)` written inside a "
    "loop: by the time the backward calls it, `m` and `x` name the last loop values) or over tensors "
    "that were modified in place after the forward. Pass the inputs explicitly instead, "
    "`fixed_point(f, z0, *inputs)` with `f(z, *inputs)` (e.g. `fixed_point(m, z0, x)`; an nn.Module "
    "map's parameters are found by default), or use one DEQFixedPoint per map. (The same error comes "
    "from a map that is not deterministic, e.g. dropout, or whose batch samples interact, e.g. BatchNorm "
    "in training mode: fixed_point supports neither.)"
)


class _ImplicitFixedPoint(torch.autograd.Function):
    """Solve without a graph; backward by the adjoint fixed point (see the module docstring).

    Arguments after ``call``: ``z0``, the ``n_inputs`` inputs of ``f`` (tensors or not), then
    the parameters. Returns ``z*``.
    """

    @staticmethod
    def forward(ctx, call: _Call, z0: Tensor, *args: Any) -> Tensor:
        inputs = args[: call.n_inputs]
        with call.frozen:
            z_star, call.forward_stats = call.forward_solver(lambda z: call.f(z, *inputs), z0)
        call.autocast_dtypes = [
            torch.get_autocast_dtype(kind) for kind in ("cpu", "cuda") if torch.is_autocast_enabled(kind)
        ]
        ctx.call = call
        # Tensors go through save_for_backward (version checks); other arguments are kept as is.
        ctx.template = [None if isinstance(a, Tensor) else a for a in args]
        ctx.is_tensor = [isinstance(a, Tensor) for a in args]
        ctx.save_for_backward(z_star, *[a for a in args if isinstance(a, Tensor)])
        return z_star

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_z: Tensor):
        call: _Call = ctx.call
        z_star, *tensors = ctx.saved_tensors
        it = iter(tensors)
        args = [next(it) if is_t else a for is_t, a in zip(ctx.is_tensor, ctx.template)]
        needs = ctx.needs_input_grad[2:]
        with torch.enable_grad():
            # One evaluation of f at z*: its graph serves every vector-Jacobian product of the
            # adjoint solve and the final back-propagation to inputs and parameters. Inputs are
            # re-entered as leaves so the graph stops at them (their own graphs are autograd's
            # business once we return their gradients); parameters are used as they are, since f
            # reads them itself.
            z = z_star.detach().requires_grad_(True)
            leaves = [
                a.detach().requires_grad_(need) if is_t and i < call.n_inputs else a
                for i, (a, is_t, need) in enumerate(zip(args, ctx.is_tensor, needs))
            ]
            with call.frozen:
                out = call.f(z, *leaves[: call.n_inputs])
        # Before spending an adjoint solve: is z* still a fixed point of the map as called now?
        _check_map_unchanged(call, z_star, out)
        stats = None
        if call.backward == "implicit" and out.requires_grad:

            def adjoint(g: Tensor) -> Tensor:
                (jtg,) = torch.autograd.grad(out, z, g, retain_graph=True, allow_unused=True)
                return grad_z if jtg is None else jtg + grad_z

            # Start at v (one free step from 0): where J^T v = 0 this is already the solution.
            with torch.no_grad():
                u, stats = call.backward_solver(adjoint, grad_z)
        else:  # jacobian_free: u = v
            u = grad_z
        if call.on_backward_stats is not None:
            call.on_backward_stats(stats)
        wanted = [i for i, need in enumerate(needs) if need]
        grads: list[Tensor | None] = [None] * len(args)
        if wanted and out.requires_grad:
            found = torch.autograd.grad(out, [leaves[i] for i in wanted], u, allow_unused=True)
            for i, g in zip(wanted, found):
                grads[i] = g
        return (None, None, *grads)


_WARNED_MAPS: set[Any] = set()  # code objects (or types) already warned about: one warning per map definition


def _untracked_closure_tensors(f: Any, tracked: set[int]) -> list[str]:
    """Names of tensors requiring grad that ``f`` visibly closes over and that are not in ``tracked`` (ids).

    Looks only where it is cheap and certain (module docstring): the closure cells of a function
    (or of a bound method's function) and the module a bound method belongs to; inside those,
    tensors, ``nn.Module`` parameters, and one level of list, tuple or dict. Returns names such
    as ``"x"``, ``"m.mix.0.bias"``, ``"xs[1]"``.
    """
    found: list[str] = []

    def visit(name: str, value: Any, depth: int) -> None:
        if isinstance(value, Tensor):
            if value.requires_grad and id(value) not in tracked:
                found.append(name)
        elif isinstance(value, nn.Module):
            found.extend(
                f"{name}.{pname}" for pname, p in value.named_parameters() if p.requires_grad and id(p) not in tracked
            )
        elif depth == 0 and isinstance(value, (list, tuple)):
            for i, item in enumerate(value):
                visit(f"{name}[{i}]", item, 1)
        elif depth == 0 and isinstance(value, dict):
            for key, item in value.items():
                visit(f"{name}[{key!r}]", item, 1)

    fn = f
    if inspect.ismethod(f):
        visit("self", f.__self__, 0)
        fn = f.__func__
    code, closure = getattr(fn, "__code__", None), getattr(fn, "__closure__", None)
    if code is not None and closure:
        for name, cell in zip(code.co_freevars, closure):
            try:
                value = cell.cell_contents
            except ValueError:  # a cell not yet assigned
                continue
            visit(name, value, 0)
    return found


def _warn_untracked(f: Any, inputs: Sequence[Any], params: Sequence[Tensor]) -> None:
    """Warn once per map definition about closure tensors whose gradient this call would drop."""
    fn = getattr(f, "__func__", f)
    key = getattr(fn, "__code__", None) or type(f)
    if key in _WARNED_MAPS or isinstance(f, nn.Module):  # a module map's parameters are the default params
        return
    tracked = {id(t) for t in [*inputs, *params] if isinstance(t, Tensor)}
    names = _untracked_closure_tensors(f, tracked)
    if not names:
        return
    _WARNED_MAPS.add(key)
    shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
    warnings.warn(
        f"fixed_point: the map closes over tensors that require grad but are neither inputs nor params "
        f"({shown}); they get no gradient through this fixed point. Pass them as inputs, "
        f"`fixed_point(f, z0, *inputs)` with `f(z, *inputs)`, or list them in `params` (an nn.Module map "
        f"needs neither for its own parameters). Warned once per map definition.",
        UserWarning,
        stacklevel=3,
    )


def fixed_point(
    f: Callable[..., Tensor],
    z0: Tensor,
    *inputs: Any,
    params: Sequence[Tensor] | None = None,
    forward_solver: FixedPointSolver | None = None,
    backward_solver: FixedPointSolver | None = None,
    backward: str = "implicit",
    on_backward_stats: Callable[[FixedPointStats | None], None] | None = None,
) -> tuple[Tensor, FixedPointStats]:
    """Solve ``z* = f(z*, *inputs)`` from ``z0`` and make ``z*`` differentiable w.r.t. inputs and parameters.

    Args:
        f: the map, ``f(z, *inputs) -> Tensor`` of ``z``'s shape ``(B, ...)``; samples must not
            interact and ``f`` must be deterministic.
        z0: starting point ``(B, ...)``. Receives no gradient.
        inputs: further arguments of ``f`` (injections ``(B, ...)``, or non-tensors passed as is).
        params: tensors ``f`` uses that need gradients besides ``inputs``; default
            ``f.parameters()`` (those requiring grad) for an ``nn.Module``, none otherwise.
            Tensors requiring grad that ``f`` visibly closes over but that are in neither
            ``inputs`` nor ``params`` get no gradient; a ``UserWarning`` says so once per map
            definition (module docstring).
        forward_solver: settings of the forward solve (default ``FixedPointSolver()``).
        backward_solver: settings of the adjoint solve (default: those of the forward).
        backward: ``"implicit"``, ``"jacobian_free"`` or ``"unrolled"`` (module docstring).
        on_backward_stats: called in the backward with the adjoint solve's
            :class:`FixedPointStats` (``None`` for ``"jacobian_free"``; never called for ``"unrolled"``).

    Returns:
        ``(z*, stats)``: the fixed point, shape of ``z0``, and the forward solve's statistics.

    Raises:
        RuntimeError: in the backward (``"implicit"``, ``"jacobian_free"``), when ``f`` evaluated
            at ``z*`` is no longer close to ``z*``: the map changed between forward and backward,
            typically a closure over a loop variable (module docstring).
    """
    if backward not in BACKWARD_MODES:
        raise ValueError(f"backward must be one of {BACKWARD_MODES}, got {backward!r}")
    forward_solver = forward_solver or FixedPointSolver()
    backward_solver = backward_solver or forward_solver
    if params is None:
        params = [p for p in f.parameters() if p.requires_grad] if isinstance(f, nn.Module) else []
    frozen = _FrozenParametrizations(f)
    tensors = [a for a in inputs if isinstance(a, Tensor)] + list(params)
    needs_grad = torch.is_grad_enabled() and any(t.requires_grad for t in tensors)
    if torch.is_grad_enabled() and not (backward == "unrolled" and needs_grad):
        # Unrolled under autograd reaches closure tensors by itself; every other path drops them.
        _warn_untracked(f, inputs, params)

    if backward == "unrolled" and needs_grad:
        with frozen:
            return fixed_point_iteration(lambda z: f(z, *inputs), z0, forward_solver.tol, forward_solver.max_iter)
    if not needs_grad:
        with torch.no_grad(), frozen:
            return forward_solver(lambda z: f(z, *inputs), z0)
    call = _Call(f, forward_solver, backward_solver, backward, frozen, len(inputs), on_backward_stats)
    z_star = _ImplicitFixedPoint.apply(call, z0.detach(), *inputs, *params)
    return z_star, call.forward_stats


class DEQFixedPoint(nn.Module):
    """An equilibrium layer: ``forward(z0, *inputs)`` returns ``z*`` with ``z* = f(z*, *inputs)``.

    The map's parameters are this module's parameters (``f`` is a submodule). Each call is
    independent (see :func:`fixed_point`), so one instance can serve every stage of an unrolled
    loop (shared weights); give each stage its own instance for different weights.

    Args:
        f: the map ``f(z, *inputs) -> (B, ...)``, e.g. built from :func:`sn_conv` and ``nn.GroupNorm``.
        forward_solver: settings of the forward solve (default ``FixedPointSolver()``).
        backward_solver: settings of the adjoint solve (default: those of the forward).
        backward: ``"implicit"``, ``"jacobian_free"`` or ``"unrolled"``.

    Attributes:
        last_forward_stats: :class:`FixedPointStats` of the latest call (``None`` before any).
        last_backward_stats: those of the latest adjoint solve, set during ``backward()``
            (``None`` for ``"jacobian_free"``; never set for ``"unrolled"``, which has no
            adjoint solve). With K calls per forward pass the backward visits them last to
            first, so this ends up describing the first call; pass ``on_backward_stats`` to
            :func:`fixed_point` to see every one.
    """

    def __init__(
        self,
        f: nn.Module,
        forward_solver: FixedPointSolver | None = None,
        backward_solver: FixedPointSolver | None = None,
        backward: str = "implicit",
    ) -> None:
        super().__init__()
        if backward not in BACKWARD_MODES:
            raise ValueError(f"backward must be one of {BACKWARD_MODES}, got {backward!r}")
        self.f = f
        self.forward_solver = forward_solver or FixedPointSolver()
        self.backward_solver = backward_solver or self.forward_solver
        self.backward = backward
        self.last_forward_stats: FixedPointStats | None = None
        self.last_backward_stats: FixedPointStats | None = None

    def _record_backward(self, stats: FixedPointStats | None) -> None:
        self.last_backward_stats = stats

    def forward(self, z0: Tensor, *inputs: Any) -> Tensor:
        z, self.last_forward_stats = fixed_point(
            self.f,
            z0,
            *inputs,
            forward_solver=self.forward_solver,
            backward_solver=self.backward_solver,
            backward=self.backward,
            on_backward_stats=self._record_backward,
        )
        return z

    def extra_repr(self) -> str:
        return (
            f"backward={self.backward!r}, forward_solver={self.forward_solver}, "
            f"backward_solver={self.backward_solver}"
        )


# --------------------------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------------------------


def sn_conv(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 3,
    dims: int = 2,
    *,
    padding: int | None = None,
    bias: bool = True,
    n_power_iterations: int = 1,
    **conv_kwargs: Any,
) -> nn.Module:
    """A ``dims``-D convolution wrapped in ``torch.nn.utils.parametrizations.spectral_norm`` (LUSER, Tab. 1).

    Spectral norm divides the weight by the largest singular value of its ``(out, in * k^dims)``
    reshaping, estimated by power iteration. That bounds the convolution's operator norm by
    about ``sqrt(k^dims)`` rather than 1 (each input pixel enters ``k^dims`` output positions),
    so a map built from these layers is contractive-ish in practice, not provably.

    Args:
        in_channels, out_channels, kernel_size: as for ``nn.ConvNd``.
        dims: 1, 2 or 3.
        padding: default ``kernel_size // 2`` (same size for odd kernels).
        bias: add a bias (not normalised).
        n_power_iterations: power iterations per update.
        conv_kwargs: further ``nn.ConvNd`` arguments (stride, dilation, groups, padding_mode, ...).

    Returns:
        The parametrized convolution, ``(B, in, *S) -> (B, out, *S')``.
    """
    conv_cls = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}.get(dims)
    if conv_cls is None:
        raise ValueError(f"dims must be 1, 2 or 3, got {dims}")
    padding = kernel_size // 2 if padding is None else padding
    conv = conv_cls(in_channels, out_channels, kernel_size, padding=padding, bias=bias, **conv_kwargs)
    return spectral_norm(conv, n_power_iterations=n_power_iterations)


__all__ = [
    "DEQFixedPoint",
    "FixedPointSolver",
    "FixedPointStats",
    "anderson",
    "fixed_point",
    "fixed_point_iteration",
    "sn_conv",
    "summarise_stats",
]
