"""The geometric self-ensemble: transformed operators are exact adjoints, equivariant solvers are unchanged."""
import pytest
import torch

from learn2invert import operators
from learn2invert.inference.ensemble import _ORDER, Dihedral, TransformedOperator, self_ensemble
from learn2invert.solvers.rim import RIM


def _mri(shape=(8, 8)):
    mask = operators.masks.random_mask((shape[-1],), 4.0, 0.25, seed=0)
    return operators.SingleCoilMRI(mask)


@pytest.mark.parametrize("k, flip", _ORDER)
def test_transformed_operators_pass_the_adjoint_test_and_invert(k, flip):
    torch.manual_seed(0)
    t, op = Dihedral(k, flip), _mri()
    x = torch.randn(2, 2, 8, 8, dtype=torch.float64)
    assert torch.equal(t.inverse(t(x)), x)
    wrapped = TransformedOperator(op, t, x)
    y = torch.randn_like(wrapped.A(x))
    assert torch.allclose((wrapped.A(x) * y).sum(), (x * wrapped.A_adjoint(y)).sum(), rtol=1e-12)
    assert torch.allclose(wrapped.A_adjoint_A(x), wrapped.A_adjoint(wrapped.A(x)), rtol=1e-12, atol=1e-12)
    assert wrapped.norm_squared() == pytest.approx(operators.operator_norm_squared(op, x))


def test_an_equivariant_solver_is_unchanged_and_a_learned_one_is_averaged():
    torch.manual_seed(0)
    op = _mri()
    x = torch.randn(2, 2, 8, 8)
    y = op.A(x)

    def back_projection(y, operator, x0=None):  # A^T y commutes with every T: the ensemble is exact
        return [operator.A_adjoint(y)]

    assert torch.allclose(self_ensemble(back_projection, y, op, 8), op.A_adjoint(y), atol=1e-6)
    start = torch.randn_like(x)  # a given start is turned with each copy and turned back
    assert torch.allclose(self_ensemble(lambda y, operator, x0: [x0], y, op, 8, x0=start), start, atol=1e-6)
    rim = RIM(channels=2, steps=2, conv_channels=4, hidden_channels=4, norm="none", output_init="random").eval()
    with torch.no_grad():
        single = rim(y, op)[-1]
        assert torch.equal(self_ensemble(rim, y, op, 1), single)
        pair = self_ensemble(rim, y, op, 2)
        flipped = torch.flip(rim(y, TransformedOperator(op, Dihedral(0, True), x))[-1], (-1,))
    torch.testing.assert_close(pair, (single + flipped) / 2)
    assert not torch.allclose(pair, single)  # an untrained RIM is not flip-equivariant


def test_self_ensemble_refuses_what_it_cannot_do():
    op = _mri((8, 16))
    y = op.A(torch.zeros(1, 2, 8, 16))
    solver = lambda y, operator, x0=None: [operator.A_adjoint(y)]  # noqa: E731
    assert self_ensemble(solver, y, op, 4).shape == (1, 2, 8, 16)  # flips and the half turn keep the shape
    with pytest.raises(ValueError, match="square images"):
        self_ensemble(solver, y, op, 8)
    with pytest.raises(ValueError, match="one of"):
        self_ensemble(solver, y, op, 3)

    class Squares:
        linear = False

        def A(self, x):
            return x * x
    with pytest.raises(ValueError, match="nonlinear"):
        TransformedOperator(Squares(), Dihedral(0, True), torch.zeros(1, 1, 4, 4))
