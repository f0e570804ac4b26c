"""The i-RIM solver: iterates, invertible training equal to autograd, memory, errors, and its benchmark."""
import copy
import json
from pathlib import Path
import warnings

import pytest
import torch

from learn2invert import operators
from learn2invert.bench import memory as memory_bench
from learn2invert.solvers.irim import IRIM


def _mri_problem(shape, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    b, n = shape[0], shape[-1]
    mask = operators.masks.random_mask((n,), 4.0, 0.25, seed=seed).to(dtype)
    mask = mask.reshape(1, 1, *([1] * (len(shape) - 3)), n).expand(b, 1, *shape[2:]).contiguous()
    op = operators.SingleCoilMRI(mask).to(dtype=dtype)
    x = torch.randn(shape, dtype=dtype)
    return op.A(x), op, x


def _tiny(dims=2, **kw):
    args = dict(channels=2, dims=dims, steps=2, state_channels=6, hidden_channels=6, downsampling=(1, 2),
                identity_init=False)
    return IRIM(**{**args, **kw})


def _loss_and_grads(model, y, op, x):
    model.zero_grad(set_to_none=True)
    est = model(y, op, sigma=0.05)[-1]
    loss = torch.mean((est - x) ** 2)
    loss.backward()
    return est.detach(), [p.grad.clone() for p in model.parameters()]


@pytest.mark.parametrize("dims,shape", [(2, (2, 2, 8, 8)), (3, (1, 2, 3, 8, 8))])
def test_invertible_training_gives_autograd_outputs_and_gradients(dims, shape):
    y, op, x = _mri_problem(shape)
    model = _tiny(dims).double()
    model.memory = "autograd"
    est_a, grads_a = _loss_and_grads(model, y, op, x)
    model.memory = "invertible"
    est_i, grads_i = _loss_and_grads(model, y, op, x)
    torch.testing.assert_close(est_i, est_a, rtol=0, atol=1e-12)
    for ga, gi in zip(grads_a, grads_i):
        assert float((ga - gi).norm() / ga.norm().clamp_min(1e-30)) < 1e-5
    assert all(g.abs().sum() > 0 for g in grads_i)  # every parameter, phi included, is trained


def test_iterates_returned_per_mode():
    y, op, _ = _mri_problem((1, 2, 8, 8), torch.float32)
    model = _tiny(steps=3)
    with torch.no_grad():
        iterates = model(y, op, sigma=0.05)
    assert len(iterates) == 3 and all(it.shape == (1, 2, 8, 8) for it in iterates)
    assert len(model(y, op, sigma=0.05)) == 1  # invertible training keeps only the last estimate
    model.memory = "autograd"
    assert len(model(y, op, sigma=0.05)) == 3
    with torch.no_grad():
        assert len(model(y, op, sigma=0.05, steps=2)) == 2


def test_saved_bytes_do_not_grow_with_steps():
    y, op, x = _mri_problem((1, 2, 16, 16), torch.float32)

    def saved(steps, mode):
        model = _tiny(steps=steps, memory=mode)
        return memory_bench.saved_tensor_bytes(lambda: torch.mean((model(y, op, sigma=0.05)[-1] - x) ** 2),
                                               model.parameters())

    assert saved(1, "invertible") == saved(6, "invertible")
    assert saved(6, "autograd") > 4 * saved(1, "autograd")


def test_bad_input_raises_clear_errors():
    y, op, _ = _mri_problem((1, 2, 9, 9), torch.float32)
    with pytest.raises(ValueError, match="divisible"):
        _tiny()(y, op)
    y, op, _ = _mri_problem((1, 2, 8, 8), torch.float32)
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 2\]"):
        _tiny()(y, op, steps=3)
    with pytest.raises(ValueError, match="state_channels"):
        IRIM(channels=2, state_channels=3)
    with pytest.raises(ValueError, match="memory"):
        IRIM(memory="checkpoint")
    with pytest.raises(ValueError, match="channels=1"):
        _tiny(channels=1, state_channels=4)(y, op)
    with pytest.raises(ValueError, match="sigma"):
        _tiny()(y, op, sigma=0.0)


def test_a_few_adam_steps_reduce_the_loss():
    y, op, x = _mri_problem((2, 2, 16, 16), torch.float32, seed=3)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # smooth targets: there is something to learn
    y = op.A(x)
    model = _tiny(steps=2, state_channels=8, hidden_channels=8)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(15):
        loss = torch.mean((model(y, op, sigma=0.05)[-1] - x) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_memory_bench_measures_one_record_in_a_subprocess():
    spec = {"model": "irim", "memory_mode": "invertible", "dims": 2, "steps": 1, "layers": 3, "image_size": 16,
            "batch": 1, "depth": 1, "state_channels": 8, "hidden_channels": 8, "threads": 1}
    (record,) = memory_bench.run_grid([spec], show_progress=False)
    assert set(record) == set(memory_bench.FIELDS)
    assert record["layers"] == 3 and record["image_size"] == [16, 16]
    # Only the final machine state (8 channels) and the loss's residual (2 channels), float32.
    assert record["saved_bytes"] == (8 + 2) * 16 * 16 * 4
    assert record["peak_bytes"] > 0 and record["step_seconds"] > 0
    json.dumps(record)


def test_fanned_pattern():
    assert memory_bench._fanned(5) == (1, 2, 4, 2, 1)
    assert len(memory_bench._fanned(50)) == 50 and max(memory_bench._fanned(50)) == 4


def test_identity_init_returns_the_initial_estimate_until_trained():
    y, op, _ = _mri_problem((1, 2, 8, 8), torch.float32)
    model = _tiny(init="adjoint", identity_init=True)
    with torch.no_grad():
        iterates = model(y, op, sigma=0.05)
    for it in iterates:
        torch.testing.assert_close(it, op.A_adjoint(y), rtol=0, atol=1e-6)
    loss = torch.mean((model(y, op, sigma=0.05)[-1]) ** 2)
    loss.backward()
    assert all(layer.block.up.parametrizations.weight.original0.grad.abs().sum() > 0 for layer in model.blocks[0])


def test_speed_bench_times_every_model_and_counts_its_flops(monkeypatch):
    from learn2invert.bench import speed

    tiny = {"steps": 1, "state_channels": 4, "hidden_channels": 4, "downsampling": [1]}
    small = {"irim": ({"name": "irim", "params": tiny}, 4),
             "irim (autograd)": ({"name": "irim", "params": {**tiny, "memory": "autograd"}}, 4)}
    monkeypatch.setattr(speed, "MODELS", small)
    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    result = speed.measure(size=8, batch=2, repeats=1, data_config=smoke)
    records = result["models"]
    assert [r["model"] for r in records] == list(small)
    assert all(r["train_steps_per_s"] > 0 and r["inference_ms_per_slice"] > 0 for r in records)
    assert all(r["achieved_gflops"] > 0 and r["share_of_limit"] > 0 for r in records)
    # The invertible engine recomputes each block's forward pass during backward: more FLOPs than autograd.
    assert records[0]["train_step_gflop"] > records[1]["train_step_gflop"]
    assert result["data"]["draw_seconds"] > 0 and result["data"]["simulate_seconds"] > 0
    table = speed.markdown_table(result)
    assert "| irim (autograd) |" in table and "share of limit" in table


@pytest.mark.parametrize("works", [True, False])
def test_speed_bench_times_a_compiled_twin_and_says_whether_compiling_worked(monkeypatch, works):
    from learn2invert.bench import speed

    def fake_compile(module, *args, **kwargs):  # stands in for inductor (minutes on a CPU)
        def call(*a, **k):
            if not works:
                raise RuntimeError("no C++ compiler found")
            return module(*a, **k)
        return call

    monkeypatch.setattr(torch, "compile", fake_compile)
    tiny = {"steps": 1, "state_channels": 4, "hidden_channels": 4, "downsampling": [1]}
    monkeypatch.setattr(speed, "MODELS", {"irim": ({"name": "irim", "params": tiny}, 4)})
    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # the fallback's warning
        result = speed.measure(size=8, batch=2, repeats=1, data_config=smoke, compile=True)
    eager, compiled = result["models"]
    assert eager["model"] == "irim" and "compiled" not in eager
    assert compiled["model"] == "irim (compiled)" and compiled["compiled"] is works
    assert compiled["train_step_gflop"] == eager["train_step_gflop"] and compiled["warmup_seconds"] > 0
    expected = "| irim (compiled; warm-up" if works else "| irim (fell back to eager; warm-up"
    assert expected in speed.markdown_table(result)


def test_speed_bench_times_a_channels_last_twin_that_computes_the_same(monkeypatch):
    from learn2invert.bench import speed

    tiny = {"architecture": "mri", "steps": 2, "conv_channels": 4, "hidden_channels": 4}
    monkeypatch.setattr(speed, "MODELS", {"rim": ({"name": "rim", "params": tiny}, 4)})
    smoke = Path(__file__).resolve().parents[1] / "configs" / "smoke.yaml"
    result = speed.measure(size=8, batch=2, repeats=1, data_config=smoke, channels_last=True)
    eager, twin = result["models"]
    assert twin["model"] == "rim (channels-last)" and twin["train_step_gflop"] == eager["train_step_gflop"]
    assert "| rim (channels-last) |" in speed.markdown_table(result)
    # the twin's layout reaches its convolutions, and it computes what the eager model does
    from learn2invert.train.experiment import build_solver

    torch.manual_seed(0)
    model = build_solver({"solver": speed.MODELS["rim"][0]}, (2, 8, 8))
    last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in last.parameters())
    y, op, _ = speed._problem(2, 8)
    torch.testing.assert_close(last(y, op, sigma=0.01)[-1], model(y, op, sigma=0.01)[-1], rtol=1e-5, atol=1e-6)


def test_flop_count_of_a_convolution_matches_the_formula():
    from learn2invert.bench.flops import count_flops

    conv = torch.nn.Conv2d(3, 5, 3, padding=1)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    forward = 2 * 2 * 8 * 8 * 3 * 5 * 9
    assert count_flops(lambda: conv(x)).total == forward
    assert count_flops(lambda: conv(x).sum().backward()).total == 3 * forward  # + grad input + grad weight


def test_bf16_autocast_invertible_gradients_follow_autograd():
    """The engine re-runs layers in backward under the forward's autocast state (bf16 on CPU)."""
    y, op, x = _mri_problem((2, 2, 16, 16), dtype=torch.float32)
    model = _tiny()
    grads = {}
    for memory in ("autograd", "invertible"):
        model.memory = memory
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = torch.mean((model(y, op, sigma=0.05)[-1] - x) ** 2)
        loss.backward()  # outside autocast, as the AMP recipe does
        grads[memory] = [p.grad.clone() for p in model.parameters()]
    errors = [float((ga - gi).norm() / ga.norm().clamp_min(1e-30)) for ga, gi in zip(grads["autograd"], grads["invertible"])]
    # bf16 keeps 8 mantissa bits: the two modes round differently but compute the same thing
    # (measured median 0.004; re-running the layers in float32 in backward gave 0.013).
    assert sorted(errors)[len(errors) // 2] < 0.008, errors
    assert max(errors) < 0.12, errors
