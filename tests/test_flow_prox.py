"""Flow-prior unfolding: the GLOW prox, its gradients through the invertible engine, pre-training and plug-and-play."""
import json
from pathlib import Path

import torch

from learn2invert.operators import Denoising, GaussianBlur
from learn2invert.nn.prox.glow import OFFSET, FlowDensity, GlowProx
from learn2invert.solvers.unrolled import unrolled_solver
from learn2invert.train import loop
from learn2invert.inference import load_solver

CONFIGS = Path(__file__).resolve().parents[1] / "projects" / "flow_unfolding2021" / "configs"
TINY_FLOW = {"image_size": 8, "levels": 2, "depth": 2, "hidden": 8}


def test_prox_without_shrinkage_is_the_identity_and_starts_at_the_most_likely_image():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    prox = GlowProx(1, shrink_init=1e-12, **TINY_FLOW).double()
    assert torch.allclose(prox(x), x, atol=1e-10)
    z0 = torch.zeros(2, 64, dtype=torch.float64)
    assert torch.allclose(prox.initial_guess(x), prox.flow.decode(z0) + OFFSET)
    shrunk = GlowProx(1, shrink_init=1.0, **TINY_FLOW).double()
    shrunk.load_state_dict({**prox.state_dict(), "shrink_raw": shrunk.shrink_raw.data})
    # Halving every latent moves the image towards g(0).
    assert (shrunk(x) - prox.initial_guess(x)).norm() < (x - prox.initial_guess(x)).norm()


def test_unrolled_glow_gradients_are_the_same_with_and_without_the_invertible_engine():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
    op = GaussianBlur(3, 1.0).double()
    y = op.A(x) + 0.01 * torch.randn(x.shape, dtype=torch.float64)
    grads = {}
    for memory in ("invertible", "autograd"):
        torch.manual_seed(1)
        solver = unrolled_solver(1, prox="glow", folds=3, init="prox", last_prox=False,
                                 prox_params={**TINY_FLOW, "memory": memory}).double()
        solver(y, op)  # ActNorm's data-dependent initialisation, identical in both
        solver.zero_grad()
        ((solver(y, op)[-1] - x) ** 2).sum().backward()
        # The last fold ends on its data step (eq. 12), so its flow gets no gradient: count it as zero.
        grads[memory] = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in solver.parameters()])
    assert grads["autograd"].abs().sum() > 0
    assert torch.allclose(grads["invertible"], grads["autograd"], rtol=1e-8, atol=1e-12)


def test_pretrain_by_likelihood_then_unroll_and_plug_and_play(tmp_path):
    small = ("data.patch_size=8", "data.train_length=64", "data.val_length=8", "train.batch_size=8", "train.epochs=3",
             "solver.params={image_size: 8, levels: 2, depth: 2, hidden: 8}")
    prior = loop.train(CONFIGS / "flow_prior.yaml", tmp_path / "prior", overrides=small, show_progress=False)
    history = prior["epochs"]
    assert history[-1]["val_bits_per_dim"] < history[0]["val_bits_per_dim"] - 0.3
    assert (tmp_path / "prior" / "samples.png").stat().st_size > 0
    density = FlowDensity(1, **TINY_FLOW)
    from learn2invert.checkpoint import load_model
    load_model(density, tmp_path / "prior")

    task = ("data.patch_size=8", "data.train_length=16", "data.val_length=4", "train.batch_size=8", "train.epochs=1",
            f"solver.params.pretrained={tmp_path / 'prior'}", "solver.params.prox_params={image_size: 8, levels: 2, depth: 2, hidden: 8}")
    loop.train(CONFIGS / "flow_denoise.yaml", tmp_path / "glow", overrides=task, show_progress=False)
    glow, _, _, _ = load_solver(tmp_path / "glow")
    # Every fold started from the prior: before training, fold flows equal the pre-trained flow.
    fresh = unrolled_solver(1, prox="glow", folds=4, pretrained=str(tmp_path / "prior"), prox_params=TINY_FLOW)
    for k in range(4):
        for (name, a), b in zip(fresh.prox[k].flow.state_dict().items(), density.flow.state_dict().values()):
            assert torch.equal(a, b), name
    assert not torch.equal(glow.prox[0].flow.state_dict()["steps.0.2.net.0.weight"],
                           density.flow.state_dict()["steps.0.2.net.0.weight"])  # fine-tuned

    loop.train(CONFIGS / "flow_denoise.yaml", tmp_path / "pnp", overrides=task + ("solver.params.freeze_prox=true",),
               show_progress=False)
    pnp, _, _, _ = load_solver(tmp_path / "pnp")
    for k in range(4):  # plug-and-play: the flows stay the pre-trained ones, only mu and lambda move
        assert torch.equal(pnp.prox[k].flow.state_dict()["steps.0.2.net.0.weight"],
                           density.flow.state_dict()["steps.0.2.net.0.weight"])
    assert not torch.allclose(pnp.steps(), fresh.steps())
    x = torch.rand(2, 1, 8, 8)
    assert torch.isfinite(pnp(x + 0.2 * torch.randn_like(x), Denoising())[-1]).all()
    # The trained runs hold every weight: they load after the prior they started from has moved.
    (tmp_path / "prior").rename(tmp_path / "moved")
    moved, _, _, _ = load_solver(tmp_path / "glow")
    for (name, a), b in zip(moved.state_dict().items(), glow.state_dict().values()):
        assert torch.equal(a, b), name


def test_additive_coupling_inverts_exactly_and_matches_a_brute_force_log_det():
    from learn2invert.nn.flows import Glow

    torch.manual_seed(0)
    flow = Glow(1, 4, levels=1, depth=2, hidden=4, coupling="additive").double()
    for p in flow.parameters():  # move off the zero-initialised start so the couplings act
        torch.nn.init.normal_(p, std=0.3) if p.dim() > 1 else None
    x = torch.rand(1, 1, 4, 4, dtype=torch.float64)
    z, logdet = flow.encode(x)
    assert torch.allclose(flow.decode(z), x, atol=1e-10)
    jac = torch.autograd.functional.jacobian(lambda v: flow.encode(v.reshape(1, 1, 4, 4))[0].flatten(), x.flatten())
    assert torch.allclose(logdet, torch.linalg.slogdet(jac)[1], atol=1e-8)
    # Latents of a noisy image, shrunk, decode to finite images (the affine prior overflowed here).
    noisy = x + 0.5 * torch.randn_like(x)
    assert torch.isfinite(flow.decode(flow.encode(noisy)[0] / 1.05)).all()
    grads = {}
    for memory in ("autograd", "invertible"):
        flow.memory = memory
        flow.zero_grad()
        flow.log_prob(x).sum().backward()
        grads[memory] = torch.cat([p.grad.flatten() for p in flow.parameters()])
    assert torch.allclose(grads["invertible"], grads["autograd"], rtol=1e-8, atol=1e-12)


def test_unrolled_glow_save_load_gives_identical_reconstructions(tmp_path):
    from learn2invert.checkpoint import load_model, save_model

    torch.manual_seed(0)
    x = torch.rand(2, 1, 8, 8)
    y = x + 0.2 * torch.randn_like(x)
    solver = unrolled_solver(1, prox="glow", folds=2, init="prox", prox_params={**TINY_FLOW, "coupling": "additive"})
    solver(y, Denoising())  # data-dependent ActNorm initialisation happens here, once
    save_model(solver, tmp_path)
    again = unrolled_solver(1, prox="glow", folds=2, init="prox", prox_params={**TINY_FLOW, "coupling": "additive"})
    load_model(again, tmp_path)
    with torch.no_grad():
        again(2 * y, Denoising())  # a first call on other data: loaded ActNorms must not re-initialise
        assert torch.equal(solver(y, Denoising())[-1], again(y, Denoising())[-1])
